namespace FheNet.Autodiff

open System
open FheNet

/// The activation functions of the hidden layers (the names of PyTorch's torch.nn classes).
/// Each is evaluated in float64 and rounded once to float32, so the training forward pass, the integer model's
/// lookup tables and the float64 gradient checks all evaluate the very same function.
[<RequireQualifiedAccess>]
type Activation =
    | ReLU
    | ReLU6
    /// Negative slope 0.01.
    | LeakyReLU
    /// PReLU with its slope fixed at PyTorch's initial value 0.25.
    | PReLU
    | ELU
    | SELU
    | CELU
    /// The exact (erf) form.
    | GELU
    | SiLU
    | Mish
    | Sigmoid
    | Tanh
    | Hardtanh
    | Hardsigmoid
    | Hardswish
    | Softplus
    | Softsign
    | Tanhshrink
    | LogSigmoid
    | Identity

/// Forward values and derivatives of the activations.
module Activation =

    /// Every activation, in declaration order.
    let all =
        [ Activation.ReLU; Activation.ReLU6; Activation.LeakyReLU; Activation.PReLU; Activation.ELU
          Activation.SELU; Activation.CELU; Activation.GELU; Activation.SiLU; Activation.Mish
          Activation.Sigmoid; Activation.Tanh; Activation.Hardtanh; Activation.Hardsigmoid
          Activation.Hardswish; Activation.Softplus; Activation.Softsign; Activation.Tanhshrink
          Activation.LogSigmoid; Activation.Identity ]

    /// The name as PyTorch spells it ("ReLU", "GELU", …).
    let name (a: Activation) = sprintf "%A" a

    /// Parses a name, case-insensitively, with or without a "nn." / "torch.nn." prefix.
    let parse (text: string) =
        let bare = text.Trim()
        let bare = if bare.Contains '.' then bare.Substring(bare.LastIndexOf '.' + 1) else bare
        match all |> List.tryFind (fun a -> String.Equals(name a, bare, StringComparison.OrdinalIgnoreCase)) with
        | Some a -> a
        | None ->
            let names = all |> List.map name |> String.concat ", "
            raise (ParameterOutOfRangeException("activation", text, $"one of %s{names}"))

    /// True when every output is >= 0, so the next layer's codes can be unsigned.
    let isNonNegative (a: Activation) =
        match a with
        | Activation.ReLU
        | Activation.ReLU6
        | Activation.Sigmoid
        | Activation.Hardsigmoid
        | Activation.Softplus -> true
        | _ -> false

    let private seluAlpha = 1.6732632423543772
    let private seluScale = 1.0507009873554805
    let private leakySlope = 0.01
    let private preluSlope = 0.25

    /// erf from MathNet.Numerics (accurate to about 1e-15).
    let private erf (x: float) = MathNet.Numerics.SpecialFunctions.Erf x

    let private sigmoid (x: float) =
        if x >= 0.0 then 1.0 / (1.0 + exp -x) else let e = exp x in e / (1.0 + e)

    /// log(1 + e^x) without overflow.
    let private softplus (x: float) =
        if x > 30.0 then x else if x < -30.0 then exp x else log (1.0 + exp x)

    /// The activation in float64.
    let value64 (a: Activation) (x: float) : float =
        match a with
        | Activation.ReLU -> max x 0.0
        | Activation.ReLU6 -> min (max x 0.0) 6.0
        | Activation.LeakyReLU -> if x >= 0.0 then x else leakySlope * x
        | Activation.PReLU -> if x >= 0.0 then x else preluSlope * x
        | Activation.ELU -> if x > 0.0 then x else exp x - 1.0
        | Activation.SELU -> seluScale * (if x > 0.0 then x else seluAlpha * (exp x - 1.0))
        | Activation.CELU -> if x > 0.0 then x else exp x - 1.0
        | Activation.GELU -> 0.5 * x * (1.0 + erf (x / sqrt 2.0))
        | Activation.SiLU -> x * sigmoid x
        | Activation.Mish -> x * tanh (softplus x)
        | Activation.Sigmoid -> sigmoid x
        | Activation.Tanh -> tanh x
        | Activation.Hardtanh -> min (max x -1.0) 1.0
        | Activation.Hardsigmoid -> min (max (x / 6.0 + 0.5) 0.0) 1.0
        | Activation.Hardswish -> x * min (max (x + 3.0) 0.0) 6.0 / 6.0
        | Activation.Softplus -> softplus x
        | Activation.Softsign -> x / (1.0 + abs x)
        | Activation.Tanhshrink -> x - tanh x
        | Activation.LogSigmoid -> -(softplus -x)
        | Activation.Identity -> x

    /// The derivative in float64 (at kinks, the right-hand derivative, as PyTorch uses 0 for ReLU at 0: the left one).
    let derivative64 (a: Activation) (x: float) : float =
        match a with
        | Activation.ReLU -> if x > 0.0 then 1.0 else 0.0
        | Activation.ReLU6 -> if x > 0.0 && x < 6.0 then 1.0 else 0.0
        | Activation.LeakyReLU -> if x >= 0.0 then 1.0 else leakySlope
        | Activation.PReLU -> if x >= 0.0 then 1.0 else preluSlope
        | Activation.ELU
        | Activation.CELU -> if x > 0.0 then 1.0 else exp x
        | Activation.SELU -> seluScale * (if x > 0.0 then 1.0 else seluAlpha * exp x)
        | Activation.GELU ->
            let pdf = exp (-0.5 * x * x) / sqrt (2.0 * Math.PI)
            0.5 * (1.0 + erf (x / sqrt 2.0)) + x * pdf
        | Activation.SiLU ->
            let s = sigmoid x
            s * (1.0 + x * (1.0 - s))
        | Activation.Mish ->
            let t = tanh (softplus x)
            t + x * (1.0 - t * t) * sigmoid x
        | Activation.Sigmoid ->
            let s = sigmoid x
            s * (1.0 - s)
        | Activation.Tanh ->
            let t = tanh x
            1.0 - t * t
        | Activation.Hardtanh -> if x > -1.0 && x < 1.0 then 1.0 else 0.0
        | Activation.Hardsigmoid -> if x > -3.0 && x < 3.0 then 1.0 / 6.0 else 0.0
        | Activation.Hardswish ->
            if x <= -3.0 then 0.0
            else if x >= 3.0 then 1.0
            else (2.0 * x + 3.0) / 6.0
        | Activation.Softplus -> sigmoid x
        | Activation.Softsign -> 1.0 / ((1.0 + abs x) * (1.0 + abs x))
        | Activation.Tanhshrink ->
            let t = tanh x
            t * t
        | Activation.LogSigmoid -> sigmoid -x
        | Activation.Identity -> 1.0

    /// The activation of a float32 value: float64 evaluation rounded once to float32 (ReLU and Identity, exact in
    /// float32, skip the detour).
    let value (a: Activation) (x: float32) : float32 =
        match a with
        | Activation.ReLU -> if x > 0.0f then x else 0.0f
        | Activation.Identity -> x
        | _ -> float32 (value64 a (float x))

    /// The derivative at a float32 value, rounded to float32.
    let derivative (a: Activation) (x: float32) : float32 =
        match a with
        | Activation.ReLU -> if x > 0.0f then 1.0f else 0.0f
        | _ -> float32 (derivative64 a (float x))

    /// values[k] = value a x[k]. ReLU and Identity run as vector loops (they are most of a training step's
    /// element-wise work); the others call <c>value</c> per element.
    let valueInto (a: Activation) (x: ReadOnlySpan<float32>) (values: Span<float32>) =
        Guard.sameLength "values" x.Length values.Length
        match a with
        | Activation.Identity -> x.CopyTo values
        | Activation.ReLU ->
            let xs = Runtime.InteropServices.MemoryMarshal.Cast<float32, Numerics.Vector<float32>>(x)
            let vs = Runtime.InteropServices.MemoryMarshal.Cast<float32, Numerics.Vector<float32>>(values)
            let zero = Numerics.Vector<float32>.Zero
            for i in 0 .. xs.Length - 1 do
                vs[i] <- Numerics.Vector.ConditionalSelect(Numerics.Vector.GreaterThan(xs[i], zero), xs[i], zero)
            for k in xs.Length * Numerics.Vector<float32>.Count .. x.Length - 1 do
                values[k] <- value a x[k]
        | _ ->
            for k in 0 .. x.Length - 1 do
                values[k] <- value a x[k]

    /// inputGrad[k] += outputGrad[k] · derivative a x[k]: the backward pass of <c>valueInto</c>, ReLU and Identity
    /// as vector loops.
    let accumulateGradient (a: Activation) (x: ReadOnlySpan<float32>) (outputGrad: ReadOnlySpan<float32>) (inputGrad: Span<float32>) =
        Guard.sameLength "outputGrad" x.Length outputGrad.Length
        Guard.sameLength "inputGrad" x.Length inputGrad.Length
        match a with
        | Activation.Identity -> Numerics.Tensors.TensorPrimitives.Add(outputGrad, Span.op_Implicit inputGrad, inputGrad)
        | Activation.ReLU ->
            let xs = Runtime.InteropServices.MemoryMarshal.Cast<float32, Numerics.Vector<float32>>(x)
            let gs = Runtime.InteropServices.MemoryMarshal.Cast<float32, Numerics.Vector<float32>>(outputGrad)
            let acc = Runtime.InteropServices.MemoryMarshal.Cast<float32, Numerics.Vector<float32>>(inputGrad)
            let zero = Numerics.Vector<float32>.Zero
            for i in 0 .. xs.Length - 1 do
                acc[i] <- acc[i] + Numerics.Vector.ConditionalSelect(Numerics.Vector.GreaterThan(xs[i], zero), gs[i], zero)
            for k in xs.Length * Numerics.Vector<float32>.Count .. x.Length - 1 do
                inputGrad[k] <- inputGrad[k] + outputGrad[k] * derivative a x[k]
        | _ ->
            for k in 0 .. x.Length - 1 do
                inputGrad[k] <- inputGrad[k] + outputGrad[k] * derivative a x[k]
