namespace FheNet.Quantization

open System
open FheNet

/// How a per-tensor scale is chosen from sample values.
[<RequireQualifiedAccess>]
type Calibrator =
    /// The range covers the largest magnitude seen: nothing clips.
    | MaxAbs
    /// The range covers the given percentile (in (0, 100]) of the magnitudes; outliers clip.
    | Percentile of percent: float
    /// The clipping threshold that minimises the mean squared quantization error, searched over
    /// <c>candidates</c> evenly spaced thresholds up to the largest magnitude.
    | MinMse of candidates: int

/// Per-tensor calibration of symmetric quantizers, and power-of-two rounding of their scales.
module Calibration =

    /// Used when every sample is zero: any scale represents the data exactly, and 1 keeps later maths finite.
    let private scaleForZeroRange = 1.0

    /// Largest magnitude a symmetric quantizer must cover: |x| for signed codes, max(x, 0) for unsigned ones
    /// (negative values clip to code 0).
    let private magnitude signed (x: float32) =
        if signed then abs (float x) else max (float x) 0.0

    let private checkData (data: float32[]) =
        Guard.nonEmpty "data" data.Length
        Guard.allFinite "data" (ReadOnlySpan data)

    /// Value at percentile p (0 < p <= 100) of sorted values, with linear interpolation between ranks.
    let private percentileOfSorted (sorted: float[]) (p: float) =
        let rank = p / 100.0 * float (sorted.Length - 1)
        let lo = int (floor rank)
        let hi = min (lo + 1) (sorted.Length - 1)
        sorted[lo] + (rank - float lo) * (sorted[hi] - sorted[lo])

    let private meanSquaredError (q: Quantizer) (data: float32[]) =
        let mutable sum = 0.0
        for x in data do
            let e = float x - Quantizer.dequantize q (Quantizer.quantize q (float x))
            sum <- sum + e * e
        sum / float data.Length

    /// A threshold t becomes the scale t / qmax, so that the largest positive code lands on t.
    let private scaleFor (template: Quantizer) (threshold: float) =
        if threshold > 0.0 then
            Scale.Real(threshold / float template.QMax)
        else
            Scale.Real scaleForZeroRange

    /// The clipping threshold chosen by a calibrator for the given codes.
    let threshold (calibrator: Calibrator) (template: Quantizer) (data: float32[]) : float =
        checkData data
        let magnitudes = data |> Array.map (magnitude template.Signed)
        let maxAbs = Array.max magnitudes
        match calibrator with
        | Calibrator.MaxAbs -> maxAbs
        | Calibrator.Percentile p ->
            if not (p > 0.0 && p <= 100.0) then
                raise (ParameterOutOfRangeException("percent", p, "a percentile in (0, 100]"))
            percentileOfSorted (Array.sort magnitudes) p
        | Calibrator.MinMse candidates ->
            Guard.inRange "candidates" 1 100_000 candidates
            if maxAbs = 0.0 then
                0.0
            else
                seq { 1..candidates }
                |> Seq.map (fun k -> maxAbs * float k / float candidates)
                |> Seq.minBy (fun t -> meanSquaredError (Quantizer.withScale (scaleFor template t) template) data)

    /// A symmetric quantizer calibrated on sample values; with <c>powerOfTwo</c> its scale is rounded up to
    /// 2^ceil(log2 s), which never shrinks the covered range.
    let calibrate
        (calibrator: Calibrator)
        (bits: int)
        (signed: bool)
        (narrowRange: bool)
        (powerOfTwo: bool)
        (data: float32[])
        : Quantizer =
        let template = Quantizer.symmetric bits signed narrowRange (Scale.Real 1.0)
        let scale = scaleFor template (threshold calibrator template data)
        let scale = if powerOfTwo then scale.RoundedUpToPowerOfTwo else scale
        Quantizer.withScale scale template

    /// An asymmetric unsigned quantizer spanning [min(x, 0), max(x, 0)]: zero is always exactly representable.
    let minMax (bits: int) (data: float32[]) : Quantizer =
        checkData data
        let lo = min 0.0 (float (Array.min data))
        let hi = max 0.0 (float (Array.max data))
        let template = Quantizer.create bits false false (Scale.Real 1.0) 0
        let span = hi - lo
        if span = 0.0 then
            template
        else
            let scale = span / float template.QMax
            let zeroPoint = Math.Clamp(int (Math.Round(-lo / scale, MidpointRounding.ToEven)), 0, template.QMax)
            Quantizer.create bits false false (Scale.Real scale) zeroPoint
