namespace FheNet.Integer

open System
open System.Threading.Tasks
open FheNet
open FheNet.Autodiff
open FheNet.Quantization
open FheNet.Nn

/// The requantization and activation of a hidden layer, as one function of its rounded accumulator r:
///     code(r) = clip(round_half_up(act(float32(r) · Step) / OutputScale), qmin, qmax)
/// evaluated in float32 with exactly the operations of the training forward pass. The same function serves every
/// neuron of the layer (the bias is inside the accumulator), so one table per layer describes it.
type Lookup =
    { Activation: Activation
      /// Value of one unit of r: s_in·s_w·2^Shift (float32, exact for power-of-two scales).
      Step: float32
      /// Scale of the next layer's input codes.
      OutputScale: float32
      /// Code range (and tie rule: half up) of the next layer's inputs.
      OutputCodes: CodeSpec }

module Lookup =

    /// The next layer's input code for a rounded accumulator (the closed form of the table).
    let apply (lookup: Lookup) (rounded: int64) : int =
        let y = Activation.value lookup.Activation (float32 rounded * lookup.Step)
        int (CodeSpec.code lookup.OutputCodes (y / lookup.OutputScale))

    /// The table over rounded accumulators lo..hi (entry i is apply (lo + i)): what an FHE lookup encodes.
    let table (lookup: Lookup) (lo: int64) (hi: int64) : int[] =
        if hi < lo || hi - lo > (1L <<< 24) then
            raise (ParameterOutOfRangeException("hi", hi, $"lo <= hi <= lo + 2^24 (lo = %d{lo})"))
        Array.init (int (hi - lo + 1L)) (fun i -> apply lookup (lo + int64 i))

/// One layer of the integer model. For an input code vector x (codes in InputCodes):
///     acc[i] = Σⱼ Weights[i][j]·x[j] + Biases[i]                         (int64, exact)
///     r[i]   = (acc[i] + 2^(Shift−1)) >> Shift   (arithmetic shift: round half up, i.e. ties towards +∞;
///              r = acc when Shift = 0)
///     next[i] = Lookup.apply r[i]                                      (hidden layers)
/// The last layer has no lookup: its accumulators leave the model and dequantize as acc · AccumulatorScale.
type IntegerLayer =
    { /// Integer weight codes, one row per neuron (pruned weights are 0).
      Weights: int[][]
      /// Integer biases at scale s_in·s_w.
      Biases: int64[]
      /// Range of the input codes (signed for the network input and after activations that can be negative).
      InputCodes: CodeRange
      /// Range of the weight codes.
      WeightCodes: CodeRange
      /// s_in·s_w as float32: the real value of one accumulator unit.
      AccumulatorScale: float32
      /// The widest accumulator range any input in InputCodes can produce (bias included), over all neurons.
      WorstCaseAccumulator: struct (int64 * int64)
      /// Accumulator bits dropped by exact rounding before the lookup (power-of-two scales with ReLU or Identity:
      /// t = log2(s_out / (s_in·s_w)) when positive; 0 otherwise).
      Shift: int
      /// Requantization + activation to the next layer's codes; None for the last layer.
      Lookup: Lookup option }

/// The integer-only network: the exact program that encrypted inference runs.
type IntegerModel =
    { /// The client's input quantizer: code = clip(round_half_up(x / s), qmin, qmax) in float32.
      InputScale: float32
      InputCodes: CodeSpec
      /// The same input quantizer in the quantization core's terms (bits, signedness, scale).
      InputQuantizer: Quantizer
      Layers: IntegerLayer[] }

/// Per-layer widths measured on a calibration set, as the FHE compiler needs them.
type LayerBitWidths =
    { Layer: int
      AccumulatorMin: int64
      AccumulatorMax: int64
      /// Bits of the smallest integer type holding [min, max] (unsigned when min >= 0).
      AccumulatorBits: int
      Shift: int
      /// Range and bits of the rounded accumulator entering the lookup (None for the last layer).
      LookupInputMin: int64 option
      LookupInputMax: int64 option
      LookupInputBits: int option }

module IntegerModel =

    /// Bits of the smallest integer type holding [lo, hi]: unsigned when lo >= 0, two's complement otherwise.
    let bitsFor (lo: int64) (hi: int64) =
        let bitLength (v: int64) = 64 - int (UInt64.LeadingZeroCount(uint64 v))
        if lo >= 0L then max 1 (bitLength hi) else 1 + max (bitLength (-lo - 1L)) (bitLength (max hi 0L))

    /// Rounds away <c>shift</c> low bits, half up: (acc + 2^(shift−1)) >> shift, floor semantics for negatives.
    let roundShift (shift: int) (acc: int64) =
        if shift = 0 then acc else (acc + (1L <<< (shift - 1))) >>> shift

    let private canShift (activation: Activation) =
        activation = Activation.ReLU || activation = Activation.Identity

    /// Builds the integer model of a trained quantized network.
    let ofNetwork (net: Network) : IntegerModel =
        let config = net.Config
        let q =
            match config.Quant with
            | Some q -> q
            | None -> raise (InvalidOperationException "The float twin has no integer model; train a quantized network.")
        let pot = q.PowerOfTwo
        let log2Scale (v: Var) = v.Value.Data[0]
        let layers =
            Array.init net.Layers.Length (fun l ->
                let p = net.Layers[l]
                let weights = Network.weightCodes net l
                let biases = Network.biasCodes net l
                let inputs = Codes.range (Codes.layerInput config q l)
                let accScale = Exp2Scale.product pot [ log2Scale p.InputLog2Scale; log2Scale p.WeightLog2Scale ]
                let worst =
                    Array.map2 (fun (w: int[]) b -> Pruning.accumulatorRange (ReadOnlySpan w) b inputs) weights biases
                let worstLo = worst |> Array.map (fun struct (lo, _) -> lo) |> Array.min
                let worstHi = worst |> Array.map (fun struct (_, hi) -> hi) |> Array.max
                let isLast = l = net.Layers.Length - 1
                let outScale =
                    if isLast then 1.0f else Exp2Scale.value pot (log2Scale net.Layers[l + 1].InputLog2Scale)
                let shift =
                    if pot && not isLast && canShift config.Activation then
                        max 0 (MathF.ILogB outScale - MathF.ILogB accScale)
                    else
                        0
                { Weights = weights
                  Biases = biases
                  InputCodes = inputs
                  WeightCodes = Codes.range (Codes.weight q.WeightBits)
                  AccumulatorScale = accScale
                  WorstCaseAccumulator = struct (worstLo, worstHi)
                  Shift = shift
                  Lookup =
                    if isLast then
                        None
                    else
                        Some
                            { Activation = config.Activation
                              Step = accScale * MathF.ScaleB(1.0f, shift)
                              OutputScale = outScale
                              OutputCodes = Codes.layerInput config q (l + 1) } })
        let inputScale = Exp2Scale.value pot (log2Scale net.Layers[0].InputLog2Scale)
        let coreScale =
            if pot then Scale.PowerOfTwo(MathF.ILogB inputScale) else Scale.Real(float inputScale)
        { InputScale = inputScale
          InputCodes = Codes.layerInput config q 0
          InputQuantizer = Quantizer.symmetric q.ActivationBits true false coreScale
          Layers = layers }

    /// The client's quantization of one row of features.
    let quantizeRow (model: IntegerModel) (row: float32[]) : int[] =
        row |> Array.map (fun x -> int (CodeSpec.code model.InputCodes (x / model.InputScale)))

    /// One layer's accumulators for input codes x.
    let accumulate (layer: IntegerLayer) (x: int[]) : int64[] =
        layer.Weights
        |> Array.mapi (fun i w ->
            let mutable acc = layer.Biases[i]
            for j in 0 .. x.Length - 1 do
                if x[j] <> 0 then
                    acc <- acc + int64 w[j] * int64 x[j]
            acc)

    /// The next layer's input codes from a hidden layer's accumulators (rounding shift, then lookup).
    let activate (layer: IntegerLayer) (acc: int64[]) : int[] =
        match layer.Lookup with
        | Some lookup -> acc |> Array.map (fun a -> Lookup.apply lookup (roundShift layer.Shift a))
        | None -> raise (InvalidOperationException "The last layer has no lookup: its accumulators are the output.")

    /// Every layer's accumulators for one row of input codes (the last entry is the model's output).
    let trace (model: IntegerModel) (codes: int[]) : int64[][] =
        let result = Array.zeroCreate model.Layers.Length
        let mutable x = codes
        for l in 0 .. model.Layers.Length - 1 do
            let acc = accumulate model.Layers[l] x
            result[l] <- acc
            if l < model.Layers.Length - 1 then
                x <- activate model.Layers[l] acc
        result

    /// The output accumulators for one row of input codes.
    let forward (model: IntegerModel) (codes: int[]) : int64[] = Array.last (trace model codes)

    /// The real outputs (logits or standardized values) of the last accumulators: acc · s_in·s_w in float32,
    /// the same value as the training forward pass.
    let dequantize (model: IntegerModel) (acc: int64[]) : float32[] =
        let s = (Array.last model.Layers).AccumulatorScale
        acc |> Array.map (fun a -> float32 a * s)

    /// Real outputs for rows of features (quantize, integer forward, dequantize), in parallel over rows.
    let predict (threads: int) (model: IntegerModel) (rows: float32[][]) : float32[][] =
        let out = Array.zeroCreate rows.Length
        Parallel.For(
            0,
            rows.Length,
            ParallelOptions(MaxDegreeOfParallelism = max 1 threads),
            fun i -> out[i] <- dequantize model (forward model (quantizeRow model rows[i]))
        )
        |> ignore
        out

    /// Accumulator and lookup-input ranges and bit-widths per layer over calibration rows of features.
    let bitWidths (model: IntegerModel) (calibration: float32[][]) : LayerBitWidths list =
        Guard.nonEmpty "calibration" calibration.Length
        let traces = calibration |> Array.map (fun r -> trace model (quantizeRow model r))
        [ for l in 0 .. model.Layers.Length - 1 do
              let layer = model.Layers[l]
              let all = traces |> Array.collect (fun t -> t[l])
              let lo, hi = Array.min all, Array.max all
              let rlo, rhi = roundShift layer.Shift lo, roundShift layer.Shift hi
              let hidden = layer.Lookup.IsSome
              yield
                  { Layer = l
                    AccumulatorMin = lo
                    AccumulatorMax = hi
                    AccumulatorBits = bitsFor lo hi
                    Shift = layer.Shift
                    LookupInputMin = if hidden then Some rlo else None
                    LookupInputMax = if hidden then Some rhi else None
                    LookupInputBits = if hidden then Some(bitsFor rlo rhi) else None } ]
