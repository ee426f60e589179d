module FheNet.Tests.Quantization.QuantizerTests

open System
open Expecto
open FsCheck.FSharp
open FheNet
open FheNet.Quantization
open FheNet.Tests.Generators

let private withValue spread =
    gen {
        let! q = quantizer
        let! x = valueNear q spread
        return q, x
    }

let private withTwoValues =
    gen {
        let! q = quantizer
        let! x = valueNear q 1.5
        let! y = valueNear q 1.5
        return q, min x y, max x y
    }

let private withCode =
    gen {
        let! q = quantizer
        let! code = Gen.choose (q.QMin, q.QMax)
        return q, code
    }

[<Tests>]
let tests =
    testList
        "Quantization.Quantizer"
        [ testProperty "round trip is within scale/2 inside the representable range"
          <| forAll (withValue 0.999) (fun (q, x) ->
              let s = q.Scale.Value
              let error = abs (Quantizer.dequantize q (Quantizer.quantize q x) - x)
              // Half a step, plus the float rounding of x / s and of the product back.
              error <= s / 2.0 + 1e-12 * (abs x + s))

          testProperty "codes always lie in [qmin, qmax], infinities included"
          <| forAll (withValue 4.0) (fun (q, x) ->
              [ x; Double.PositiveInfinity; Double.NegativeInfinity; Double.MaxValue; -Double.MaxValue ]
              |> List.forall (fun v ->
                  let code = Quantizer.quantize q v
                  code >= q.QMin && code <= q.QMax))

          testProperty "quantize is monotone"
          <| forAll withTwoValues (fun (q, x, y) -> Quantizer.quantize q x <= Quantizer.quantize q y)

          testProperty "quantize ∘ dequantize is the identity on codes"
          <| forAll withCode (fun (q, code) -> Quantizer.quantize q (Quantizer.dequantize q code) = code)

          testProperty "a power-of-two scale is exactly 2^j"
          <| forAll (Gen.choose (Scale.MinExponent, Scale.MaxExponent)) (fun j ->
              let v = (Scale.PowerOfTwo j).Value
              let bits = BitConverter.DoubleToInt64Bits v
              // Mantissa all zero and the biased exponent equal to j: nothing but 2^j.
              bits &&& 0xFFFFFFFFFFFFFL = 0L && int ((bits >>> 52) &&& 0x7FFL) - 1023 = j)

          testProperty "rounding a scale up to a power of two gives the smallest 2^j >= s"
          <| forAll (Gen.choose (1, Int32.MaxValue)) (fun k ->
              let s = float k * 1e-6
              match (Scale.Real s).RoundedUpToPowerOfTwo with
              | Scale.PowerOfTwo j -> Math.ScaleB(1.0, j) >= s && Math.ScaleB(1.0, j - 1) < s
              | Scale.Real _ -> false)

          testProperty "the array path equals the scalar path"
          <| forAll (withValue 2.0) (fun (q, x) ->
              let values = [| float32 x; float32 (-x); 0.0f; float32 (x / 3.0) |]
              let codes = Quantizer.quantizeArray q values
              let back = Quantizer.dequantizeArray q codes
              codes = Array.map (float >> Quantizer.quantize q) values
              && back = Array.map (Quantizer.dequantize q >> float32) codes)

          test "ties round half to even" {
              let q = Quantizer.symmetric 8 true false (Scale.PowerOfTwo -1)
              let codes = [ -1.25; -0.75; -0.25; 0.25; 0.75; 1.25 ] |> List.map (Quantizer.quantize q)
              Expect.equal codes [ -2; -2; 0; 0; 2; 2 ] "x / 0.5 = ±2.5, ±1.5, ±0.5 round to the even neighbour"
          }

          test "code ranges follow signedness and narrow range" {
              let range bits signed narrow =
                  let q = Quantizer.symmetric bits signed narrow (Scale.Real 1.0)
                  q.QMin, q.QMax
              Expect.equal (range 3 true false) (-4, 3) "signed 3-bit"
              Expect.equal (range 3 true true) (-3, 3) "signed narrow 3-bit"
              Expect.equal (range 3 false false) (0, 7) "unsigned 3-bit"
              Expect.equal (range 3 false true) (0, 6) "unsigned narrow 3-bit"
              Expect.equal (range 16 true false) (-32768, 32767) "signed 16-bit"
              Expect.equal (range 1 false false) (0, 1) "unsigned 1-bit"
          }

          test "invalid bit-widths, scales and zero points raise typed errors naming the argument" {
              let fails name f =
                  try
                      f () |> ignore
                      failtest $"%s{name}: no exception"
                  with :? ParameterOutOfRangeException as e ->
                      Expect.equal e.ParamName name "the exception names the argument"
                      Expect.stringContains e.Message "expected" "the message says what is allowed"
              fails "bits" (fun () -> Quantizer.symmetric 0 true false (Scale.Real 1.0))
              fails "bits" (fun () -> Quantizer.symmetric 17 false false (Scale.Real 1.0))
              fails "bits" (fun () -> Quantizer.symmetric 1 true true (Scale.Real 1.0))
              fails "scale" (fun () -> Quantizer.symmetric 4 true false (Scale.Real 0.0))
              fails "scale" (fun () -> Quantizer.symmetric 4 true false (Scale.Real -1.0))
              fails "scale" (fun () -> Quantizer.symmetric 4 true false (Scale.Real nan))
              fails "scale" (fun () -> Quantizer.symmetric 4 true false (Scale.Real infinity))
              fails "scale" (fun () -> Quantizer.symmetric 4 true false (Scale.PowerOfTwo 200))
              fails "zeroPoint" (fun () -> Quantizer.create 4 false false (Scale.Real 1.0) 16)
          }

          test "NaN has no code" {
              let q = Quantizer.symmetric 4 true false (Scale.Real 1.0)
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> Quantizer.quantize q nan |> ignore) "scalar"
              Expect.throwsT<ParameterOutOfRangeException>
                  (fun () -> Quantizer.quantizeArray q [| 1.0f; nanf |] |> ignore)
                  "array"
          }

          test "mismatched span lengths raise InvalidShapeException" {
              let q = Quantizer.symmetric 4 true false (Scale.Real 1.0)
              Expect.throwsT<InvalidShapeException>
                  (fun () -> Quantizer.quantizeInto q (ReadOnlySpan [| 1.0f; 2.0f |]) (Span(Array.zeroCreate<int> 3)))
                  "codes shorter or longer than values"
          } ]
