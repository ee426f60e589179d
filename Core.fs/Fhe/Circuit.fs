namespace FheNet.Fhe

open System
open FheNet
open FheNet.Integer
open FheNet.Quantization
open FheNet.Tfhe

/// How the low bits of an accumulator are dropped before its table lookup.
[<RequireQualifiedAccess>]
type RoundingMethod =
    /// Exact, two bootstraps per group of dropped bits: a sign bootstrap clears the group's top bit, a (c−1)-bit
    /// lookup the rest. The table sees exactly round_half_up(acc / 2^t), bit for bit what the integer model computes.
    /// A wide table that is constant outside one aligned window of 2^W entries (a clamped activation) is then read in
    /// two narrow steps rather than one wide lookup (see TableWindow), the top group then read by its sign alone
    /// (LayerCircuit.SignOnlyTopGroup). The default.
    | Exact
    /// Exact, one sign bootstrap per dropped bit (Concrete's method).
    | ExactPerBit
    /// No extra bootstrap: the table reads the top bits of the accumulator directly, which is off by one with a small
    /// probability when the accumulator lies within its noise of a rounding threshold.
    | Approximate

/// Which rounding threshold the compiler applies before each table lookup.
[<RequireQualifiedAccess>]
type RoundingThreshold =
    /// Chosen by the compiler for every hidden layer without the model's own (power-of-two) rounding: the widest
    /// lookup of at most Compiler.MaxAutomaticLookupBits bits whose keys fit the memory budget, at a cost per sample
    /// within Compiler.AutomaticCostTolerance of the cheapest such threshold. The default.
    | Automatic
    /// Every hidden accumulator rounded to at most this many bits before its lookup (any activation).
    | Bits of int
    /// Only the model's own rounding (exact requantization shifts for power-of-two ReLU networks): lookups read
    /// whole accumulators, which can need very large keys.
    | Off

module RoundingThreshold =

    /// The threshold of a `rounding_threshold_bits` argument: none given is Automatic, 0 is Off (no rounding), a
    /// positive count is that many bits.
    let ofBits (bits: int option) =
        match bits with
        | None -> RoundingThreshold.Automatic
        | Some 0 -> RoundingThreshold.Off
        | Some b -> RoundingThreshold.Bits b

/// The choices of `Compiler.compile`. At most one of PError and GlobalPError may be set.
type CompileOptions =
    { /// Failure probability of each table lookup (default 2^-40).
      PError: float option
      /// Failure probability of a whole inference, spread evenly over its bootstraps.
      GlobalPError: float option
      /// Rounding before each lookup: automatic (the default), a number of bits, or off.
      RoundingThreshold: RoundingThreshold
      Rounding: RoundingMethod
      /// Each neuron's accumulator range is the calibration range widened by this fraction of its width on both
      /// sides (never beyond what any input can produce): rows a little outside the calibration set must not
      /// overflow. 0 keeps the calibration range; infinity the worst case over all inputs.
      RangeMargin: float
      /// The memory the circuit's keys may take (key generation and preparation in one process); None: the
      /// process default (MemoryBudget.defaultBytes). The compiler refuses a circuit over it (FheResourceException).
      MemoryBudgetBytes: int64 option }

    /// 2^-40 per lookup, an automatic rounding threshold, exact, a margin of a quarter of each range, the default
    /// memory budget.
    static member Default =
        { PError = None
          GlobalPError = None
          RoundingThreshold = RoundingThreshold.Automatic
          Rounding = RoundingMethod.Exact
          RangeMargin = 0.25
          MemoryBudgetBytes = None }

/// What a bootstrap with a table returns: the entry of its index for an index in [0, size), the negated entry in
/// [size, 2·size) (the padding bit set), periodic beyond.
module Negacyclic =

    /// The bootstrap's output for a table and an index, without noise.
    let entry (table: int64[]) (index: int64) =
        let size = int64 table.Length
        let wrapped = ((index % (2L * size)) + 2L * size) % (2L * size)
        if wrapped < size then table[int wrapped] else -table[int (wrapped - size)]

/// A table of 2^P entries that is constant before and after one aligned block of 2^Bits entries: entry k is Below
/// for k < Block·2^Bits and Above for k ≥ (Block + 1)·2^Bits. Exact rounding leaves the table's index v exact, so
/// v = h·2^Bits + l can be read in two narrow steps: a (P − Bits)-bit lookup of h gives its class (before, in or
/// after the block), and one (Bits + 1)-bit lookup of l plus the class gives the entry. A clamped activation
/// (ReLU, sigmoid…) varies over few of the entries a wide accumulator can take, so both steps read far fewer bits
/// than P, and a much smaller parameter set serves them.
[<Struct>]
type TableWindow =
    { Bits: int
      Block: int
      Below: int64
      Above: int64 }

module TableWindow =

    /// The first entry that differs from the first, and the last that differs from the last (-1 when none).
    let private varyingRange (table: int64[]) =
        let first = Array.tryFindIndex ((<>) table[0]) table |> Option.defaultValue table.Length
        let last = Array.tryFindIndexBack ((<>) table[table.Length - 1]) table |> Option.defaultValue -1
        first, last

    /// The fewest bits (at least 1) of an aligned block outside which the table is constant.
    let bitsOf (table: int64[]) =
        let first, last = varyingRange table
        let mutable bits = 1
        // Blocks are aligned: the entries from `first` to `last` must share one.
        while first <= last && (first >>> bits) <> (last >>> bits) do
            bits <- bits + 1
        bits

    /// The window of `bits` bits of a table (bits at least bitsOf table).
    let ofTable (bits: int) (table: int64[]) =
        if bits < bitsOf table then
            raise (ArgumentOutOfRangeException("bits", bits, $"the table varies over more than one aligned block of 2^%d{bits} entries"))
        let first, _ = varyingRange table
        { Bits = bits
          Block = (min first (table.Length - 1)) >>> bits
          Below = table[0]
          Above = table[table.Length - 1] }

    /// The narrowest window that some shift of the table's entries allows: its varying entries span 2^bits or fewer.
    let narrowestBits (table: int64[]) =
        let first, last = varyingRange table
        let span = max 1 (last - first + 1)
        if span = 1 then 1 else Numerics.BitOperations.Log2(uint32 (span - 1)) + 1

    /// The smallest shift d ≥ 0 of the entries (entry k moved to k + d) that brings the varying ones into one
    /// aligned block of 2^bits (bits at least narrowestBits table).
    let alignmentShift (bits: int) (table: int64[]) =
        let first, last = varyingRange table
        if first > last || (first >>> bits) = (last >>> bits) then 0
        else (1 <<< bits) - (first &&& ((1 <<< bits) - 1))

    /// The class lookup's entries over h in [0, 2^classBits), in units of the final lookup's index: 0 for the
    /// window's block, 2^Bits before it and 3·2^Bits after it (an index in the negated half of the final lookup).
    let classEntries (classBits: int) (window: TableWindow) =
        Array.init (1 <<< classBits) (fun h ->
            if h < window.Block then 1L <<< window.Bits
            elif h = window.Block then 0L
            else 3L <<< window.Bits)

    /// The final lookup's 2^(Bits+1) entries, in half steps of the output: 2·entry − (Below + Above) for l in the
    /// block, and Below − Above past it, which the negacyclic wrap turns into Above − Below after the block.
    let finalEntries (window: TableWindow) (table: int64[]) =
        let size = 1 <<< window.Bits
        let centre = window.Below + window.Above
        Array.init (2 * size) (fun z ->
            if z < size then 2L * table[(window.Block <<< window.Bits) + z] - centre
            else window.Below - window.Above)

    /// The constant added to the final lookup's output (in half steps): Below + Above.
    let finalOffset (window: TableWindow) = window.Below + window.Above

    /// Entry v of a table read in two steps, in the clear: the class lookup of v's high bits, the final lookup of its
    /// low bits plus the class, and the offset, halved. Equals table[v] for every v (the property tests check it).
    let read (window: TableWindow) (table: int64[]) (v: int) =
        let classBits = Numerics.BitOperations.Log2(uint32 table.Length) - window.Bits
        let z = int64 (v &&& ((1 <<< window.Bits) - 1)) + (classEntries classBits window)[v >>> window.Bits]
        (Negacyclic.entry (finalEntries window table) z + finalOffset window) / 2L

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
      /// W > 0: exact rounding is followed by a two-step read of every table through its window of W bits
      /// (TableWindow); 0: one lookup reads all P bits.
      WindowBits: int
      /// Accumulator range seen on the calibration set.
      CalibrationMin: int64
      CalibrationMax: int64 }

    /// False for the last layer, whose accumulators the client decrypts.
    member l.HasTables = l.Tables.Length > 0

    /// Each neuron's window, for a two-step read (empty otherwise).
    member l.Windows =
        if l.WindowBits > 0 then l.Tables |> Array.map (TableWindow.ofTable l.WindowBits) else [||]

    /// The groups (lowest bit, size) in which exact rounding clears the t dropped bits, lowest first. A group's
    /// remaining bits are read by a (size−1)-bit lookup, no wider than the layer's widest other lookup.
    member l.RoundingGroups(rounding: RoundingMethod) =
        let w = l.WindowBits
        let size =
            match rounding with
            | RoundingMethod.Exact when w > 0 -> max 1 (min l.Shift (max (w + 1) (l.LookupBits - w) + 1))
            | RoundingMethod.Exact -> max 1 (min l.Shift (l.LookupBits + 1))
            | RoundingMethod.ExactPerBit
            | RoundingMethod.Approximate -> 1
        [ for low in 0 .. size .. l.Shift - 1 -> low, min size (l.Shift - low) ]

    /// The group (lowest bit, size) of the rounded value's W low bits that a two-step read clears next.
    member l.WindowGroup = if l.WindowBits > 0 then Some(l.Shift, l.WindowBits) else None

    /// Bootstraps that clear one group (lowest bit, size): its sign, and a lookup of its other bits if it has any.
    static member GroupBootstraps(group: int * int) = if snd group = 1 then 1 else 2

    /// With exact rounding before a two-step read, the top rounding group of several bits is read by its sign
    /// bootstrap alone: the bits below its top bit stay in the value, centred on zero, within a quarter of a table
    /// entry, which the window's reads absorb (each at one bit more precision). One bootstrap fewer per neuron, taken
    /// when the class lookup's extra bit keeps it no wider than the final lookup (P − W + 1 ≤ W + 1), so that no
    /// read of the layer gets wider.
    member l.SignOnlyTopGroup(rounding: RoundingMethod) =
        rounding = RoundingMethod.Exact
        && l.WindowBits > 0
        && l.LookupBits - l.WindowBits <= l.WindowBits
        && (match List.tryLast (l.RoundingGroups rounding) with
            | Some(_, size) -> size > 1
            | None -> false)

    /// Bootstraps per neuron of the exact rounding: two per group of several bits, one per one-bit group, one for a
    /// sign-only top group.
    member l.RoundingBootstraps(rounding: RoundingMethod) =
        let all = l.RoundingGroups rounding |> List.sumBy LayerCircuit.GroupBootstraps
        if l.SignOnlyTopGroup rounding then all - 1 else all

    /// The noise of a two-step read's final lookup, in bootstrap outputs: the window group's outputs scaled by
    /// 2^(P−W−1), plus the class lookup's.
    member l.FinalReadFactor =
        float (LayerCircuit.GroupBootstraps(l.Shift, l.WindowBits)) * Math.Pow(4.0, float (l.LookupBits - l.WindowBits - 1)) + 1.0

    /// The groups exact rounding clears, then the window's group of a two-step read (none for approximate rounding
    /// or the last layer).
    member l.ClearedGroups(rounding: RoundingMethod) =
        match rounding with
        | RoundingMethod.Exact
        | RoundingMethod.ExactPerBit when l.HasTables -> l.RoundingGroups rounding @ Option.toList l.WindowGroup
        | _ -> []

    /// Lookup tables a server prepares for the layer: each neuron's (two for a two-step read) and, per cleared
    /// group, its sign table and (but for one bit or a sign-only top group) the table of its other bits.
    member l.PreparedTables(rounding: RoundingMethod) =
        if not l.HasTables then 0
        else
            let signOnly = if l.SignOnlyTopGroup rounding then (l.RoundingGroups rounding).Length - 1 else -1
            let groups =
                l.ClearedGroups rounding
                |> List.mapi (fun i (_, size) -> if size = 1 || i = signOnly then 1 else 2)
                |> List.sum
            l.Neurons * (if l.WindowBits > 0 then 2 else 1) + groups

    /// Bootstraps per sample: per neuron, those of exact rounding (one per group of one bit, two per larger group)
    /// and the table (one, or for a two-step read: the window group's, the class and the final lookup).
    member l.BootstrapsFor(rounding: RoundingMethod) =
        if not l.HasTables then 0
        else
            match rounding with
            | RoundingMethod.Approximate -> l.Neurons
            | RoundingMethod.Exact
            | RoundingMethod.ExactPerBit ->
                let clearing = l.RoundingBootstraps rounding
                let table =
                    match l.WindowGroup with
                    | Some group -> LayerCircuit.GroupBootstraps group + 2
                    | None -> 1
                l.Neurons * (clearing + table)

/// The accuracy a rounding threshold costs: the rounded integer model against the unrounded one on the calibration
/// rows, in the model's real outputs (logits, or standardized targets).
type RoundingCost =
    { /// The threshold, in bits of each rounded lookup.
      ThresholdBits: int
      Rows: int
      /// Mean and largest absolute change of an output.
      MeanAbsoluteChange: float
      MaxAbsoluteChange: float
      /// Share of the rows whose largest output (a classifier's predicted class) is unchanged.
      ArgmaxAgreement: float }

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

    /// Memory of the circuit's keys and prepared tables with `threads` workers, estimated from its parameter set.
    member c.Memory(threads: int) =
        MemoryEstimate.create c.Parameters (c.Layers |> Array.sumBy (fun l -> l.PreparedTables c.Rounding)) threads

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

    /// The model with every hidden accumulator that `applies` to rounded to at most `bits` bits before its lookup,
    /// the lookup reading the rounded value at the matching step. Bits come from the calibration ranges.
    let private withRoundingThreshold (applies: IntegerLayer -> bool) (bits: int) (model: IntegerModel) (ranges: (int64 * int64)[]) =
        Guard.inRange "roundingThresholdBits" 1 MaxAccumulatorBits bits
        { model with
            Layers =
                model.Layers
                |> Array.mapi (fun l layer ->
                    match layer.Lookup with
                    | Some lookup when applies layer ->
                        let lo, hi = ranges[l]
                        // A lookup reads a neuron's range offset down to a multiple of 2^shift plus the rounding
                        // carry: the shift grows until even that worst case reads at most `bits` bits.
                        let read shift =
                            let alignment = (1L <<< shift) - 1L + (if shift > 0 then 1L <<< (shift - 1) else 0L)
                            IntegerModel.bitsFor 0L (hi - lo + alignment) - shift
                        let mutable needed = max 0 (IntegerModel.bitsFor lo hi - bits)
                        while needed < MaxAccumulatorBits && read needed > bits do
                            needed <- needed + 1
                        if needed <= layer.Shift then
                            layer
                        else
                            { layer with
                                Shift = needed
                                Lookup = Some { lookup with Step = layer.AccumulatorScale * MathF.ScaleB(1.0f, needed) } }
                    | _ -> layer) }

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

    /// A layer's program read by one lookup per neuron, and (when worth trying) the same read in two steps.
    let private layerCircuits (model: IntegerModel) (l: int) (ranges: (int64 * int64)[]) =
        let layer = model.Layers[l]
        let t = layer.Shift
        let half = if t > 0 then 1L <<< (t - 1) else 0L
        let build (offsets: int64[]) =
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
              WindowBits = 0
              CalibrationMin = ranges |> Array.map fst |> Array.min
              CalibrationMax = ranges |> Array.map snd |> Array.max }
        // Per neuron, the smallest multiple of 2^t that makes its calibration accumulators non-negative.
        let lowest = build (ranges |> Array.map (fun (lo, _) -> -(lo >>> t <<< t)))
        let twoStep =
            if not lowest.HasTables then None
            else
                // Shift each neuron's entries so that its varying ones share one aligned block of the narrowest width
                // the layer allows; a two-step read is worth it when it saves at least two bits on the table.
                let bits = lowest.Tables |> Array.map TableWindow.narrowestBits |> Array.max
                let aligned =
                    Array.map2 (fun offset table -> offset + (int64 (TableWindow.alignmentShift bits table) <<< t)) lowest.Offsets lowest.Tables
                    |> build
                let w = aligned.Tables |> Array.map TableWindow.bitsOf |> Array.max
                if w + 2 <= aligned.LookupBits && aligned.AccumulatorBits <= MaxAccumulatorBits then
                    Some { aligned with WindowBits = w }
                else
                    None
        lowest, twoStep

    /// The noise requirements of one layer's operations on the circuit's parameter set.
    let requirements (rounding: RoundingMethod) (layer: LayerCircuit) : LookupRequirement list =
        let nu2 = layer.Nu * layer.Nu
        let b = layer.AccumulatorBits
        let read factor bits =
            { PbsVarianceFactor = factor; PlaintextModulus = 1 <<< bits; ThroughBlindRotation = true }
        if not layer.HasTables then
            [ { PbsVarianceFactor = nu2; PlaintextModulus = 1 <<< b; ThroughBlindRotation = false } ]
        else
            let window = layer.WindowGroup
            match rounding with
            | RoundingMethod.Exact
            | RoundingMethod.ExactPerBit when layer.Shift > 0 || window.IsSome ->
                // A group of c bits from bit i is read with its top bit on the padding bit: the accumulator noise
                // grows by 2^(B−i−c+1), and the group decodes on c−1 bits; each earlier subtraction added a bootstrap
                // output. Behind a sign-only top group, the reads that absorb its left-over bits (within a quarter
                // entry) need one bit more: the window group's and the class lookup's.
                let extra = if layer.SignOnlyTopGroup rounding then 1 else 0
                let reads, _ =
                    layer.RoundingGroups rounding
                    |> List.mapFold
                        (fun subtracted (low, size) ->
                            read (Math.Pow(2.0, 2.0 * float (b - low - size + 1)) * (nu2 + float subtracted)) (size - 1),
                            subtracted + LayerCircuit.GroupBootstraps(low, size))
                        0
                let subtracted = layer.RoundingBootstraps rounding
                match window with
                | Some (low, w) ->
                    // The window group's read, then the class lookup of the P − W bits left and the final one of W + 1.
                    let windowRead = read (Math.Pow(2.0, 2.0 * float (b - low - w + 1)) * (nu2 + float subtracted)) (w - 1 + extra)
                    let subtracted = subtracted + LayerCircuit.GroupBootstraps(low, w)
                    reads
                    @ [ windowRead
                        read (nu2 + float subtracted) (layer.LookupBits - w + extra)
                        read layer.FinalReadFactor (w + 1) ]
                | None -> reads @ [ read (nu2 + float subtracted) layer.LookupBits ]
            | _ -> [ read nu2 layer.LookupBits ]

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

    /// The circuit of an integer model whose rounding is settled: bounds every accumulator on the calibration rows,
    /// plans the rounding and the tables (with exact rounding, each table read by one lookup or in two steps,
    /// whichever plan costs less per sample), and picks the cheapest secure parameter set on which every lookup
    /// meets the failure probability.
    let private build (options: CompileOptions) (model: IntegerModel) (calibration: float32[][]) : Circuit =
        let ranges = calibrationRanges options.RangeMargin model calibration
        let plans = Array.init model.Layers.Length (fun l -> layerCircuits model l ranges[l])
        let direct = plans |> Array.map fst
        for layer in direct do
            if layer.AccumulatorBits > MaxAccumulatorBits then
                raise (
                    CircuitTooWideException(
                        layer.Layer,
                        layer.AccumulatorBits,
                        layer.LookupBits,
                        $"ciphertexts carry at most %d{MaxAccumulatorBits} bits"
                    )
                )
        // With exact rounding, the tables are read in one lookup or (where worth it) in two steps; each plan gets its
        // cheapest parameter set, and the plan costing least per sample (Concrete's cost model) is kept.
        let candidates =
            [ direct
              if options.Rounding = RoundingMethod.Exact && plans |> Array.exists (snd >> Option.isSome) then
                  plans |> Array.map (fun (one, two) -> defaultArg two one) ]
        let solve (layers: LayerCircuit[]) =
            let bootstraps = layers |> Array.sumBy (fun l -> l.BootstrapsFor options.Rounding)
            let log2PError = perLookupLog2PError options bootstraps
            let all = layers |> Array.toList |> List.collect (requirements options.Rounding)
            try
                Ok(layers, Optimizer.optimizeCircuit NoiseFamily.TUniform all log2PError, log2PError, bootstraps)
            with :? InfeasibleParametersException as e ->
                Error(layers, log2PError, e)
        let solved = candidates |> List.map solve
        let layers, parameters, log2PError =
            match solved |> List.choose (function Ok plan -> Some plan | Error _ -> None) with
            | [] ->
                // Every plan failed; report the one-lookup plan's failure.
                let layers, log2PError, e = solved |> List.pick (function Error failure -> Some failure | Ok _ -> None)
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
            | feasible ->
                let layers, parameters, log2PError, _ =
                    feasible |> List.minBy (fun (_, p, _, bootstraps) -> Optimizer.cost p * float bootstraps)
                layers, parameters, log2PError
        { Model = model
          Layers = layers
          Parameters = parameters
          Rounding = options.Rounding
          Log2PError = log2PError }

    /// Widest lookup the automatic rounding threshold tries.
    [<Literal>]
    let MaxAutomaticLookupBits = 8

    /// Narrowest lookup the automatic rounding threshold tries.
    [<Literal>]
    let MinAutomaticLookupBits = 2

    /// The automatic threshold takes the widest lookup whose cost per sample is at most this many times the
    /// cheapest threshold's: past a few bits each bit of lookup doubles the table and soon the polynomial size,
    /// for an ever smaller gain in accuracy (the sigmoid regressor on diabetes: 3 bits cheapest, 5 bits at 1.4×,
    /// 6 bits at 1.9×, 7 bits at 10×).
    [<Literal>]
    let AutomaticCostTolerance = 1.5

    /// True for a hidden layer whose requantization is the model's own exact rounding: power-of-two scales with ReLU
    /// or Identity, where it is a shift (of no bits when the output scale is no coarser than the accumulator's).
    let private roundsItself (layer: IntegerLayer) =
        let powerOfTwo (v: float32) = v > 0.0f && MathF.ScaleB(1.0f, MathF.ILogB v) = v
        match layer.Lookup with
        | Some lookup ->
            (lookup.Activation = Autodiff.Activation.ReLU || lookup.Activation = Autodiff.Activation.Identity)
            && powerOfTwo lookup.Step
            && powerOfTwo lookup.OutputScale
        | None -> true

    /// Concrete's cost of one sample: bootstraps × the cost of one on the circuit's set.
    let costPerSample (circuit: Circuit) = Optimizer.cost circuit.Parameters * float circuit.BootstrapsPerSample

    /// The rounded model's outputs against the unrounded one's on the calibration rows.
    let private roundingCost (bits: int) (unrounded: IntegerModel) (rounded: IntegerModel) (calibration: float32[][]) =
        let threads = Environment.ProcessorCount
        let before = IntegerModel.predict threads unrounded calibration
        let after = IntegerModel.predict threads rounded calibration
        let changes = Array.map2 (Array.map2 (fun (a: float32) b -> abs (float a - float b))) before after |> Array.concat
        let argmax (v: float32[]) = Array.findIndex ((=) (Array.max v)) v
        { ThresholdBits = bits
          Rows = calibration.Length
          MeanAbsoluteChange = Array.average changes
          MaxAbsoluteChange = Array.max changes
          ArgmaxAgreement =
            (Array.map2 (fun a b -> if argmax a = argmax b then 1.0 else 0.0) before after |> Array.sum)
            / float calibration.Length }

    /// Compiles an integer model for FHE (see `build`), with the rounding threshold of the options: off, a number
    /// of bits for every hidden layer, or (automatic) for each hidden layer without the model's own rounding, the
    /// widest lookup of MinAutomaticLookupBits..MaxAutomaticLookupBits bits whose keys fit the memory budget, at a
    /// cost per sample within AutomaticCostTolerance of the cheapest that fits. A threshold that changes the model
    /// comes with its accuracy cost on the calibration rows (compile-time information: not part of the circuit, nor
    /// saved with it). FheResourceException when no automatic threshold fits the budget; an explicit setting
    /// compiles whatever its keys cost (key generation checks them).
    let compileWithCost (options: CompileOptions) (model: IntegerModel) (calibration: float32[][]) : Circuit * RoundingCost option =
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
        let layerRanges =
            lazy
                (calibrationRanges options.RangeMargin model calibration
                 |> Array.map (fun r -> Array.map fst r |> Array.min, Array.map snd r |> Array.max))
        let rounded applies bits = withRoundingThreshold applies bits model layerRanges.Value
        let withCost bits (circuit: Circuit) =
            if Array.forall2 (fun (a: IntegerLayer) (b: IntegerLayer) -> a.Shift = b.Shift) circuit.Model.Layers model.Layers then
                circuit, None
            else
                circuit, Some(roundingCost bits model circuit.Model calibration)
        match options.RoundingThreshold with
        | RoundingThreshold.Off -> build options model calibration, None
        | RoundingThreshold.Bits bits -> build options (rounded (fun _ -> true) bits) calibration |> withCost bits
        | RoundingThreshold.Automatic ->
            let budget = options.MemoryBudgetBytes |> Option.defaultWith MemoryBudget.defaultBytes
            let threads = Environment.ProcessorCount
            // Widest first; a threshold that leaves the model as a wider one did is compiled once.
            let attempts =
                [ MaxAutomaticLookupBits .. -1 .. MinAutomaticLookupBits ]
                |> List.map (fun bits -> bits, rounded (roundsItself >> not) bits)
                |> List.distinctBy (fun (_, m) -> m.Layers |> Array.map _.Shift)
                |> List.map (fun (bits, m) ->
                    try
                        Ok(bits, build options m calibration)
                    with :? CircuitTooWideException as e ->
                        Error e)
            let compiled = attempts |> List.choose (function Ok c -> Some c | Error _ -> None)
            match compiled |> List.filter (fun (_, c) -> (c.Memory threads).PeakBytes <= budget) with
            | [] ->
                match compiled with
                | [] -> raise (attempts |> List.pick (function Error e -> Some e | Ok _ -> None))
                | _ ->
                    let bits, smallest = compiled |> List.minBy (fun (_, c) -> (c.Memory threads).PeakBytes)
                    let memory = smallest.Memory threads
                    raise (
                        FheResourceException(
                            $"The automatic rounding threshold with the smallest keys (%d{bits} bits)",
                            memory.PeakBytes,
                            budget,
                            smallest.Parameters.Name,
                            MemoryEstimate.describe memory
                        )
                    )
            | fitting ->
                let cheapest = fitting |> List.map (snd >> costPerSample) |> List.min
                let bits, circuit = fitting |> List.find (fun (_, c) -> costPerSample c <= AutomaticCostTolerance * cheapest)
                withCost bits circuit

    /// `compileWithCost` without the accuracy cost of the rounding.
    let compile (options: CompileOptions) (model: IntegerModel) (calibration: float32[][]) : Circuit =
        fst (compileWithCost options model calibration)
