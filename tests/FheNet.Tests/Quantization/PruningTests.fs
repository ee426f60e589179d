module FheNet.Tests.Quantization.PruningTests

open System
open Expecto
open FsCheck.FSharp
open FheNet.Quantization
open FheNet.Tests.Generators

let private codes bits signed =
    CodeRange.OfQuantizer(Quantizer.symmetric bits signed false (Scale.Real 1.0))

let private accLimits bits = -(1L <<< (bits - 1)), (1L <<< (bits - 1)) - 1L

/// Weight bits, input bits and signedness, an accumulator width and a bias bound that admit a fan-in of at least 1.
let private setting =
    gen {
        let! wBits = Gen.choose (2, 8)
        let! aBits = Gen.choose (2, 8)
        let! aSigned = Gen.elements [ true; false ]
        let! accBits = Gen.choose (wBits + aBits + 1, 24)
        let! biasBound = Gen.choose (0, 1 <<< (accBits - 3))
        return codes wBits true, codes aBits aSigned, accBits, int64 biasBound
    }

let private corners (w: CodeRange) (x: CodeRange) =
    [ int64 w.Min * int64 x.Min; int64 w.Min * int64 x.Max; int64 w.Max * int64 x.Min; int64 w.Max * int64 x.Max ]

/// The input that drives a neuron's accumulator highest (or lowest): each input at the end that its weight favours.
let private adversarialInput (weights: int[]) (x: CodeRange) upward =
    weights |> Array.map (fun w -> if (w > 0) = upward then x.Max else x.Min)

let private dot (weights: int[]) (inputs: int[]) bias =
    Array.fold2 (fun acc w x -> acc + int64 w * int64 x) bias weights inputs

[<Tests>]
let tests =
    testList
        "Quantization.Pruning"
        [ testProperty "at the bound no weights, inputs or bias overflow; one more term can"
          <| forAll setting (fun (w, x, accBits, biasBound) ->
              let k = int64 (Pruning.maxFanIn w x accBits biasBound)
              let lo, hi = accLimits accBits
              let tmin, tmax = List.min (corners w x), List.max (corners w x)
              let safe = k * tmax + biasBound <= hi && k * tmin - biasBound >= lo
              let tight = (k + 1L) * tmax + biasBound > hi || (k + 1L) * tmin - biasBound < lo
              safe && tight)

          testProperty "a search for an overflowing neuron at the bound finds none"
          <| forAll
              (gen {
                  // Settings whose bound is small enough for a neuron to reach it.
                  let! (w, x, accBits, biasBound) = setting |> Gen.filter (fun (w, x, a, b) -> Pruning.maxFanIn w x a b <= 64)
                  let k = Pruning.maxFanIn w x accBits biasBound
                  let! weights =
                      Gen.oneof
                          [ Gen.arrayOfLength k (Gen.oneof [ Gen.elements [ w.Min; w.Max ]; Gen.choose (w.Min, w.Max) ])
                            Gen.elements [ w.Min; w.Max ] |> Gen.map (Array.create k) ]
                  let! bias = Gen.elements [ -biasBound; biasBound; 0L ]
                  let! inputs = Gen.arrayOfLength k (Gen.choose (x.Min, x.Max))
                  return weights, bias, inputs, x, accBits
              })
              (fun (weights, bias, inputs, x, accBits) ->
                  let lo, hi = accLimits accBits
                  [ inputs; adversarialInput weights x true; adversarialInput weights x false ]
                  |> List.forall (fun input ->
                      let acc = dot weights input bias
                      acc >= lo && acc <= hi))

          testProperty "accumulatorRange is the neuron's exact range: attained by the adversarial inputs, never left"
          <| forAll
              (gen {
                  let! w, x, _, biasBound = setting
                  let! weights = Gen.choose (1, 12) |> Gen.bind (fun n -> Gen.arrayOfLength n (Gen.choose (w.Min, w.Max)))
                  let! bias = Gen.choose (int -biasBound, int biasBound)
                  let! inputs = Gen.arrayOfLength weights.Length (Gen.choose (x.Min, x.Max))
                  return weights, int64 bias, inputs, x
              })
              (fun (weights, bias, inputs, x) ->
                  let struct (lo, hi) = Pruning.accumulatorRange (ReadOnlySpan weights) bias x
                  dot weights (adversarialInput weights x false) bias = lo
                  && dot weights (adversarialInput weights x true) bias = hi
                  && (let acc = dot weights inputs bias in lo <= acc && acc <= hi))

          test "Concrete ML's count overflows where this bound does not" {
              // 3-bit signed weights, 3-bit unsigned inputs, 8-bit accumulator: floor(255/7/7) = 5 terms, but
              // 5 × (-4 × 7) = -140 < -128.
              let w, x = codes 3 true, codes 3 false
              let concrete = (255 / 7) / 7
              Expect.equal concrete 5 "the reference's count"
              Expect.isLessThan (int64 concrete * -28L) -128L "and it overflows"
              Expect.equal (Pruning.maxFanIn w x 8 0L) 4 "ours: 4 × -28 = -112 fits"
          }

          test "a bound too small names the smallest width that works" {
              let w, x = codes 4 true, codes 4 false
              let e =
                  Expect.throwsC
                      (fun () -> Pruning.maxFanIn w x 6 0L |> ignore)
                      (fun e -> e)
              match e with
              | :? AccumulatorTooSmallException as e ->
                  Expect.equal e.SmallestThatWorks 8 "-8 × 15 = -120 needs 8 signed bits"
                  Expect.equal (Pruning.maxFanIn w x e.SmallestThatWorks 0L) 1 "and 8 bits admit one term"
              | other -> failtest $"wrong exception %A{other}"
          }

          testProperty "the per-neuron budget mask always fits and keeps at least the count bound"
          <| forAll
              (gen {
                  let! (w, x, accBits, biasBound) = setting
                  let! n = Gen.choose (1, 300)
                  let! weights = Gen.arrayOfLength n (Gen.choose (w.Min, w.Max))
                  let! bias = Gen.choose (int -biasBound, int biasBound)
                  return w, x, accBits, biasBound, weights, int64 bias
              })
              (fun (w, x, accBits, biasBound, weights, bias) ->
                  let mask = Pruning.budgetMask weights bias x accBits
                  let kept = Array.zip weights mask |> Array.filter snd |> Array.map fst
                  let dropped = Array.zip weights mask |> Array.filter (snd >> not) |> Array.map fst
                  let k = Pruning.maxFanIn w x accBits biasBound
                  Pruning.fits (ReadOnlySpan kept) bias x accBits
                  && kept.Length >= min k weights.Length
                  && (dropped.Length = 0 || Array.min (Array.map abs kept |> Array.append [| Int32.MaxValue |]) >= Array.max (Array.map abs dropped)))

          testProperty "top-k keeps exactly k weights per neuron, the largest ones"
          <| forAll
              (gen {
                  let! fanIn = Gen.choose (1, 40)
                  let! rows = Gen.choose (1, 6)
                  let! k = Gen.choose (0, 45)
                  let! weights = Gen.arrayOfLength (fanIn * rows) (Gen.choose (-1000, 1000) |> Gen.map (fun v -> float32 v / 100.0f))
                  return k, fanIn, weights
              })
              (fun (k, fanIn, weights) ->
                  let mask = Pruning.topKMask k fanIn weights
                  Array.chunkBySize fanIn (Array.zip weights mask)
                  |> Array.forall (fun row ->
                      let kept = row |> Array.filter snd |> Array.map (fst >> abs)
                      let dropped = row |> Array.filter (snd >> not) |> Array.map (fst >> abs)
                      kept.Length = min k fanIn
                      && (kept.Length = 0 || dropped.Length = 0 || Array.min kept >= Array.max dropped)))

          test "invalid pruning arguments raise typed errors" {
              Expect.throwsT<FheNet.InvalidShapeException> (fun () -> Pruning.topKMask 1 3 [| 1.0f; 2.0f |] |> ignore) "ragged"
              Expect.throwsT<FheNet.ParameterOutOfRangeException>
                  (fun () -> Pruning.maxFanIn (codes 3 true) (codes 3 true) 1 0L |> ignore)
                  "1-bit accumulator"
              Expect.throwsT<FheNet.ParameterOutOfRangeException>
                  (fun () -> Pruning.maxFanIn (codes 3 true) (codes 3 true) 12 -1L |> ignore)
                  "negative bias bound"
              Expect.throwsT<AccumulatorTooSmallException>
                  (fun () -> Pruning.budgetMask [| 1 |] 1000L (codes 3 true) 8 |> ignore)
                  "a bias that alone overflows"
          } ]
