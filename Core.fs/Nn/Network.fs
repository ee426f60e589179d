namespace FheNet.Nn

open System
open System.Runtime.CompilerServices
open FheNet
open FheNet.Numerics
open FheNet.Autodiff
open FheNet.Quantization

/// The quantization of a network (absent for its float twin).
type QuantSettings =
    { /// Weight bits (symmetric per tensor, signed codes).
      WeightBits: int
      /// Input and activation bits.
      ActivationBits: int
      /// Per-neuron accumulator budget enforced by pruning; None = unbounded.
      AccumulatorBits: int option
      /// Every scale a power of two: requantization after ReLU becomes an exact rounding shift.
      PowerOfTwo: bool }

/// Architecture and quantization of a multi-layer perceptron.
type NetworkConfig =
    { InputDim: int
      /// Width of every hidden layer.
      Hidden: int
      Outputs: int
      /// Number of linear layers (>= 1); the last has no activation.
      Layers: int
      Activation: Activation
      Quant: QuantSettings option }

    /// Fan-in of each layer followed by its fan-out: [input; hidden; …; hidden; outputs].
    member c.Widths = Array.concat [ [| c.InputDim |]; Array.create (c.Layers - 1) c.Hidden; [| c.Outputs |] ]

/// One linear layer's trainable values. Scales are base-2 logarithms (see Exp2Scale). The mask (1 kept, 0 pruned,
/// same shape as the weight) is empty when nothing is pruned.
type LayerParams =
    { /// Out × in (one row per neuron).
      Weight: Var
      /// 1 × out.
      Bias: Var
      /// log2 of the scale of the layer's input codes.
      InputLog2Scale: Var
      /// log2 of the scale of the weight codes.
      WeightLog2Scale: Var
      mutable Mask: float32[]
      /// Arrays reused by training steps (not part of the model's value).
      Buffers: LinearBuffers }

/// A network under training: its configuration and its layers' values (updated in place by the optimizer).
type Network = { Config: NetworkConfig; Layers: LayerParams[] }

/// Code ranges of the quantized network: the single source for training, pruning and the integer model.
module Codes =

    /// Signed codes in [−2^(b−1), 2^(b−1) − 1] or unsigned codes in [0, 2^b − 1], rounded half up.
    let activation (bits: int) (signed: bool) : CodeSpec =
        if signed then
            { QMin = -(1 <<< (bits - 1)); QMax = (1 <<< (bits - 1)) - 1; Rounding = Rounding.HalfUp }
        else
            { QMin = 0; QMax = (1 <<< bits) - 1; Rounding = Rounding.HalfUp }

    /// Signed weight codes in [−2^(b−1), 2^(b−1) − 1], rounded half to even.
    let weight (bits: int) : CodeSpec =
        { QMin = -(1 <<< (bits - 1)); QMax = (1 <<< (bits - 1)) - 1; Rounding = Rounding.HalfEven }

    /// Bias codes at scale s_in·s_w: within a quarter of the accumulator budget (so that weights still fit), or
    /// ±2^22 unbounded (float32 holds every accumulator exactly below 2^24).
    let bias (accumulatorBits: int option) : CodeSpec =
        let half =
            match accumulatorBits with
            | Some n -> 1 <<< (n - 2)
            | None -> 1 <<< 22
        { QMin = -half; QMax = half - 1; Rounding = Rounding.HalfUp }

    /// True when layer <c>layer</c>'s inputs are signed: the network input, or the output of an activation that
    /// can be negative.
    let inputSigned (config: NetworkConfig) (layer: int) =
        layer = 0 || not (Activation.isNonNegative config.Activation)

    /// The code range entering layer <c>layer</c>.
    let layerInput (config: NetworkConfig) (q: QuantSettings) (layer: int) =
        activation q.ActivationBits (inputSigned config layer)

    /// A code spec as the quantization core's centred range.
    let range (spec: CodeSpec) : CodeRange = { Min = spec.QMin; Max = spec.QMax }

/// The forward pass, shared by training (on a tape) and inference (the same code on detached values).
type ForwardResult =
    { /// Network output (logits or standardized regression values), batch × outputs.
      Output: Var
      /// Per layer, the integer accumulator Σ q_x·q_w + q_b as exact float32 integers (quantized networks only).
      Accumulators: Tensor list }

module Network =

    /// Random initialisation: uniform weights with bound 1/sqrt(fan_in) (PyTorch's default), zero biases, scales 1.
    let create (config: NetworkConfig) (rng: TrainingRng) : Network =
        let w = config.Widths
        let layers =
            Array.init config.Layers (fun l ->
                let fanIn, fanOut = w[l], w[l + 1]
                let bound = sqrt (1.0 / float fanIn)
                let weight =
                    Tensor.init fanOut fanIn (fun _ _ -> float32 ((2.0 * rng.NextDouble() - 1.0) * bound))
                { Weight = Ad.parameter weight
                  Bias = Ad.parameter (Tensor.zeros 1 fanOut)
                  InputLog2Scale = Ad.parameter (Tensor.scalar 0.0f)
                  WeightLog2Scale = Ad.parameter (Tensor.scalar 0.0f)
                  Mask = Array.empty
                  Buffers = LinearBuffers() })
        { Config = config; Layers = layers }

    /// Data-dependent bias initialisation: each hidden neuron's bias becomes minus the mean of its pre-activation on
    /// <c>x</c> (float forward pass, layer by layer), so that every hidden unit starts centred on the data, a ReLU
    /// active on about half of the rows, instead of a random share that leaves some units dead or linear. Weights
    /// and the output layer (zero bias) are left as created. Sums run in row order: the result does not depend on
    /// the thread count.
    let centerHiddenBiases (threads: int) (net: Network) (x: Tensor) =
        let mutable h = x
        for l in 0 .. net.Layers.Length - 2 do
            let p = net.Layers[l]
            let z = Tensor.matmulNT threads h p.Weight.Value
            let sums = Tensor.sumRows z
            let bias = p.Bias.Value.Data
            for j in 0 .. z.Cols - 1 do
                bias[j] <- -(sums.Data[j] / float32 z.Rows)
            for i in 0 .. z.Rows - 1 do
                for j in 0 .. z.Cols - 1 do
                    z.Data[i * z.Cols + j] <- Activation.value net.Config.Activation (z.Data[i * z.Cols + j] + bias[j])
            h <- z

    /// Runs the network on a batch (rows × inputDim). With <c>training</c> false no gradient is recorded.
    let forward (tape: Tape) (net: Network) (training: bool) (x: Tensor) : ForwardResult =
        let param (v: Var) = if training then v else Ad.detach v
        let config = net.Config
        let mutable h = Ad.constant x
        let accumulators = ResizeArray()
        for l in 0 .. net.Layers.Length - 1 do
            let p = net.Layers[l]
            let y =
                match config.Quant with
                | None ->
                    Ad.linear tape h (param p.Weight) (param p.Bias) (if training then Some p.Buffers else None)
                | Some q ->
                    let struct (y, acc) =
                        Ad.quantizedLinear
                            tape
                            q.PowerOfTwo
                            (Codes.layerInput config q l)
                            (Codes.weight q.WeightBits)
                            (Codes.bias q.AccumulatorBits)
                            h
                            (param p.Weight)
                            p.Mask
                            (param p.Bias)
                            (param p.InputLog2Scale)
                            (param p.WeightLog2Scale)
                            (if training then Some p.Buffers else None)
                    accumulators.Add acc
                    y
            h <- if l < net.Layers.Length - 1 then Ad.activation tape config.Activation y else y
        { Output = h; Accumulators = List.ofSeq accumulators }

    /// The output on a batch, without recording gradients.
    let predict (threads: int) (net: Network) (x: Tensor) : Tensor =
        (forward (Tape threads) net false x).Output.Value

    /// Integer weight codes of one layer (row per neuron) at the current scale, mask applied.
    let weightCodes (net: Network) (layer: int) : int[][] =
        let q = net.Config.Quant |> Option.get
        let p = net.Layers[layer]
        let s = Exp2Scale.value q.PowerOfTwo p.WeightLog2Scale.Value.Data[0]
        let spec = Codes.weight q.WeightBits
        let w = p.Weight.Value
        Array.init w.Rows (fun i ->
            Array.init w.Cols (fun j ->
                let k = i * w.Cols + j
                let kept = p.Mask.Length = 0 || p.Mask[k] <> 0.0f
                if kept then int (CodeSpec.code spec (w.Data[k] / s)) else 0))

    /// Integer bias codes of one layer at scale s_in·s_w.
    let biasCodes (net: Network) (layer: int) : int64[] =
        let q = net.Config.Quant |> Option.get
        let p = net.Layers[layer]
        let s =
            Exp2Scale.product q.PowerOfTwo [ p.InputLog2Scale.Value.Data[0]; p.WeightLog2Scale.Value.Data[0] ]
        let spec = Codes.bias q.AccumulatorBits
        p.Bias.Value.Data |> Array.map (fun b -> int64 (CodeSpec.code spec (b / s)))

    /// Values used to calibrate a scale: all of them, or <c>count</c> drawn without replacement by a fixed-seed
    /// shuffle (deterministic). A fixed stride would alias with the row width of a row-major matrix and sample a
    /// few columns only: 512 rows of 64 features at stride 8 read one pixel column of an 8×8 image.
    let private sample (count: int) (values: float32[]) =
        if values.Length <= count then
            values
        else
            let rng = TrainingRng(0x5A3D1E5UL + uint64 values.Length)
            let order = Array.init values.Length id
            for i in 0 .. count - 1 do
                let j = i + rng.NextInt(values.Length - i)
                let t = order[i]
                order[i] <- order[j]
                order[j] <- t
            Array.init count (fun i -> values[order[i]])

    /// log2 of the scale that minimises the quantization MSE of (a sample of at most <c>count</c> of)
    /// <c>values</c> for symmetric codes of the given bits and signedness.
    let private calibratedLog2Scale (count: int) (bits: int) (signed: bool) (values: float32[]) =
        let template = Quantizer.symmetric bits signed false (Scale.Real 1.0)
        let threshold = Calibration.threshold (Calibrator.MinMse 64) template (sample count values)
        if threshold > 0.0 then float32 (Math.Log2(threshold / float template.QMax)) else 0.0f

    /// Scale initialisation from data: each weight scale and each input scale is set to the MSE-optimal one for the
    /// initial weights and for the values reaching that layer on <c>x</c> (earlier layers already quantized).
    let calibrateScales (threads: int) (net: Network) (x: Tensor) =
        match net.Config.Quant with
        | None -> ()
        | Some q ->
            let config = net.Config
            let mutable h = x
            for l in 0 .. net.Layers.Length - 1 do
                let p = net.Layers[l]
                p.WeightLog2Scale.Value.Data[0] <- calibratedLog2Scale 4096 q.WeightBits true p.Weight.Value.Data
                p.InputLog2Scale.Value.Data[0] <-
                    calibratedLog2Scale 4096 q.ActivationBits (Codes.inputSigned config l) h.Data
                if l < net.Layers.Length - 1 then
                    let partial = { net with Layers = net.Layers[..l]; Config = { config with Layers = l + 1 } }
                    let tape = Tape threads
                    let r = forward tape partial false x
                    let last = r.Accumulators |> List.last
                    let s = Exp2Scale.product q.PowerOfTwo [ p.InputLog2Scale.Value.Data[0]; p.WeightLog2Scale.Value.Data[0] ]
                    h <- Tensor.map (fun a -> Activation.value config.Activation (a * s)) last

    /// Re-fits every weight scale to the current weights (MSE-optimal on a sample of 1024), as training moves them.
    /// Not under an accumulator budget: there a coarser scale keeps more weights inside the budget, a trade-off the
    /// MSE of the unpruned weights ignores (breast_cancer at 8 bits lost 7 points with it).
    let recalibrateWeightScales (net: Network) =
        match net.Config.Quant with
        | None
        | Some { AccumulatorBits = Some _ } -> ()
        | Some q ->
            for p in net.Layers do
                p.WeightLog2Scale.Value.Data[0] <- calibratedLog2Scale 1024 q.WeightBits true p.Weight.Value.Data

    /// Every layer under an accumulator budget with what its masks depend on: the codes of its unmasked weights (a
    /// pruned weight may come back if it outgrows a kept one), its bias codes, its input code range and the budget.
    let private budgetLayers (net: Network) =
        match net.Config.Quant with
        | Some({ AccumulatorBits = Some bits } as q) ->
            [ for l in 0 .. net.Layers.Length - 1 ->
                  let p = net.Layers[l]
                  let w = p.Weight.Value
                  let s = Exp2Scale.value q.PowerOfTwo p.WeightLog2Scale.Value.Data[0]
                  let codes = p.Buffers.Get(4, w.Length)
                  CodeSpec.codesInto (Codes.weight q.WeightBits) s w.Data codes
                  p, codes, biasCodes net l, Codes.range (Codes.layerInput net.Config q l), bits ]
        | _ -> []

    /// The reference path of <c>updateMasks</c>: every neuron's mask from scratch by Pruning.budgetMask, into new
    /// mask arrays.
    let updateMasksFromScratch (net: Network) =
        for p, codes, bias, inputs, bits in budgetLayers net do
            let w = p.Weight.Value
            let mask = Array.zeroCreate w.Length
            let row = Array.zeroCreate w.Cols
            for i in 0 .. w.Rows - 1 do
                for j in 0 .. w.Cols - 1 do
                    row[j] <- int codes[i * w.Cols + j]
                let keep = Pruning.budgetMask row bias[i] inputs bits
                for j in 0 .. w.Cols - 1 do
                    mask[i * w.Cols + j] <- if keep[j] then 1.0f else 0.0f
            p.Mask <- mask

    /// The caches behind the masks that <c>updateMasks</c> maintains, by mask array: a mask that other code put in
    /// place (a copy, a restored best epoch) has none, and its layer starts a new cache.
    let private budgetCaches = ConditionalWeakTable<float32[], BudgetMaskCache>()

    /// Recomputes every layer's pruning mask from the current weights: per neuron, the largest-magnitude integer
    /// weights are kept while the exact accumulator range (bias included) fits the budget. The masks are those of
    /// <c>updateMasksFromScratch</c>; each layer's cache recomputes only the neurons whose codes changed where it
    /// can matter, since this runs after every optimizer step.
    let updateMasks (net: Network) =
        for p, codes, bias, inputs, bits in budgetLayers net do
            let fanIn = p.Weight.Value.Cols
            let cache =
                match budgetCaches.TryGetValue p.Mask with
                | true, cache when cache.Serves(fanIn, inputs, bits) -> cache
                | _ ->
                    let cache = BudgetMaskCache(Array.zeroCreate codes.Length, fanIn, inputs, bits)
                    budgetCaches.AddOrUpdate(cache.Mask, cache)
                    cache
            cache.Update(ReadOnlySpan codes, ReadOnlySpan bias) |> ignore
            p.Mask <- cache.Mask

    /// The same network without quantization, sharing its layers' values: training it trains them.
    let floatPath (net: Network) : Network = { net with Config = { net.Config with Quant = None } }

    /// The rows that scales are calibrated on: the first 512 (all of a smaller set).
    let calibrationRows (x: Tensor) = Tensor.gatherRows x (ReadOnlySpan(Array.init (min 512 x.Rows) id))

    /// A deep copy (values, scales and masks), independent of further training.
    let copy (net: Network) : Network =
        let clone (v: Var) = Ad.parameter (Tensor.ofArray v.Value.Rows v.Value.Cols (Array.copy v.Value.Data))
        { net with
            Layers =
                net.Layers
                |> Array.map (fun p ->
                    { Weight = clone p.Weight
                      Bias = clone p.Bias
                      InputLog2Scale = clone p.InputLog2Scale
                      WeightLog2Scale = clone p.WeightLog2Scale
                      Mask = Array.copy p.Mask
                      Buffers = LinearBuffers() }) }
