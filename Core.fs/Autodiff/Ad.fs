namespace FheNet.Autodiff

open System
open System.Numerics.Tensors
open System.Runtime.InteropServices
open System.Runtime.Intrinsics
open FheNet
open FheNet.Numerics

/// A value in a differentiated computation. Parameters and intermediate results that depend on them carry a
/// gradient buffer, allocated on first use and accumulated into by the backward pass.
[<AllowNullLiteral>]
type Var(value: Tensor, requiresGrad: bool) =
    let mutable grad: float32[] = Array.empty

    /// The forward value.
    member _.Value = value
    /// True when the backward pass must compute this value's gradient.
    member _.RequiresGrad = requiresGrad
    /// The accumulated gradient (same shape as the value); zeros until the backward pass writes it.
    member _.Grad =
        if grad.Length <> value.Length then
            grad <- Array.zeroCreate value.Length
        grad
    /// Sets the gradient back to zero (before the next step).
    member _.ZeroGrad() =
        if grad.Length = value.Length then
            Array.Clear grad

/// Records the backward closures of one forward pass; <c>Backward</c> runs them in reverse order.
/// <c>threads</c> bounds the parallelism of the matrix products (results never depend on it).
type Tape(threads: int) =
    let steps = ResizeArray<unit -> unit>()
    /// The thread bound of the kernels.
    member _.Threads = threads
    /// Records a backward closure.
    member _.Record(step: unit -> unit) = steps.Add step
    /// Seeds d(loss)/d(loss) = 1 and propagates gradients to every variable that requires one.
    member _.Backward(loss: Var) =
        if loss.Value.Length <> 1 then
            raise (InvalidShapeException("loss", "must be a 1 × 1 scalar to start the backward pass"))
        loss.Grad[0] <- 1.0f
        for i in steps.Count - 1 .. -1 .. 0 do
            steps[i] ()

/// Scales are parametrised by their base-2 logarithm θ: s = 2^θ, or 2^round(θ) for power-of-two scales (the
/// gradient flows through the rounding unchanged, a straight-through estimator). One function computes them,
/// shared by training and the integer model so that both use the very same float32 values.
module Exp2Scale =

    /// The scale 2^θ as float32; with <c>powerOfTwo</c> the exponent is round-half-even(θ) and the value is exact.
    let value (powerOfTwo: bool) (log2Scale: float32) : float32 =
        if powerOfTwo then
            MathF.ScaleB(1.0f, int (MathF.Round log2Scale))
        else
            float32 (Math.Pow(2.0, float log2Scale))

    /// The product of several scales, multiplied left to right in float32.
    let product (powerOfTwo: bool) (log2Scales: float32 list) : float32 =
        log2Scales |> List.fold (fun acc t -> acc * value powerOfTwo t) 1.0f

/// Rounding of a real code value to an integer: the tie rule is part of the integer model's specification.
[<RequireQualifiedAccess>]
type Rounding =
    /// floor(v + 1/2): ties go up (towards +∞), as an arithmetic right shift with a rounding bit does.
    | HalfUp
    /// Ties to the even neighbour (IEEE default).
    | HalfEven

/// The integer code range and rounding of one quantizer.
type CodeSpec =
    { QMin: int
      QMax: int
      Rounding: Rounding }

module CodeSpec =
    /// clip(round(v), qmin, qmax) as float32 (an exact small integer).
    let code (spec: CodeSpec) (v: float32) : float32 =
        let r =
            match spec.Rounding with
            | Rounding.HalfUp -> MathF.Floor(v + 0.5f)
            | Rounding.HalfEven -> MathF.Round v
        Math.Clamp(r, float32 spec.QMin, float32 spec.QMax)

    /// <c>code</c> of every src[i] / scale, written to dst, with SIMD kernels performing the same IEEE operations
    /// (division, then floor(v + 1/2) or round-half-even, then clipping); only the sign of a zero code may differ.
    let codesInto (spec: CodeSpec) (scale: float32) (src: float32[]) (dst: float32[]) =
        Guard.sameLength "dst" src.Length dst.Length
        TensorPrimitives.Divide(ReadOnlySpan src, scale, Span dst)
        match spec.Rounding with
        | Rounding.HalfUp ->
            TensorPrimitives.Add(ReadOnlySpan dst, 0.5f, Span dst)
            TensorPrimitives.Floor(ReadOnlySpan dst, Span dst)
        | Rounding.HalfEven -> TensorPrimitives.Round(ReadOnlySpan dst, Span dst)
        TensorPrimitives.Max(ReadOnlySpan dst, float32 spec.QMin, Span dst)
        TensorPrimitives.Min(ReadOnlySpan dst, float32 spec.QMax, Span dst)

/// Weight-sized arrays a linear layer reuses from one training step to the next, by slot: 0 masked weights,
/// 1 weight codes, 2 their transpose, 3 the weight-code gradient, 4 the codes the pruning budget reads. Such arrays
/// live on the large-object heap; allocating them every step made the garbage collector the largest cost of
/// training. One set serves one pass at a time: never share it between concurrent forward passes.
type LinearBuffers() =
    let mutable arrays: float32[][] = Array.init 5 (fun _ -> Array.empty)

    /// Buffer <c>slot</c> with exactly <c>length</c> values (contents unspecified), reallocated only on a size change.
    member _.Get(slot: int, length: int) =
        if arrays[slot].Length <> length then
            arrays[slot] <- Array.zeroCreate length
        arrays[slot]

/// Differentiable operations. Each computes its value now and records how to push gradients back.
module Ad =

    /// A value that needs no gradient (inputs, targets, masks).
    let constant (t: Tensor) = Var(t, false)

    /// A trainable value.
    let parameter (t: Tensor) = Var(t, true)

    let private needs (vars: Var list) = vars |> List.exists (fun v -> v.RequiresGrad)

    let private accumulate (target: Var) (delta: float32[]) =
        let g = target.Grad
        TensorPrimitives.Add(ReadOnlySpan delta, ReadOnlySpan g, Span g)

    let private sameShape (name: string) (a: Tensor) (b: Tensor) =
        if a.Rows <> b.Rows || a.Cols <> b.Cols then
            raise (InvalidShapeException(name, $"is %d{b.Rows} × %d{b.Cols} but %d{a.Rows} × %d{a.Cols} was expected"))

    /// A·B.
    let matmul (tape: Tape) (a: Var) (b: Var) =
        let out = Var(Tensor.matmul tape.Threads a.Value b.Value, needs [ a; b ])
        if out.RequiresGrad then
            tape.Record(fun () ->
                let g = Tensor.ofArray out.Value.Rows out.Value.Cols out.Grad
                if a.RequiresGrad then
                    accumulate a (Tensor.matmulNT tape.Threads g b.Value).Data
                if b.RequiresGrad then
                    accumulate b (Tensor.matmulTN tape.Threads a.Value g).Data)
        out

    /// Aᵀ.
    let transpose (tape: Tape) (a: Var) =
        let out = Var(Tensor.transpose a.Value, a.RequiresGrad)
        if out.RequiresGrad then
            tape.Record(fun () -> accumulate a (Tensor.transpose (Tensor.ofArray out.Value.Rows out.Value.Cols out.Grad)).Data)
        out

    /// True when b is one row (1 × cols) to broadcast down a's rows, false when it has a's shape.
    let private isRowBroadcast (a: Tensor) (b: Tensor) =
        if b.Rows = a.Rows && b.Cols = a.Cols then false
        else if b.Rows = 1 && b.Cols = a.Cols then true
        else
            raise (
                InvalidShapeException("b", $"is %d{b.Rows} × %d{b.Cols}; expected %d{a.Rows} × %d{a.Cols} or 1 × %d{a.Cols}")
            )

    /// Applies f(a[k], b[k']) element-wise, with k' the broadcast index of k.
    let private zipBroadcast (a: Tensor) (b: Tensor) (broadcast: bool) (f: float32 -> float32 -> float32) =
        let data = Array.zeroCreate a.Length
        let cols = a.Cols
        for i in 0 .. a.Rows - 1 do
            let o = i * cols
            let ob = if broadcast then 0 else o
            for j in 0 .. cols - 1 do
                data[o + j] <- f a.Data[o + j] b.Data[ob + j]
        data

    /// Adds g[k]·a[k] (or g[k] when <c>factor</c> is empty) into the broadcast gradient of b.
    let private reduceInto (target: float32[]) (g: float32[]) (factor: float32[]) (rows: int) (cols: int) (broadcast: bool) =
        for i in 0 .. rows - 1 do
            let o = i * cols
            let ob = if broadcast then 0 else o
            for j in 0 .. cols - 1 do
                let v = if factor.Length = 0 then g[o + j] else g[o + j] * factor[o + j]
                target[ob + j] <- target[ob + j] + v

    /// A + B, where B has A's shape or is one row broadcast down A's rows.
    let add (tape: Tape) (a: Var) (b: Var) =
        let broadcast = isRowBroadcast a.Value b.Value
        let data = zipBroadcast a.Value b.Value broadcast (+)
        let out = Var(Tensor.ofArray a.Value.Rows a.Value.Cols data, needs [ a; b ])
        if out.RequiresGrad then
            tape.Record(fun () ->
                let g = out.Grad
                if a.RequiresGrad then accumulate a g
                if b.RequiresGrad then reduceInto b.Grad g Array.empty a.Value.Rows a.Value.Cols broadcast)
        out

    /// A ⊙ B (element-wise), where B has A's shape or is one row broadcast down A's rows.
    let mul (tape: Tape) (a: Var) (b: Var) =
        let broadcast = isRowBroadcast a.Value b.Value
        let data = zipBroadcast a.Value b.Value broadcast (*)
        let out = Var(Tensor.ofArray a.Value.Rows a.Value.Cols data, needs [ a; b ])
        if out.RequiresGrad then
            tape.Record(fun () ->
                let g = out.Grad
                if a.RequiresGrad then
                    accumulate a (zipBroadcast (Tensor.ofArray a.Value.Rows a.Value.Cols g) b.Value broadcast (*))
                if b.RequiresGrad then reduceInto b.Grad g a.Value.Data a.Value.Rows a.Value.Cols broadcast)
        out

    /// The sum of all elements (1 × 1), added in index order.
    let sum (tape: Tape) (a: Var) =
        let mutable s = 0.0f
        for v in a.Value.Data do
            s <- s + v
        let out = Var(Tensor.scalar s, a.RequiresGrad)
        if out.RequiresGrad then
            tape.Record(fun () -> accumulate a (Array.create a.Value.Length out.Grad[0]))
        out

    /// The mean of all elements (1 × 1).
    let mean (tape: Tape) (a: Var) =
        let n = float32 a.Value.Length
        let s = sum tape a
        let out = Var(Tensor.scalar (s.Value.Data[0] / n), s.RequiresGrad)
        if out.RequiresGrad then
            tape.Record(fun () -> s.Grad[0] <- s.Grad[0] + out.Grad[0] / n)
        out

    /// The activation applied element-wise.
    let activation (tape: Tape) (act: Activation) (a: Var) =
        let values = Array.zeroCreate a.Value.Length
        Activation.valueInto act (ReadOnlySpan a.Value.Data) (Span values)
        let out = Var(Tensor.ofArray a.Value.Rows a.Value.Cols values, a.RequiresGrad)
        if out.RequiresGrad then
            tape.Record(fun () -> Activation.accumulateGradient act (ReadOnlySpan a.Value.Data) (ReadOnlySpan out.Grad) (Span a.Grad))
        out

    /// Softmax probabilities of each row of logits, in float64 for stability, rounded to float32.
    let softmaxRows (logits: Tensor) =
        let p = Array.zeroCreate logits.Length
        for i in 0 .. logits.Rows - 1 do
            let o = i * logits.Cols
            let mutable m = Double.NegativeInfinity
            for j in 0 .. logits.Cols - 1 do
                m <- max m (float logits.Data[o + j])
            let mutable z = 0.0
            for j in 0 .. logits.Cols - 1 do
                z <- z + exp (float logits.Data[o + j] - m)
            for j in 0 .. logits.Cols - 1 do
                p[o + j] <- float32 (exp (float logits.Data[o + j] - m) / z)
        Tensor.ofArray logits.Rows logits.Cols p

    /// Softmax cross-entropy of each row against its class label, weighted like PyTorch's CrossEntropyLoss:
    /// Σᵢ w[yᵢ]·(−log pᵢ[yᵢ]) / Σᵢ w[yᵢ]. Pass weights of 1 for the unweighted mean.
    let softmaxCrossEntropy (tape: Tape) (logits: Var) (labels: int[]) (classWeights: float32[]) =
        let t = logits.Value
        Guard.sameLength "labels" t.Rows labels.Length
        Guard.sameLength "classWeights" t.Cols classWeights.Length
        let p = softmaxRows t
        let mutable total = 0.0
        let mutable weightSum = 0.0
        for i in 0 .. t.Rows - 1 do
            let o = i * t.Cols
            let mutable m = Double.NegativeInfinity
            for j in 0 .. t.Cols - 1 do
                m <- max m (float t.Data[o + j])
            let mutable z = 0.0
            for j in 0 .. t.Cols - 1 do
                z <- z + exp (float t.Data[o + j] - m)
            let w = float classWeights[labels[i]]
            total <- total + w * (log z + m - float t.Data[o + labels[i]])
            weightSum <- weightSum + w
        let out = Var(Tensor.scalar (float32 (total / weightSum)), logits.RequiresGrad)
        if out.RequiresGrad then
            tape.Record(fun () ->
                let scale = float out.Grad[0] / weightSum
                let g = Array.zeroCreate t.Length
                for i in 0 .. t.Rows - 1 do
                    let w = float classWeights[labels[i]] * scale
                    for j in 0 .. t.Cols - 1 do
                        let k = i * t.Cols + j
                        let target = if j = labels[i] then 1.0 else 0.0
                        g[k] <- float32 (w * (float p.Data[k] - target))
                accumulate logits g)
        out

    /// Mean squared error over all elements: mean((prediction − target)²).
    let meanSquaredError (tape: Tape) (prediction: Var) (target: Tensor) =
        sameShape "target" prediction.Value target
        let n = prediction.Value.Length
        let mutable s = 0.0
        for k in 0 .. n - 1 do
            let d = float (prediction.Value.Data[k] - target.Data[k])
            s <- s + d * d
        let out = Var(Tensor.scalar (float32 (s / float n)), prediction.RequiresGrad)
        if out.RequiresGrad then
            tape.Record(fun () ->
                let c = 2.0f * out.Grad[0] / float32 n
                accumulate prediction (Array.init n (fun k -> c * (prediction.Value.Data[k] - target.Data[k]))))
        out

    /// x · Π 2^θᵢ (each θᵢ a 1 × 1 variable), the step back from integer codes to real values.
    /// ∂/∂x = s; ∂/∂θᵢ = ln 2 · s · Σ g·x.
    let scaleExp2 (tape: Tape) (powerOfTwo: bool) (x: Var) (log2Scales: Var list) =
        let s = Exp2Scale.product powerOfTwo (log2Scales |> List.map (fun v -> v.Value.Data[0]))
        let data = Array.zeroCreate x.Value.Length
        TensorPrimitives.Multiply(ReadOnlySpan x.Value.Data, s, Span data)
        let out = Var(Tensor.ofArray x.Value.Rows x.Value.Cols data, needs (x :: log2Scales))
        if out.RequiresGrad then
            tape.Record(fun () ->
                let g = out.Grad
                if x.RequiresGrad then
                    let gx = x.Grad
                    for k in 0 .. g.Length - 1 do
                        gx[k] <- gx[k] + g[k] * s
                if needs log2Scales then
                    let mutable gx = 0.0
                    for k in 0 .. g.Length - 1 do
                        gx <- gx + float g[k] * float x.Value.Data[k]
                    let d = float32 (Math.Log 2.0 * float s * gx)
                    for t in log2Scales do
                        if t.RequiresGrad then t.Grad[0] <- t.Grad[0] + d)
        out

    /// Integer codes q = clip(round(x / s), qmin, qmax) with s = Π 2^θᵢ, as float32.
    /// Straight-through gradients (LSQ): inside the range ∂q/∂x = 1/s and ∂q/∂θᵢ = −ln 2 · x/s; outside, both 0.
    /// Followed by <c>scaleExp2</c> with the same scales this is fake quantization with the LSQ scale gradient.
    let quantize (tape: Tape) (powerOfTwo: bool) (spec: CodeSpec) (x: Var) (log2Scales: Var list) =
        let s = Exp2Scale.product powerOfTwo (log2Scales |> List.map (fun v -> v.Value.Data[0]))
        let xs = x.Value.Data
        let codes = Array.zeroCreate xs.Length
        for k in 0 .. xs.Length - 1 do
            codes[k] <- CodeSpec.code spec (xs[k] / s)
        let out = Var(Tensor.ofArray x.Value.Rows x.Value.Cols codes, needs (x :: log2Scales))
        if out.RequiresGrad then
            tape.Record(fun () ->
                let g = out.Grad
                let lo, hi = float32 spec.QMin, float32 spec.QMax
                let gx = if x.RequiresGrad then x.Grad else Array.empty
                let mutable d = 0.0
                for k in 0 .. g.Length - 1 do
                    let v = xs[k] / s
                    if v >= lo && v <= hi then
                        if x.RequiresGrad then gx[k] <- gx[k] + g[k] / s
                        d <- d - float g[k] * float v
                if needs log2Scales then
                    let d = float32 (Math.Log 2.0 * d)
                    for t in log2Scales do
                        if t.RequiresGrad then t.Grad[0] <- t.Grad[0] + d)
        out

    /// A float linear layer x·Wᵀ + b in one operation (W out × in, b 1 × out), equal to
    /// add (matmul x (transpose W)) b, reusing weight-sized arrays from <c>buffers</c> between steps.
    let linear (tape: Tape) (x: Var) (weight: Var) (bias: Var) (buffers: LinearBuffers option) =
        let xv, w = x.Value, weight.Value
        if w.Cols <> xv.Cols then
            raise (InvalidShapeException("weight", $"has %d{w.Cols} inputs but x has %d{xv.Cols} columns"))
        if bias.Value.Rows <> 1 || bias.Value.Cols <> w.Rows then
            raise (InvalidShapeException("bias", $"must be 1 × %d{w.Rows}"))
        let buffer slot length =
            match buffers with
            | Some b -> b.Get(slot, length)
            | None -> Array.zeroCreate length
        let m, n = xv.Rows, w.Rows
        let y = Tensor.matmul tape.Threads xv (Tensor.transposeInto w (buffer 2 w.Length))
        for i in 0 .. m - 1 do
            for j in 0 .. n - 1 do
                y.Data[i * n + j] <- y.Data[i * n + j] + bias.Value.Data[j]
        let out = Var(y, needs [ x; weight; bias ])
        if out.RequiresGrad then
            tape.Record(fun () ->
                let g = Tensor.ofArray m n out.Grad
                if x.RequiresGrad then accumulate x (Tensor.matmul tape.Threads g w).Data
                if weight.RequiresGrad then
                    accumulate weight (Tensor.matmulInto tape.Threads (Tensor.transpose g) xv (buffer 3 w.Length)).Data
                if bias.RequiresGrad then accumulate bias (Tensor.sumRows g).Data)
        out

    /// The straight-through part of a quantizer's backward pass, 256 bits at a time. With v = values[i] · invScale,
    /// where qmin <= v <= qmax: adds upstream[i] · invScale (times mask[i] when a mask is given) to grad[i] (when
    /// grad is not empty), and returns Σ upstream[i] · v over those i (for the scale's LSQ gradient).
    let private straightThrough
        (values: float32[])
        (invScale: float32)
        (lo: float32)
        (hi: float32)
        (upstream: float32[])
        (mask: float32[])
        (grad: float32[])
        =
        let n = values.Length
        let writes = grad.Length > 0
        let masked = mask.Length > 0
        let mutable total = Vector256<float32>.Zero
        let mutable i = 0
        if Vector256.IsHardwareAccelerated then
            let width = Vector256<float32>.Count
            let vs = MemoryMarshal.Cast<float32, Vector256<float32>>(Span<float32>(values, 0, n / width * width))
            let us = MemoryMarshal.Cast<float32, Vector256<float32>>(Span<float32>(upstream, 0, n / width * width))
            let inv, vlo, vhi = Vector256.Create invScale, Vector256.Create lo, Vector256.Create hi
            for b in 0 .. vs.Length - 1 do
                let v = vs[b] * inv
                let inside = Vector256.BitwiseAnd(Vector256.GreaterThanOrEqual(v, vlo), Vector256.LessThanOrEqual(v, vhi))
                let u = us[b]
                total <- total + Vector256.ConditionalSelect(inside, u * v, Vector256<float32>.Zero)
                if writes then
                    let gs = MemoryMarshal.Cast<float32, Vector256<float32>>(Span<float32>(grad, b * width, width))
                    let step = u * inv
                    let step =
                        if masked then
                            step * Vector256.Create<float32>(values = ReadOnlySpan<float32>(mask, b * width, width))
                        else
                            step
                    gs[0] <- gs[0] + Vector256.ConditionalSelect(inside, step, Vector256<float32>.Zero)
            i <- vs.Length * width
        let mutable tail = 0.0f
        while i < n do
            let v = values[i] * invScale
            if v >= lo && v <= hi then
                tail <- tail + upstream[i] * v
                if writes then
                    let step = upstream[i] * invScale
                    grad[i] <- grad[i] + (if masked then step * mask[i] else step)
            i <- i + 1
        float (Vector256.Sum total) + float tail

    /// A quantized linear layer in one operation, equal to the composition
    ///     scaleExp2 (matmul (quantize x [θx]) (transpose (quantize (W ⊙ mask) [θw])) + quantize b [θx; θw]) [θx; θw]
    /// with the same straight-through / LSQ gradients (the bias code's scale s_x·s_w gets no gradient), but with
    /// a few passes over the weights instead of a dozen. W is out × in (a row per neuron); the mask (1 kept, 0
    /// pruned) is empty when nothing is pruned. Returns the output and the integer accumulators
    /// Σ q_x·q_w + q_b (exact float32 integers below 2^24).
    let quantizedLinear
        (tape: Tape)
        (powerOfTwo: bool)
        (inputCodes: CodeSpec)
        (weightCodes: CodeSpec)
        (biasCodes: CodeSpec)
        (x: Var)
        (weight: Var)
        (mask: float32[])
        (bias: Var)
        (inputLog2Scale: Var)
        (weightLog2Scale: Var)
        (buffers: LinearBuffers option)
        : struct (Var * Tensor) =
        let xv, w = x.Value, weight.Value
        if w.Cols <> xv.Cols then
            raise (InvalidShapeException("weight", $"has %d{w.Cols} inputs but x has %d{xv.Cols} columns"))
        if bias.Value.Rows <> 1 || bias.Value.Cols <> w.Rows then
            raise (InvalidShapeException("bias", $"must be 1 × %d{w.Rows}"))
        let m, k, n = xv.Rows, xv.Cols, w.Rows
        let sx = Exp2Scale.value powerOfTwo inputLog2Scale.Value.Data[0]
        let sw = Exp2Scale.value powerOfTwo weightLog2Scale.Value.Data[0]
        let s = Exp2Scale.product powerOfTwo [ inputLog2Scale.Value.Data[0]; weightLog2Scale.Value.Data[0] ]
        let qx = Array.zeroCreate (m * k)
        CodeSpec.codesInto inputCodes sx xv.Data qx
        let hasMask = mask.Length > 0
        let buffer slot length =
            match buffers with
            | Some b -> b.Get(slot, length)
            | None -> Array.zeroCreate length
        let effective =
            if hasMask then
                let e = buffer 0 w.Length
                TensorPrimitives.Multiply(ReadOnlySpan w.Data, ReadOnlySpan mask, Span e)
                e
            else
                w.Data
        let qw = buffer 1 (n * k)
        CodeSpec.codesInto weightCodes sw effective qw
        let qb = bias.Value.Data |> Array.map (fun b -> CodeSpec.code biasCodes (b / s))
        let qwT = Tensor.transposeInto (Tensor.ofArray n k qw) (buffer 2 (n * k))
        let acc = Tensor.matmul tape.Threads (Tensor.ofArray m k qx) qwT
        for i in 0 .. m - 1 do
            let o = i * n
            for j in 0 .. n - 1 do
                acc.Data[o + j] <- acc.Data[o + j] + qb[j]
        let y = Array.zeroCreate acc.Length
        TensorPrimitives.Multiply(ReadOnlySpan acc.Data, s, Span y)
        let scales = [ inputLog2Scale; weightLog2Scale ]
        let out = Var(Tensor.ofArray m n y, needs ([ x; weight; bias ] @ scales))
        if out.RequiresGrad then
            tape.Record(fun () ->
                let gy = out.Grad
                let ln2 = Math.Log 2.0
                // Through the final scaling: ∂y/∂acc = s, ∂y/∂θ = ln 2 · s · acc.
                let gAcc = Array.zeroCreate gy.Length
                let mutable gScale = 0.0
                for i in 0 .. gy.Length - 1 do
                    gAcc[i] <- gy[i] * s
                    gScale <- gScale + float gy[i] * float acc.Data[i]
                let gScale = ln2 * float s * gScale
                let mutable gx = gScale
                let mutable gw = gScale
                let gAccT = Tensor.ofArray m n gAcc
                if x.RequiresGrad || inputLog2Scale.RequiresGrad then
                    let gqx = Tensor.matmul tape.Threads gAccT (Tensor.ofArray n k qw)
                    let dx = if x.RequiresGrad then x.Grad else Array.empty
                    let lo, hi = float32 inputCodes.QMin, float32 inputCodes.QMax
                    gx <- gx - ln2 * straightThrough xv.Data (1.0f / sx) lo hi gqx.Data Array.empty dx
                if weight.RequiresGrad || weightLog2Scale.RequiresGrad then
                    let gqw = Tensor.matmulInto tape.Threads (Tensor.transpose gAccT) (Tensor.ofArray m k qx) (buffer 3 (n * k))
                    let dw = if weight.RequiresGrad then weight.Grad else Array.empty
                    let lo, hi = float32 weightCodes.QMin, float32 weightCodes.QMax
                    gw <- gw - ln2 * straightThrough effective (1.0f / sw) lo hi gqw.Data mask dw
                if bias.RequiresGrad then
                    let db = bias.Grad
                    let lo, hi = float32 biasCodes.QMin, float32 biasCodes.QMax
                    let sums = Tensor.sumRows gAccT
                    for j in 0 .. n - 1 do
                        let v = bias.Value.Data[j] / s
                        if v >= lo && v <= hi then
                            db[j] <- db[j] + sums.Data[j] / s
                if inputLog2Scale.RequiresGrad then
                    inputLog2Scale.Grad[0] <- inputLog2Scale.Grad[0] + float32 gx
                if weightLog2Scale.RequiresGrad then
                    weightLog2Scale.Grad[0] <- weightLog2Scale.Grad[0] + float32 gw)
        struct (out, acc)

    /// The same value with no gradient flowing back (a constant copy).
    let detach (x: Var) = constant x.Value
