module FheNet.Tests.Quantization.CalibrationTests

open System
open Expecto
open FsCheck.FSharp
open FheNet
open FheNet.Quantization
open FheNet.Tests.Generators

/// Samples of mixed sign and magnitude, never all zero.
let private samples =
    gen {
        let! n = Gen.choose (1, 200)
        let! values = Gen.arrayOfLength n (Gen.choose (-100_000, 100_000))
        let! magnitude = Gen.choose (-6, 6)
        return values |> Array.map (fun v -> float32 (float v * 1e-5 * 10.0 ** float magnitude))
    }
    |> Gen.filter (Array.exists (fun x -> x <> 0.0f))

let private settings =
    gen {
        let! bits = Gen.choose (2, 12)
        let! signed = Gen.elements [ true; false ]
        let! data = samples
        return bits, signed, data
    }

let private mse (q: Quantizer) (data: float32[]) =
    data
    |> Array.averageBy (fun x ->
        let e = float x - Quantizer.dequantize q (Quantizer.quantize q (float x))
        e * e)

[<Tests>]
let tests =
    testList
        "Quantization.Calibration"
        [ testProperty "max-abs calibration clips nothing"
          <| forAll settings (fun (bits, signed, data) ->
              let q = Calibration.calibrate Calibrator.MaxAbs bits signed false false data
              let s = q.Scale.Value
              data
              |> Array.forall (fun x ->
                  let target = if signed then float x else max 0.0 (float x)
                  abs (Quantizer.dequantize q (Quantizer.quantize q (float x)) - target) <= s / 2.0 * (1.0 + 1e-9)))

          testProperty "a power-of-two scale covers at least the real one and less than twice it"
          <| forAll settings (fun (bits, signed, data) ->
              let real = (Calibration.calibrate Calibrator.MaxAbs bits signed false false data).Scale.Value
              match (Calibration.calibrate Calibrator.MaxAbs bits signed false true data).Scale with
              | Scale.PowerOfTwo j ->
                  let p = Math.ScaleB(1.0, j)
                  p >= real && p < 2.0 * real
              | Scale.Real _ -> false)

          testProperty "the 100th percentile is the max-abs threshold"
          <| forAll settings (fun (bits, signed, data) ->
              let template = Quantizer.symmetric bits signed false (Scale.Real 1.0)
              Calibration.threshold (Calibrator.Percentile 100.0) template data = Calibration.threshold Calibrator.MaxAbs template data)

          testProperty "percentile thresholds grow with the percentile"
          <| forAll settings (fun (bits, signed, data) ->
              let template = Quantizer.symmetric bits signed false (Scale.Real 1.0)
              let t p = Calibration.threshold (Calibrator.Percentile p) template data
              t 50.0 <= t 90.0 && t 90.0 <= t 99.0 && t 99.0 <= t 100.0)

          testProperty "MSE-optimal clipping is never worse than max-abs"
          <| forAll settings (fun (bits, signed, data) ->
              let maxAbs = Calibration.calibrate Calibrator.MaxAbs bits signed false false data
              let best = Calibration.calibrate (Calibrator.MinMse 64) bits signed false false data
              mse best data <= mse maxAbs data * (1.0 + 1e-12))

          test "MSE-optimal clipping cuts a lone outlier" {
              // 999 values in [-1, 1] and one at 5: covering 5 with 3 bits (step 5/3) rounds the whole bulk to 0.
              let data = Array.append (Array.init 999 (fun i -> float32 (i % 201 - 100) / 100.0f)) [| 5.0f |]
              let template = Quantizer.symmetric 3 true false (Scale.Real 1.0)
              let t = Calibration.threshold (Calibrator.MinMse 200) template data
              Expect.isLessThan t 2.5 "threshold well below the outlier"
              Expect.isGreaterThan t 0.5 "threshold still covers the bulk"
          }

          testProperty "min-max calibration represents zero exactly"
          <| forAll settings (fun (bits, _, data) ->
              let q = Calibration.minMax bits data
              Quantizer.dequantize q (Quantizer.quantize q 0.0) = 0.0)

          test "all-zero data gets scale 1" {
              let q = Calibration.calibrate Calibrator.MaxAbs 4 true false false [| 0.0f; 0.0f |]
              Expect.equal q.Scale (Scale.Real 1.0) "any scale is exact; 1 is the documented choice"
          }

          test "empty, NaN and infinite data raise typed errors" {
              let run data =
                  Calibration.calibrate Calibrator.MaxAbs 4 true false false data |> ignore
              Expect.throwsT<InvalidShapeException> (fun () -> run [||]) "empty"
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> run [| 1.0f; nanf |]) "NaN"
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> run [| infinityf |]) "infinity"
              Expect.throwsT<ParameterOutOfRangeException>
                  (fun () -> Calibration.calibrate (Calibrator.Percentile 0.0) 4 true false false [| 1.0f |] |> ignore)
                  "percentile 0"
          } ]
