namespace FheNet.Nn

open System
open System.Diagnostics
open System.Numerics.Tensors
open FheNet
open FheNet.Numerics
open FheNet.Autodiff

/// The optimizers of training.
[<RequireQualifiedAccess>]
type Optimizer =
    /// Adam; weight decay is added to the gradient (L2), as in PyTorch's Adam.
    | Adam
    /// Adam with decoupled weight decay.
    | AdamW
    /// Stochastic gradient descent with (heavy-ball) momentum.
    | SgdMomentum

/// What the network learns: class labels 0..k−1 with per-class loss weights, or real targets (rows × outputs).
[<RequireQualifiedAccess>]
type Targets =
    | Classes of labels: int[] * classWeights: float32[]
    | Values of Tensor

/// One line of the training log.
type EpochReport =
    { Epoch: int
      TrainLoss: float
      ValidLoss: float option
      /// Accuracy for classes, R² for values, on the validation split.
      ValidMetric: float option
      Seconds: float
      /// True for an epoch of the final run on every row that follows a validation run (the estimators' Refit).
      Refit: bool }

/// Hyper-parameters of the training loop.
type TrainConfig =
    { Epochs: int
      LearningRate: float
      BatchSize: int
      Optimizer: Optimizer
      Momentum: float
      WeightDecay: float
      Shuffle: bool
      /// Stop when the validation loss has not improved for this many epochs, keeping the best epoch's values.
      Patience: int option
      Threads: int
      Seed: int
      OnEpoch: EpochReport -> unit }

/// A quantized network against its own float path (the same weights and biases without quantization) on the same
/// rows: how much the quantization costs the model that training produced.
type QuantizationCheck =
    { /// Accuracy for classes, R² for values, of the quantized network.
      Quantized: float
      /// The same metric of the float path.
      Float: float
      /// True when a scale re-fit after training recovered from a collapse (the figures are those after it).
      Recovered: bool }

    /// The largest gap between the float path and the quantized network that is not a collapse.
    static member CollapseGap = 0.2

    /// True when the quantized network is far below its float path: more than CollapseGap of accuracy or R².
    member c.Collapsed = c.Float - c.Quantized > QuantizationCheck.CollapseGap

module Training =

    /// The loss of a batch of outputs against its targets (rows selected by <c>rows</c>).
    let loss (tape: Tape) (output: Var) (targets: Targets) (rows: ReadOnlySpan<int>) =
        match targets with
        | Targets.Classes(labels, weights) ->
            let batchLabels = Array.zeroCreate rows.Length
            for i in 0 .. rows.Length - 1 do
                batchLabels[i] <- labels[rows[i]]
            Ad.softmaxCrossEntropy tape output batchLabels weights
        | Targets.Values t -> Ad.meanSquaredError tape output (Tensor.gatherRows t rows)

    /// Accuracy of argmax(outputs) for classes, R² (mean over outputs) for values.
    let metric (output: Tensor) (targets: Targets) =
        match targets with
        | Targets.Classes(labels, _) ->
            let correct =
                labels
                |> Array.mapi (fun i y ->
                    let r = Tensor.row output i
                    if Array.IndexOf(r, Array.max r) = y then 1 else 0)
                |> Array.sum
            float correct / float labels.Length
        | Targets.Values t ->
            Array.init t.Cols (fun j ->
                let ys = Array.init t.Rows (fun i -> float t[i, j])
                let mean = Array.average ys
                let ssTot = ys |> Array.sumBy (fun y -> (y - mean) ** 2.0)
                let ssRes = Array.init t.Rows (fun i -> (float output[i, j] - ys[i]) ** 2.0) |> Array.sum
                if ssTot = 0.0 then 0.0 else 1.0 - ssRes / ssTot)
            |> Array.average

    /// The optimizer's per-parameter state (float32, like PyTorch's); <c>Step</c> updates the values in place with
    /// SIMD kernels and clears the gradients.
    type private OptimizerState(config: TrainConfig, parameters: (Var * bool)[]) =
        let first = parameters |> Array.map (fun (v, _) -> Array.zeroCreate<float32> v.Value.Length)
        let second = parameters |> Array.map (fun (v, _) -> Array.zeroCreate<float32> v.Value.Length)
        let scratch = parameters |> Array.map (fun (v, _) -> Array.zeroCreate<float32> v.Value.Length)
        let mutable t = 0
        let beta1, beta2, eps = 0.9f, 0.999f, 1e-8f

        member _.Step() =
            t <- t + 1
            let lr = float32 config.LearningRate
            let c1 = float32 (1.0 - Math.Pow(float beta1, float t))
            let c2 = float32 (1.0 - Math.Pow(float beta2, float t))
            for pi in 0 .. parameters.Length - 1 do
                let v, decays = parameters[pi]
                let w, g = v.Value.Data, v.Grad
                let m, s, tmp = first[pi], second[pi], scratch[pi]
                let decay = if decays then float32 config.WeightDecay else 0.0f
                // g ← g + λ·w for L2 decay (Adam, SGD); AdamW shrinks w instead.
                if decay <> 0.0f && config.Optimizer <> Optimizer.AdamW then
                    TensorPrimitives.MultiplyAdd(ReadOnlySpan w, decay, ReadOnlySpan g, Span g)
                match config.Optimizer with
                | Optimizer.Adam
                | Optimizer.AdamW ->
                    if config.Optimizer = Optimizer.AdamW && decay <> 0.0f then
                        TensorPrimitives.Multiply(ReadOnlySpan w, 1.0f - lr * decay, Span w)
                    // m ← β1·m + (1−β1)·g ; s ← β2·s + (1−β2)·g²
                    TensorPrimitives.Multiply(ReadOnlySpan g, 1.0f - beta1, Span tmp)
                    TensorPrimitives.MultiplyAdd(ReadOnlySpan m, beta1, ReadOnlySpan tmp, Span m)
                    TensorPrimitives.Multiply(ReadOnlySpan g, ReadOnlySpan g, Span tmp)
                    TensorPrimitives.Multiply(ReadOnlySpan tmp, 1.0f - beta2, Span tmp)
                    TensorPrimitives.MultiplyAdd(ReadOnlySpan s, beta2, ReadOnlySpan tmp, Span s)
                    // w ← w − lr·(m/c1) / (sqrt(s/c2) + ε)
                    TensorPrimitives.Multiply(ReadOnlySpan s, 1.0f / c2, Span tmp)
                    TensorPrimitives.Sqrt(ReadOnlySpan tmp, Span tmp)
                    TensorPrimitives.Add(ReadOnlySpan tmp, eps, Span tmp)
                    TensorPrimitives.Divide(ReadOnlySpan m, ReadOnlySpan tmp, Span tmp)
                    TensorPrimitives.MultiplyAdd(ReadOnlySpan tmp, -lr / c1, ReadOnlySpan w, Span w)
                | Optimizer.SgdMomentum ->
                    // m ← μ·m + g ; w ← w − lr·m
                    TensorPrimitives.MultiplyAdd(ReadOnlySpan m, float32 config.Momentum, ReadOnlySpan g, Span m)
                    TensorPrimitives.MultiplyAdd(ReadOnlySpan m, -lr, ReadOnlySpan w, Span w)
                v.ZeroGrad()

    /// Every trainable value, flagged with whether weight decay applies (weights and biases, not scales).
    let private trainable (net: Network) =
        [| for p in net.Layers do
               yield p.Weight, true
               yield p.Bias, true
               if net.Config.Quant.IsSome then
                   yield p.InputLog2Scale, false
                   yield p.WeightLog2Scale, false |]

    /// Splits rows into (train, validation) index sets, both ascending, after a shuffle seeded by <c>seed</c>: the
    /// last <c>fraction</c> of the rows held out, per class for class labels (stratified), each class keeping a
    /// training row. No validation rows when the data is too small for the fraction to hold out any.
    let validationSplit (fraction: float) (seed: int) (targets: Targets) (rows: int) =
        let order = TrainingRng(uint64 seed + 7UL).Permutation rows
        let held =
            match targets with
            | Targets.Classes(labels, _) ->
                order
                |> Array.groupBy (fun i -> labels[i])
                |> Array.collect (fun (_, members) ->
                    let valid = min (members.Length - 1) (int (Math.Round(float members.Length * fraction)))
                    members[members.Length - valid ..])
            | Targets.Values _ -> order[rows - int (float rows * fraction) ..]
        let isHeld = Array.zeroCreate rows
        for i in held do
            isHeld[i] <- true
        Array.filter (fun i -> not isHeld[i]) (Array.init rows id), Array.sort held

    let private evaluate (config: TrainConfig) (net: Network) (x: Tensor) (targets: Targets) =
        let tape = Tape config.Threads
        let r = Network.forward tape net false x
        let all = Array.init x.Rows id
        float (loss tape r.Output targets (ReadOnlySpan all)).Value.Data[0], metric r.Output.Value targets

    /// The quantized network's metric on (x, targets) against its float path's; None for a float network.
    let checkQuantization (threads: int) (net: Network) (x: Tensor) (targets: Targets) : QuantizationCheck option =
        net.Config.Quant
        |> Option.map (fun _ ->
            { Quantized = metric (Network.predict threads net x) targets
              Float = metric (Network.predict threads (Network.floatPath net) x) targets
              Recovered = false })

    /// <c>train</c> with the function that refreshes the pruning masks after every optimizer step (the tests train
    /// with the reference path too).
    let internal trainWith
        (refreshMasks: Network -> unit)
        (config: TrainConfig)
        (net: Network)
        (x: Tensor)
        (targets: Targets)
        (validation: (Tensor * Targets) option)
        : EpochReport list =
        let rng = TrainingRng(uint64 config.Seed * 0x9E3779B97F4A7C15UL + 1UL)
        let parameters = trainable net
        let optimizer = OptimizerState(config, parameters)
        let reports = ResizeArray()
        let mutable best = (Double.PositiveInfinity, Network.copy net)
        let mutable sinceBest = 0
        let mutable epoch = 0
        refreshMasks net
        while epoch < config.Epochs && (config.Patience.IsNone || sinceBest < config.Patience.Value) do
            let watch = Stopwatch.StartNew()
            let order = if config.Shuffle then rng.Permutation x.Rows else Array.init x.Rows id
            let mutable lossSum = 0.0
            let mutable start = 0
            while start < x.Rows do
                let rows = ReadOnlySpan(order, start, min config.BatchSize (x.Rows - start))
                let tape = Tape config.Threads
                let r = Network.forward tape net true (Tensor.gatherRows x rows)
                let l = loss tape r.Output targets rows
                tape.Backward l
                optimizer.Step()
                // Gradual magnitude pruning: the masks follow the weights after every step, so every forward pass
                // (and the model that leaves training) fits its accumulator budget. Refreshing them only every few
                // steps was measurably less accurate (diabetes and circles at 100 epochs, 8-bit budget).
                refreshMasks net
                lossSum <- lossSum + float l.Value.Data[0] * float rows.Length
                start <- start + rows.Length
            // Weights outgrow the scale calibrated at initialisation, and a power-of-two scale moves too slowly
            // under its own gradient to follow them: re-fit the weight scales between epochs.
            if epoch < config.Epochs - 1 then
                Network.recalibrateWeightScales net
                refreshMasks net
            let valid = validation |> Option.map (fun (vx, vt) -> evaluate config net vx vt)
            let report =
                { Epoch = epoch + 1
                  TrainLoss = lossSum / float x.Rows
                  ValidLoss = valid |> Option.map fst
                  ValidMetric = valid |> Option.map snd
                  Seconds = watch.Elapsed.TotalSeconds
                  Refit = false }
            reports.Add report
            config.OnEpoch report
            match valid with
            | Some(validLoss, _) when validLoss < fst best ->
                best <- (validLoss, Network.copy net)
                sinceBest <- 0
            | Some _ -> sinceBest <- sinceBest + 1
            | None -> ()
            epoch <- epoch + 1
        if not (Double.IsInfinity(fst best)) then
            let restored = snd best
            for l in 0 .. net.Layers.Length - 1 do
                let target, source = net.Layers[l], restored.Layers[l]
                for dst, src in
                    [ target.Weight, source.Weight
                      target.Bias, source.Bias
                      target.InputLog2Scale, source.InputLog2Scale
                      target.WeightLog2Scale, source.WeightLog2Scale ] do
                    Array.blit src.Value.Data 0 dst.Value.Data 0 src.Value.Length
                target.Mask <- Array.copy source.Mask
        List.ofSeq reports

    /// Trains <c>net</c> in place (values, scales, masks) on (x, targets), reporting each epoch. With a validation
    /// split, leaves <c>net</c> at the epoch of lowest validation loss, and with a patience also stops early.
    /// Deterministic for a given seed.
    let train (config: TrainConfig) (net: Network) (x: Tensor) (targets: Targets) (validation: (Tensor * Targets) option) =
        trainWith Network.updateMasks config net x targets validation
