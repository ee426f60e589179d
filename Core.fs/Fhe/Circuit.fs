namespace FheNet.Fhe

open System
open FheNet
open FheNet.Integer
open FheNet.Quantization
open FheNet.Tfhe

/// How the low bits of an accumulator are dropped before its table lookup.
[<RequireQualifiedAccess>]
type RoundingMethod =
    /// Exact, two bootstraps per group of up to P + 1 dropped bits (P the table's bits): a sign bootstrap clears the
    /// group's top bit, a (c−1)-bit lookup the rest. The table sees exactly round_half_up(acc / 2^t), bit for bit what
    /// the integer model computes. The default.
    | Exact
    /// Exact, one sign bootstrap per dropped bit (Concrete's method).
    | ExactPerBit
    /// No extra bootstrap: the table reads the top bits of the accumulator directly, which is off by one with a small
    /// probability when the accumulator lies within its noise of a rounding threshold.
    | Approximate

/// The choices of `Compiler.compile`. At most one of PError and GlobalPError may be set.
type CompileOptions =
    { /// Failure probability of each table lookup (default 2^-40).
      PError: float option
      /// Failure probability of a whole inference, spread evenly over its bootstraps.
      GlobalPError: float option
      /// Round every hidden accumulator to at most this many bits before its lookup (any activation); None keeps
      /// the integer model's own rounding (exact requantization shifts for power-of-two ReLU networks).
      RoundingThresholdBits: int option
      Rounding: RoundingMethod
      /// Each neuron's accumulator range is the calibration range widened by this fraction of its width on both
      /// sides (never beyond what any input can produce): rows a little outside the calibration set must not
      /// overflow. 0 keeps the calibration range; infinity the worst case over all inputs.
      RangeMargin: float }

    /// 2^-40 per lookup, the model's own rounding, exact, a margin of a quarter of each range.
    static member Default =
        { PError = None
          GlobalPError = None
          RoundingThresholdBits = None
          Rounding = RoundingMethod.Exact
          RangeMargin = 0.25 }

/// The encrypted program of one layer. The accumulator acc of neuron j travels as y = acc + Offsets[j], a value in
/// [0, 2^AccumulatorBits) encoded at Δ = 2^(63 − AccumulatorBits) (one padding bit). Each offset is a multiple of
/// 2^Shift, so round_half_up(y / 2^Shift) = round_half_up(acc / 2^Shift) + Offsets[j] / 2^Shift exactly; offsets per
/// neuron keep B as small as the widest single neuron's range needs.
type LayerCircuit =
    { Layer: int
      Neurons: int
      Offsets: int64[]
      /// B: the bits of y, the rounding carry included.
      AccumulatorBits: int
      /// t: bits dropped before the lookup.
      Shift: int
      /// P = B − t: the bits the table reads (0 for the last layer, which has no table).
      LookupBits: int
      /// The largest 2-norm of a neuron's integer weights: the noise growth of the linear combination.
      Nu: float
      /// Per neuron, entry k (k in [0, 2^P)) is the next layer's input code for the rounded y = k; empty for the
      /// last layer.
      Tables: int64[][]
      /// Accumulator range seen on the calibration set.
      CalibrationMin: int64
      CalibrationMax: int64 }

    /// False for the last layer, whose accumulators the client decrypts.
    member l.HasTables = l.Tables.Length > 0

    /// The groups (lowest bit, size) in which exact rounding clears the t dropped bits, lowest first.
    member l.RoundingGroups(rounding: RoundingMethod) =
        let size =
            match rounding with
            | RoundingMethod.Exact -> max 1 (min l.Shift (l.LookupBits + 1))
            | RoundingMethod.ExactPerBit
            | RoundingMethod.Approximate -> 1
        [ for low in 0 .. size .. l.Shift - 1 -> low, min size (l.Shift - low) ]

    /// Bootstraps per sample: per neuron, those of exact rounding (one per group of one bit, two per larger group)
    /// and the table.
    member l.BootstrapsFor(rounding: RoundingMethod) =
        if not l.HasTables then 0
        else
            match rounding with
            | RoundingMethod.Approximate -> l.Neurons
            | RoundingMethod.Exact
            | RoundingMethod.ExactPerBit ->
                let rounding = l.RoundingGroups rounding |> List.sumBy (fun (_, size) -> if size = 1 then 1 else 2)
                l.Neurons * (rounding + 1)

/// A network compiled for FHE: the integer model it computes (any rounding threshold applied), the program of each
/// layer, and one TFHE parameter set for the whole circuit.
type Circuit =
    { Model: IntegerModel
      Layers: LayerCircuit[]
      Parameters: TfheParameters
      Rounding: RoundingMethod
      /// log2 of the failure probability each lookup was sized for.
      Log2PError: float }

    /// Programmable bootstraps per inferred sample.
    member c.BootstrapsPerSample = c.Layers |> Array.sumBy (fun l -> l.BootstrapsFor c.Rounding)

    /// Bits of y in the first layer: the encoding of the client's input codes.
    member c.InputAccumulatorBits = c.Layers[0].AccumulatorBits

/// A layer's accumulators or lookups are too wide for any parameter set of the search domain.
type CircuitTooWideException(layer: int, accumulatorBits: int, lookupBits: int, reason: string) =
    inherit
        InvalidOperationException(
            $"Layer %d{layer} cannot be compiled: its accumulators need %d{accumulatorBits} bits and its table lookup "
            + $"%d{lookupBits} bits (%s{reason}). Fixes: bound the accumulators with n_accum_bits (pruning), round "
            + "before the lookup with rounding_threshold_bits, or train with fewer weight/activation bits."
        )

    member _.Layer = layer
    member _.AccumulatorBits = accumulatorBits
    member _.LookupBits = lookupBits

/// Turns a fitted integer model and calibration rows into a Circuit.
module Compiler =

    /// log2 of the default failure probability of one lookup.
    [<Literal>]
    let DefaultLog2PError = -40.0

    /// The widest accumulator a ciphertext can carry: y and the sign lookup's output at Δ/2 must fit 16 bits.
    [<Literal>]
    let MaxAccumulatorBits = 15

    /// Fewer calibration rows than this rarely bound the accumulators of unseen inputs.
    [<Literal>]
    let MinCalibrationRows = 8

    let private checkProbability (name: string) (p: float) =
        if not (p > 0.0 && p < 1.0) then
            raise (ParameterOutOfRangeException(name, p, "a probability in (0, 1)"))

    /// The model with every hidden accumulator rounded to at most `bits` bits before its lookup, the lookup reading
    /// the rounded value at the matching step. Bits come from the calibration ranges.
    let private withRoundingThreshold (bits: int) (model: IntegerModel) (ranges: (int64 * int64)[]) =
        Guard.inRange "roundingThresholdBits" 1 MaxAccumulatorBits bits
        { model with
            Layers =
                model.Layers
                |> Array.mapi (fun l layer ->
                    match layer.Lookup with
                    | None -> layer
                    | Some lookup ->
                        let lo, hi = ranges[l]
                        let needed = IntegerModel.bitsFor lo hi - bits
                        if needed <= layer.Shift then
                            layer
                        else
                            { layer with
                                Shift = needed
                                Lookup = Some { lookup with Step = layer.AccumulatorScale * MathF.ScaleB(1.0f, needed) } }) }

    /// Per layer, per neuron: the accumulator range on the calibration rows, widened by `margin` of its width on
    /// both sides within the worst case over every input code.
    let private calibrationRanges (margin: float) (model: IntegerModel) (calibration: float32[][]) =
        let traces = calibration |> Array.map (fun row -> IntegerModel.trace model (IntegerModel.quantizeRow model row))
        Array.init model.Layers.Length (fun l ->
            let layer = model.Layers[l]
            Array.init layer.Weights.Length (fun j ->
                let values = traces |> Array.map (fun t -> t[l][j])
                let lo, hi = Array.min values, Array.max values
                let struct (worstLo, worstHi) =
                    Pruning.accumulatorRange (ReadOnlySpan layer.Weights[j]) layer.Biases[j] layer.InputCodes
                let widening = Math.Ceiling(margin * float (hi - lo))
                let extra = if widening >= 9e18 then Int64.MaxValue / 4L else int64 widening
                max worstLo (lo - extra), min worstHi (hi + extra)))

    let private layerCircuit (model: IntegerModel) (l: int) (ranges: (int64 * int64)[]) =
        let layer = model.Layers[l]
        let t = layer.Shift
        let half = if t > 0 then 1L <<< (t - 1) else 0L
        // Per neuron, the smallest multiple of 2^t that makes its calibration accumulators non-negative.
        let offsets = ranges |> Array.map (fun (lo, _) -> -(lo >>> t <<< t))
        let bits =
            Array.map2 (fun (_, hi) offset -> IntegerModel.bitsFor 0L (hi + offset + half)) ranges offsets
            |> Array.fold max (t + 1)
        let nu =
            layer.Weights
            |> Array.map (fun w -> sqrt (w |> Array.sumBy (fun v -> float v * float v)))
            |> Array.max
            |> max 1.0
        let tables, lookupBits =
            match layer.Lookup with
            | None -> [||], 0
            | Some lookup ->
                let p = bits - t
                let table (offset: int64) =
                    Array.init (1 <<< p) (fun k -> int64 (Lookup.apply lookup (int64 k - (offset >>> t))))
                offsets |> Array.map table, p
        { Layer = l
          Neurons = layer.Weights.Length
          Offsets = offsets
          AccumulatorBits = bits
          Shift = t
          LookupBits = lookupBits
          Nu = nu
          Tables = tables
          CalibrationMin = ranges |> Array.map fst |> Array.min
          CalibrationMax = ranges |> Array.map snd |> Array.max }

    /// The noise requirements of one layer's operations on the circuit's parameter set.
    let requirements (rounding: RoundingMethod) (layer: LayerCircuit) : LookupRequirement list =
        let nu2 = layer.Nu * layer.Nu
        let b = layer.AccumulatorBits
        if not layer.HasTables then
            [ { PbsVarianceFactor = nu2; PlaintextModulus = 1 <<< b; ThroughBlindRotation = false } ]
        else
            match rounding with
            | RoundingMethod.Exact
            | RoundingMethod.ExactPerBit when layer.Shift > 0 ->
                // A group of c bits from bit i is read with its top bit on the padding bit: the accumulator noise
                // grows by 2^(B−i−c+1), and the group decodes on c−1 bits; each earlier subtraction added a bootstrap
                // output.
                let groups = layer.RoundingGroups rounding
                let reads =
                    groups
                    |> List.mapi (fun g (low, size) ->
                        { PbsVarianceFactor = Math.Pow(2.0, 2.0 * float (b - low - size + 1)) * (nu2 + 2.0 * float g)
                          PlaintextModulus = 1 <<< (size - 1)
                          ThroughBlindRotation = true })
                let subtracted = groups |> List.sumBy (fun (_, size) -> if size = 1 then 1 else 2)
                reads
                @ [ { PbsVarianceFactor = nu2 + float subtracted
                      PlaintextModulus = 1 <<< layer.LookupBits
                      ThroughBlindRotation = true } ]
            | _ ->
                [ { PbsVarianceFactor = nu2
                    PlaintextModulus = 1 <<< layer.LookupBits
                    ThroughBlindRotation = true } ]

    let private perLookupLog2PError (options: CompileOptions) (bootstraps: int) =
        match options.PError, options.GlobalPError with
        | Some _, Some _ ->
            raise (ArgumentException("Set p_error or global_p_error, not both: one bounds each lookup, the other the whole inference.", "options"))
        | Some p, None ->
            checkProbability "pError" p
            Math.Log2 p
        | None, Some g ->
            checkProbability "globalPError" g
            // Each of the count bootstraps fails with p such that 1 − (1 − p)^count = g; for tiny g, p = g / count
            // (the power form would cancel to 0 in double precision).
            let count = float (max 1 bootstraps)
            if g < 1e-9 then Math.Log2(g / count) else Math.Log2(1.0 - Math.Pow(1.0 - g, 1.0 / count))
        | None, None -> DefaultLog2PError

    /// Compiles an integer model: bounds every accumulator on the calibration rows, plans the rounding and the
    /// tables, and picks the cheapest secure parameter set on which every lookup meets the failure probability.
    let compile (options: CompileOptions) (model: IntegerModel) (calibration: float32[][]) : Circuit =
        if not (options.RangeMargin >= 0.0) then
            raise (ParameterOutOfRangeException("RangeMargin", options.RangeMargin, "a fraction >= 0 (infinity: the worst case)"))
        if calibration.Length < MinCalibrationRows then
            raise (
                InvalidShapeException(
                    "calibration",
                    $"has %d{calibration.Length} rows; pass at least %d{MinCalibrationRows} representative rows (e.g. the training set) to bound the accumulators"
                )
            )
        let features = model.Layers[0].Weights[0].Length
        calibration
        |> Array.iteri (fun i row ->
            if row.Length <> features then
                raise (InvalidShapeException($"calibration[%d{i}]", $"has %d{row.Length} features; the model takes %d{features}"))
            Guard.allFinite $"calibration[%d{i}]" (ReadOnlySpan row))
        let model =
            match options.RoundingThresholdBits with
            | Some bits ->
                let layerRanges =
                    calibrationRanges options.RangeMargin model calibration
                    |> Array.map (fun r -> Array.map fst r |> Array.min, Array.map snd r |> Array.max)
                withRoundingThreshold bits model layerRanges
            | None -> model
        let ranges = calibrationRanges options.RangeMargin model calibration
        let layers = Array.init model.Layers.Length (fun l -> layerCircuit model l ranges[l])
        for layer in layers do
            if layer.AccumulatorBits > MaxAccumulatorBits then
                raise (
                    CircuitTooWideException(
                        layer.Layer,
                        layer.AccumulatorBits,
                        layer.LookupBits,
                        $"ciphertexts carry at most %d{MaxAccumulatorBits} bits"
                    )
                )
        let bootstraps = layers |> Array.sumBy (fun l -> l.BootstrapsFor options.Rounding)
        let log2PError = perLookupLog2PError options bootstraps
        let all = layers |> Array.toList |> List.collect (requirements options.Rounding)
        let parameters =
            try
                Optimizer.optimizeCircuit NoiseFamily.TUniform all log2PError
            with :? InfeasibleParametersException as e ->
                // Name the first layer that no parameter set can serve on its own.
                let culprit =
                    layers
                    |> Array.tryFind (fun l ->
                        try
                            Optimizer.optimizeCircuit NoiseFamily.TUniform (requirements options.Rounding l) log2PError |> ignore
                            false
                        with :? InfeasibleParametersException ->
                            true)
                    |> Option.defaultValue (Array.last layers)
                raise (CircuitTooWideException(culprit.Layer, culprit.AccumulatorBits, culprit.LookupBits, e.Message))
        { Model = model
          Layers = layers
          Parameters = parameters
          Rounding = options.Rounding
          Log2PError = log2PError }
