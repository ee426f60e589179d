namespace FheNet.Quantization

open System
open FheNet

/// The step between two neighbouring integer codes. A power-of-two scale is kept as its exponent, so that
/// requantizing between two such scales is an exact shift of integers (what makes FHE inference cheap).
[<RequireQualifiedAccess>]
type Scale =
    /// Any positive finite step.
    | Real of float
    /// Exactly 2^exponent.
    | PowerOfTwo of exponent: int

    /// The step as a float; exact for a power of two.
    member this.Value =
        match this with
        | Real s -> s
        | PowerOfTwo j -> Math.ScaleB(1.0, j)

    /// The smallest power of two not below the step: 2^ceil(log2 s), computed exactly (no floating log).
    member this.RoundedUpToPowerOfTwo =
        match this with
        | PowerOfTwo _ -> this
        | Real s ->
            let e = Math.ILogB s
            if Math.ScaleB(1.0, e) = s then PowerOfTwo e else PowerOfTwo(e + 1)

module Scale =
    /// Exponents of power-of-two scales stay inside float32's normal range, since training runs in float32.
    [<Literal>]
    let MinExponent = -126

    [<Literal>]
    let MaxExponent = 127

    /// Validates a scale: a positive finite step, or an exponent inside float32's normal range.
    let validate (paramName: string) (scale: Scale) =
        match scale with
        | Scale.Real s -> Guard.positiveFinite paramName s
        | Scale.PowerOfTwo j -> Guard.inRange paramName MinExponent MaxExponent j

/// A uniform affine quantizer: x ↦ clip(round_half_even(x / scale) + zeroPoint, qmin, qmax), and back
/// q ↦ (q - zeroPoint) · scale. Build one with <see cref="M:FheNet.Quantization.QuantizerModule.create"/>, which
/// validates every field; a quantizer value is immutable.
///
/// Straight-through estimator (used by quantization-aware training): the forward pass is
/// dequantize(quantize x); the backward pass lets ∂L/∂x through unchanged where x/scale + zeroPoint lies inside
/// [qmin, qmax] and zeroes it outside (the clipped region). A learnable scale gets the LSQ gradient
/// ∂x̂/∂s = (q - zeroPoint) - x/s inside the range and qmin - zeroPoint or qmax - zeroPoint outside it.
type Quantizer =
    private
        { bits: int
          signed: bool
          narrowRange: bool
          scale: Scale
          zeroPoint: int }

    /// Bit-width of the integer codes (1..16).
    member q.Bits = q.bits
    /// True for two's-complement codes, false for codes in [0, 2^bits).
    member q.Signed = q.signed
    /// Drops the most negative signed code (symmetric range) or the top unsigned code.
    member q.NarrowRange = q.narrowRange
    /// The quantization step.
    member q.Scale = q.scale
    /// The code that represents 0.0 (0 for a symmetric quantizer).
    member q.ZeroPoint = q.zeroPoint

    /// Smallest integer code.
    member q.QMin =
        if q.signed then
            -(1 <<< (q.bits - 1)) + (if q.narrowRange then 1 else 0)
        else
            0

    /// Largest integer code.
    member q.QMax =
        if q.signed then
            (1 <<< (q.bits - 1)) - 1
        else
            (1 <<< q.bits) - 1 - (if q.narrowRange then 1 else 0)

    override q.ToString() =
        let kind = if q.signed then "int" else "uint"
        let scale =
            match q.scale with
            | Scale.Real s -> $"%g{s}"
            | Scale.PowerOfTwo j -> $"2^%d{j}"
        let narrow = if q.narrowRange then ", narrow" else ""
        $"Quantizer(%s{kind}%d{q.bits}%s{narrow}, scale=%s{scale}, zp=%d{q.zeroPoint})"

/// Construction and application of quantizers: pure functions over immutable values; the span overloads write
/// into a caller's buffer and allocate nothing.
module Quantizer =

    [<Literal>]
    let MinBits = 1

    [<Literal>]
    let MaxBits = 16

    let private codeRange bits signed narrow =
        let probe =
            { bits = bits
              signed = signed
              narrowRange = narrow
              scale = Scale.Real 1.0
              zeroPoint = 0 }
        probe.QMin, probe.QMax

    /// A validated quantizer. Bits in 1..16 (a signed narrow 1-bit range would be {0}, so it needs 2 bits);
    /// the scale positive and finite; the zero point inside the code range.
    let create (bits: int) (signed: bool) (narrowRange: bool) (scale: Scale) (zeroPoint: int) : Quantizer =
        Guard.inRange "bits" (if signed && narrowRange then 2 else MinBits) MaxBits bits
        Scale.validate "scale" scale
        let qmin, qmax = codeRange bits signed narrowRange
        Guard.inRange "zeroPoint" qmin qmax zeroPoint
        { bits = bits
          signed = signed
          narrowRange = narrowRange
          scale = scale
          zeroPoint = zeroPoint }

    /// A symmetric quantizer (zero point 0).
    let symmetric bits signed narrowRange scale = create bits signed narrowRange scale 0

    /// The same codes with another scale (validated).
    let withScale (scale: Scale) (q: Quantizer) =
        create q.Bits q.Signed q.NarrowRange scale q.ZeroPoint

    /// The real value x as an integer code: clip(round_half_even(x / scale) + zeroPoint, qmin, qmax).
    /// Infinities clip to the range ends; NaN has no code and raises.
    let quantize (q: Quantizer) (x: float) : int =
        if Double.IsNaN x then
            raise (ParameterOutOfRangeException("x", x, "a number (NaN has no integer code)"))
        let r = Math.Round(x / q.Scale.Value, MidpointRounding.ToEven) + float q.ZeroPoint
        int (Math.Clamp(r, float q.QMin, float q.QMax))

    /// The real value an integer code stands for: (code - zeroPoint) · scale. Codes outside the range are accepted,
    /// since integer accumulators at this scale are wider than the codes.
    let dequantize (q: Quantizer) (code: int) : float = float (code - q.ZeroPoint) * q.Scale.Value

    /// quantize applied element-wise, written into <c>codes</c> (same length as <c>values</c>); allocates nothing.
    let quantizeInto (q: Quantizer) (values: ReadOnlySpan<float32>) (codes: Span<int>) =
        Guard.sameLength "codes" values.Length codes.Length
        let s = q.Scale.Value
        let zp = float q.ZeroPoint
        let lo, hi = float q.QMin, float q.QMax
        for i in 0 .. values.Length - 1 do
            let x = float values[i]
            if Double.IsNaN x then
                raise (ParameterOutOfRangeException($"values[%d{i}]", x, "a number (NaN has no integer code)"))
            codes[i] <- int (Math.Clamp(Math.Round(x / s, MidpointRounding.ToEven) + zp, lo, hi))

    /// dequantize applied element-wise, written into <c>values</c>; allocates nothing.
    let dequantizeInto (q: Quantizer) (codes: ReadOnlySpan<int>) (values: Span<float32>) =
        Guard.sameLength "values" codes.Length values.Length
        let s = q.Scale.Value
        for i in 0 .. codes.Length - 1 do
            values[i] <- float32 (float (codes[i] - q.ZeroPoint) * s)

    /// quantize applied to an array, returning a new array of codes.
    let quantizeArray (q: Quantizer) (values: float32[]) : int[] =
        let codes = Array.zeroCreate values.Length
        quantizeInto q (ReadOnlySpan values) (Span codes)
        codes

    /// dequantize applied to an array of codes, returning a new array.
    let dequantizeArray (q: Quantizer) (codes: int[]) : float32[] =
        let values = Array.zeroCreate codes.Length
        dequantizeInto q (ReadOnlySpan codes) (Span values)
        values

    /// The real interval that maps to codes without clipping: [(qmin - zp - 1/2)·s, (qmax - zp + 1/2)·s].
    let representableRange (q: Quantizer) =
        let s = q.Scale.Value
        (float (q.QMin - q.ZeroPoint) - 0.5) * s, (float (q.QMax - q.ZeroPoint) + 0.5) * s
