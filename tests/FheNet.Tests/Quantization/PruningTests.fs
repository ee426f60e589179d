module FheNet.Tests.Quantization.PruningTests

open System
open Expecto
open FsCheck.FSharp
open FheNet.Numerics
open FheNet.Autodiff
open FheNet.Quantization
open FheNet.Nn
open FheNet.Integer
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

/// A neuron for the budget: weights in the setting's range, drawn so that some magnitude classes are crowded (ties)
/// and zeros are common, and a bias within the setting's bound.
let private budgetNeuron =
    gen {
        let! (w, x, accBits, biasBound) = setting
        let! n = Gen.choose (1, 300)
        let! spread = Gen.elements [ 1; 2; w.Max ]
        let! weights = Gen.arrayOfLength n (Gen.choose (max w.Min -spread, min w.Max spread))
        let! bias = Gen.choose (int -biasBound, int biasBound)
        return weights, int64 bias, x, accBits
    }

/// The reference mask as 1 / 0 floats.
let private referenceMask (weights: int[]) bias x accBits =
    Pruning.budgetMask weights bias x accBits |> Array.map (fun kept -> if kept then 1.0f else 0.0f)

/// The fast mask of a row of integer codes, with the boundary it returns.
let private fastMask (weights: int[]) bias x accBits =
    let mask = Array.create weights.Length -1.0f
    let boundary = Pruning.budgetMaskInto (ReadOnlySpan(Array.map float32 weights)) bias x accBits (Span mask)
    mask, boundary

/// A layer's codes (rows × fanIn) and bias codes, then steps that each move a few codes by one (as a weight crossing
/// a rounding boundary does), reset a few to any value, or move a bias code.
let private layerWalk =
    gen {
        let! (w, x, accBits, biasBound) = setting
        let! rows = Gen.choose (1, 5)
        let! fanIn = Gen.choose (1, 40)
        let! codes = Gen.arrayOfLength (rows * fanIn) (Gen.choose (w.Min, w.Max))
        let! biases = Gen.arrayOfLength rows (Gen.choose (int -biasBound, int biasBound))
        let change =
            gen {
                let! kind = Gen.choose (0, 9)
                let! at = Gen.choose (0, rows * fanIn - 1)
                let! delta = Gen.elements [ -1; 1 ]
                let! value = Gen.choose (w.Min, w.Max)
                let! row = Gen.choose (0, rows - 1)
                let! bias = Gen.choose (int -biasBound, int biasBound)
                return kind, at, delta, value, row, bias
            }
        let! steps = Gen.listOf (Gen.choose (0, 6) |> Gen.bind (fun k -> Gen.listOfLength k change))
        return w, x, accBits, fanIn, codes, biases |> Array.map int64, steps
    }

/// A small fixed classification problem and a network under an 8-bit budget that prunes most of its weights.
let private budgetTraining (refresh: Network -> unit) (train: Network -> Tensor -> Targets -> (Tensor * Targets) option -> unit) =
    let rng = TrainingRng 11UL
    let x = Tensor.init 120 6 (fun _ _ -> float32 (rng.NextGaussian()))
    let labels = Array.init 120 (fun i -> if x[i, 0] + 0.5f * x[i, 1] * x[i, 2] > 0.0f then 1 else 0)
    let config =
        { InputDim = 6
          Hidden = 12
          Outputs = 2
          Layers = 3
          Activation = Activation.ReLU
          Quant = Some { WeightBits = 4; ActivationBits = 3; AccumulatorBits = Some 8; PowerOfTwo = true } }
    let net = Network.create config (TrainingRng 3UL)
    Network.calibrateScales 1 net x
    refresh net
    let valid = Tensor.gatherRows x (ReadOnlySpan [| 0..29 |]), Targets.Classes(labels[..29], [| 1.0f; 1.0f |])
    train net x (Targets.Classes(labels, [| 1.0f; 1.0f |])) (Some valid)
    net

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

          testProperty "the fast budget mask is the reference mask, and its boundary the largest pruned magnitude"
          <| forAll budgetNeuron (fun (weights, bias, x, accBits) ->
              let mask, boundary = fastMask weights bias x accBits
              let reference = referenceMask weights bias x accBits
              let pruned = Array.zip weights reference |> Array.filter (fun (_, m) -> m = 0.0f) |> Array.map (fst >> abs)
              mask = reference && boundary = (if pruned.Length = 0 then 0 else Array.max pruned))

          testProperty "the layer cache holds the reference masks after every step of a walk of code changes"
          <| forAll layerWalk (fun (w, x, accBits, fanIn, codes, biases, steps) ->
              let cache = BudgetMaskCache(Array.zeroCreate codes.Length, fanIn, x, accBits)
              let matchesReference () =
                  Array.init biases.Length (fun i -> referenceMask codes[i * fanIn .. (i + 1) * fanIn - 1] biases[i] x accBits)
                  |> Array.concat = cache.Mask
              let update () = cache.Update(ReadOnlySpan(Array.map float32 codes), ReadOnlySpan biases) |> ignore
              update ()
              matchesReference ()
              && steps
                 |> List.forall (fun changes ->
                     for kind, at, delta, value, row, bias in changes do
                         match kind with
                         | 0 -> biases[row] <- bias
                         | 1 -> codes[at] <- value
                         | _ -> codes[at] <- Math.Clamp(codes[at] + delta, w.Min, w.Max)
                     update ()
                     matchesReference ()))

          test "the layer cache recomputes only the neurons whose change can alter their mask" {
              // Unsigned 3-bit inputs (0..7) and an 8-bit accumulator: 7 × Σ positive codes must stay <= 127.
              let x = { Min = 0; Max = 7 }
              let codes = Array.concat [ Array.create 7 3; [| 1; 1; 0 |]; Array.create 10 1 ] |> Array.map float32
              let biases = [| 0L; 0L |]
              let sixThrees = Array.append (Array.create 6 1.0f) (Array.zeroCreate 4)
              let cache = BudgetMaskCache(Array.zeroCreate codes.Length, 10, x, 8)
              let update () = cache.Update(ReadOnlySpan codes, ReadOnlySpan biases)
              Expect.equal (update ()) 2 "the first update computes both neurons"
              Expect.equal cache.Mask[0..9] sixThrees "six 3s fit (7 × 18 = 126), the boundary is 3"
              Expect.equal cache.Mask[10..] (Array.create 10 1.0f) "ten 1s fit (70): nothing pruned"
              Expect.equal (update ()) 0 "nothing changed"
              codes[7] <- 2.0f
              codes[9] <- -2.0f
              Expect.equal (update ()) 0 "changes below the boundary"
              codes[8] <- 3.0f
              Expect.equal (update ()) 1 "a code reaching the boundary"
              Expect.equal cache.Mask[0..9] sixThrees "the first six 3s still"
              biases[0] <- -1L
              Expect.equal (update ()) 1 "a new bias code"
              codes[19] <- 2.0f
              Expect.equal (update ()) 1 "any change where nothing is pruned"
              Expect.equal cache.Mask[10..] (Array.create 10 1.0f) "eleven still fit (77)"
          }

          test "training under a budget gives the same integer model with the incremental masks as from scratch" {
              let settings =
                  { Epochs = 6
                    LearningRate = 0.01
                    BatchSize = 8
                    Optimizer = Optimizer.Adam
                    Momentum = 0.9
                    WeightDecay = 0.0
                    Shuffle = true
                    Patience = None
                    Threads = 1
                    Seed = 5
                    OnEpoch = ignore }
              let trainWith refresh =
                  budgetTraining refresh (fun net x y valid -> Training.trainWith refresh settings net x y valid |> ignore)
              let incremental = trainWith Network.updateMasks
              let fromScratch = trainWith Network.updateMasksFromScratch
              let pruned = incremental.Layers |> Array.sumBy (fun p -> p.Mask |> Array.filter ((=) 0.0f) |> Array.length)
              Expect.isGreaterThan pruned 0 "the budget prunes"
              Expect.equal
                  (incremental.Layers |> Array.map (fun p -> p.Mask))
                  (fromScratch.Layers |> Array.map (fun p -> p.Mask))
                  "the same masks"
              Expect.equal (IntegerModel.ofNetwork incremental) (IntegerModel.ofNetwork fromScratch) "the same integer model"
          }

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
              Expect.throwsT<AccumulatorTooSmallException>
                  (fun () -> Pruning.budgetMaskInto (ReadOnlySpan [| 1.0f |]) 1000L (codes 3 true) 8 (Span [| 0.0f |]) |> ignore)
                  "a bias that alone overflows, fast path"
              Expect.throwsT<FheNet.ParameterOutOfRangeException>
                  (fun () -> Pruning.budgetMaskInto (ReadOnlySpan [| 1.0f |]) 0L { Min = 1; Max = 7 } 8 (Span [| 0.0f |]) |> ignore)
                  "an input range without 0"
              Expect.throwsT<FheNet.InvalidShapeException>
                  (fun () -> Pruning.budgetMaskInto (ReadOnlySpan [| 1.0f |]) 0L (codes 3 true) 8 (Span [| 0.0f; 0.0f |]) |> ignore)
                  "a mask of another length"
          } ]
