module FheNet.Tests.Estimators.NeuralNetTests

open System
open Expecto
open FheNet
open FheNet.Numerics
open FheNet.Autodiff
open FheNet.Quantization
open FheNet.Nn
open FheNet.Integer
open FheNet.Estimators
open FheNet.Tests
open FsCheck.FSharp

let private iris =
    lazy
        (let xTrain, yTrain, xTest, yTest = TestData.split "iris"
         xTrain, yTrain |> Array.map int, xTest, yTest |> Array.map int)

let private settings = { NeuralNetSettings.defaults with Threads = 1 }

let private throws<'e when 'e :> exn> (f: unit -> unit) (message: string) = Expect.throwsT<'e> (f >> ignore) message

[<Tests>]
let tests =
    testList
        "Estimators.NeuralNet"
        [ test "iris at the documented defaults reaches 0.85 test accuracy (mean over seeds 0, 1, 2, as the issue)" {
              let xTrain, yTrain, xTest, yTest = iris.Value
              let mean =
                  [ 0; 1; 2 ]
                  |> List.averageBy (fun seed -> NeuralNetClassifier<int>({ settings with Seed = seed }).Fit(xTrain, yTrain).Score(xTest, yTest))
              Expect.isGreaterThanOrEqual mean 0.85 "mean accuracy"
          }

          test "automatic batch size: about 100 steps per epoch, between 1 and 64 rows; an explicit size wins" {
              let auto = NeuralNetSettings.batchSize NeuralNetSettings.defaults
              Expect.equal ([ 10; 112; 199; 200; 426; 750; 6400; 100_000 ] |> List.map auto) [ 1; 1; 1; 2; 4; 7; 64; 64 ] "automatic"
              Expect.equal (NeuralNetSettings.batchSize { NeuralNetSettings.defaults with BatchSize = Some 5 } 100_000) 5 "explicit"
          }

          testProperty "centred hidden biases: every hidden pre-activation has mean 0 on the data; weights and output bias kept" (
              let case =
                  gen {
                      let! inputDim, hidden, layers = Gen.zip3 (Gen.choose (1, 5)) (Gen.choose (1, 8)) (Gen.choose (1, 4))
                      let! activation = Gen.elements Activation.all
                      let! quantized = Gen.elements [ true; false ]
                      let! rows, seed = Gen.zip (Gen.choose (1, 40)) (Gen.choose (0, 1_000_000))
                      return
                          { InputDim = inputDim; Hidden = hidden; Outputs = 2; Layers = layers; Activation = activation
                            Quant =
                              if quantized then
                                  Some { WeightBits = 3; ActivationBits = 3; AccumulatorBits = None; PowerOfTwo = true }
                              else
                                  None },
                          rows,
                          seed
                  }
              Generators.forAll case (fun (config, rows, seed) ->
                  let rng = TrainingRng(uint64 seed)
                  let net = Network.create config rng
                  // Off-centre inputs, so that centring has work to do in the first layer too.
                  let x = Tensor.init rows config.InputDim (fun _ j -> float32 (rng.NextGaussian() * 2.0 + float j))
                  let weightsBefore = net.Layers |> Array.map (fun p -> Array.copy p.Weight.Value.Data)
                  Network.centerHiddenBiases 2 net x
                  // Reference: a float64 forward pass with the new biases.
                  let mutable h = Array.init rows (fun i -> Array.init config.InputDim (fun j -> float x[i, j]))
                  let mutable centred = true
                  for l in 0 .. net.Layers.Length - 2 do
                      let w, b = net.Layers[l].Weight.Value, net.Layers[l].Bias.Value.Data
                      let z = h |> Array.map (fun r -> Array.init w.Rows (fun j -> float b[j] + Array.fold2 (fun acc v k -> acc + v * float w[j, k]) 0.0 r [| 0 .. w.Cols - 1 |]))
                      for j in 0 .. w.Rows - 1 do
                          let column = z |> Array.map (fun r -> r[j])
                          let spread = 1.0 + (column |> Array.map abs |> Array.max)
                          if abs (Array.average column) > 1e-4 * spread then centred <- false
                      h <- z |> Array.map (Array.map (Activation.value64 config.Activation))
                  centred
                  && Array.forall2 (fun (p: LayerParams) before -> p.Weight.Value.Data = before) net.Layers weightsBefore
                  && net.Layers[net.Layers.Length - 1].Bias.Value.Data |> Array.forall ((=) 0.0f))
          )

          test "a regressor at the defaults explains most of a noisy linear target" {
              let rng = TrainingRng 11UL
              let x = Array.init 300 (fun _ -> Array.init 3 (fun _ -> float32 (rng.NextGaussian())))
              let y = x |> Array.map (fun r -> 2.0 * float r[0] - float r[1] + 0.1 * rng.NextGaussian() + 5.0)
              let model = NeuralNetRegressor(settings).Fit(x, y)
              Expect.isGreaterThan (model.Score(x, y)) 0.8 "R²"
          }

          test "same seed gives a bit-identical model on 1 and 2 threads (parallel kernels engaged)" {
              let rng = TrainingRng 3UL
              let y = Array.init 256 (fun i -> i % 4)
              let x = y |> Array.map (fun c -> Array.init 64 (fun j -> float32 (float ((c * 7 + j) % 5) + rng.NextGaussian())))
              let fit threads =
                  NeuralNetClassifier<int>({ settings with Threads = threads; MaxEpochs = 2; BatchSize = Some 64 }).Fit(x, y)
              let one, two = fit 1, fit 2
              Expect.equal (one.Dump()) (two.Dump()) "same document"
              Expect.equal one.IntegerModel two.IntegerModel "same integer model"
          }

          test "labels of any type are restored; probabilities sum to 1 (binary too); dump/load predicts the same" {
              let xTrain, yTrain, xTest, _ = iris.Value
              let names = [| "setosa"; "versicolor"; "virginica" |]
              let binary = yTrain |> Array.map (fun y -> names[min y 1])
              let model = NeuralNetClassifier<string>({ settings with MaxEpochs = 2 }).Fit(xTrain, binary)
              Expect.equal model.Classes [| "setosa"; "versicolor" |] "sorted classes"
              for p in model.PredictProba xTest do
                  Expect.floatClose Accuracy.medium (Array.sum p) 1.0 "row sums to 1"
              let loaded = NeuralNetClassifier<string>.Load(model.Dump())
              Expect.equal (loaded.Predict xTest) (model.Predict xTest) "same predictions"
              Expect.equal loaded.IntegerModel model.IntegerModel "same integer model"
          }

          test "the name-based setter accepts the reference's names" {
              let pairs: (string * obj) list =
                      [ "module__n_layers", (2 :> obj)
                        "module__activation_function", ("nn.SELU" :> obj)
                        "module__n_w_bits", (4 :> obj)
                        "n_a_bits", ("5" :> obj)
                        "module__n_accum_bits", (12 :> obj)
                        "max_epochs", (7 :> obj)
                        "lr", (0.01 :> obj)
                        "criterion__weight", ([| 1.0; 2.0 |] :> obj)
                        "optimizer", ("torch.optim.SGD" :> obj) ]
              let s = pairs |> List.fold (fun acc (n, v) -> NeuralNetSettings.set n v acc) NeuralNetSettings.defaults
              Expect.equal (s.Layers, s.Activation, s.WeightBits, s.ActivationBits, s.AccumulatorBits) (2, Activation.SELU, 4, 5, Some 12) "module"
              Expect.equal (s.MaxEpochs, s.Lr, s.ClassWeights, s.Optimizer) (7, 0.01, ClassWeights.Explicit [| 1.0; 2.0 |], Optimizer.SgdMomentum) "training"
              throws<ParameterOutOfRangeException> (fun () -> NeuralNetSettings.set "module__n_bits" (3 :> obj) s |> ignore) "unknown name"
          }

          testProperty "toPairs read back by setMany gives the same settings (what a dump stores)" (
              let settingsGen =
                  gen {
                      let! layers = Gen.choose (1, 6)
                      let! multiplier = Gen.choose (1, 64) |> Gen.map (fun k -> float k / 8.0)
                      let! activation = Gen.elements Activation.all
                      let! wBits, aBits = Gen.zip (Gen.choose (2, 16)) (Gen.choose (2, 16))
                      let! accum = Gen.optionOf (Gen.choose (4, 32))
                      let! pot, shuffle, verbose = Gen.zip3 (Gen.elements [ true; false ]) (Gen.elements [ true; false ]) (Gen.elements [ true; false ])
                      let! refit = Gen.elements [ true; false ]
                      let! epochs, seed = Gen.zip (Gen.choose (1, 1000)) (Gen.choose (-1000, 1000))
                      let! lr, momentum, decay = Gen.zip3 (Gen.choose (1, 100_000)) (Gen.choose (0, 99)) (Gen.choose (0, 1000))
                      let! batch, patience = Gen.zip (Gen.optionOf (Gen.choose (1, 512))) (Gen.optionOf (Gen.choose (1, 20)))
                      let! optimizer = Gen.elements [ Optimizer.Adam; Optimizer.AdamW; Optimizer.SgdMomentum ]
                      let! validation = Gen.choose (0, 90) |> Gen.map (fun k -> float k / 100.0)
                      let! weights =
                          Gen.oneof
                              [ Gen.constant ClassWeights.Uniform
                                Gen.constant ClassWeights.Balanced
                                Gen.arrayOfLength 3 (Gen.choose (1, 1000)) |> Gen.map (fun w -> ClassWeights.Explicit(w |> Array.map (fun v -> float v / 7.0))) ]
                      return
                          { NeuralNetSettings.defaults with
                              Layers = layers; HiddenMultiplier = multiplier; Activation = activation
                              WeightBits = wBits; ActivationBits = aBits; AccumulatorBits = accum
                              PowerOfTwoScaling = pot; MaxEpochs = epochs; Lr = float lr * 1e-6; BatchSize = batch
                              Optimizer = optimizer; Momentum = float momentum / 100.0; WeightDecay = float decay * 1e-5
                              Shuffle = shuffle; ValidationFraction = validation; Patience = patience; Refit = refit
                              ClassWeights = weights; Seed = seed; Verbose = verbose }
                  }
              let fields (s: NeuralNetSettings) =
                  (s.Layers, s.HiddenMultiplier, s.Activation, s.WeightBits, s.ActivationBits, s.AccumulatorBits),
                  (s.PowerOfTwoScaling, s.MaxEpochs, s.Lr, s.BatchSize, s.Optimizer, s.Momentum, s.WeightDecay),
                  (s.Shuffle, s.ValidationFraction, s.Patience, s.Refit, s.ClassWeights, s.Seed, s.Verbose)
              Generators.forAll settingsGen (fun s ->
                  let pairs = NeuralNetSettings.toPairs s |> Array.map (fun (n, v) -> n, (v :> objnull))
                  fields (NeuralNetSettings.setMany pairs NeuralNetSettings.defaults) = fields s)
          )

          testProperty "the validation split is a stratified partition: round(n_c · fraction) rows of each class, one left to train" (
              let splitGen =
                  gen {
                      let! rows = Gen.choose (1, 200)
                      let! labels = Gen.arrayOfLength rows (Gen.choose (0, 4))
                      let! fraction = Gen.choose (0, 90) |> Gen.map (fun k -> float k / 100.0)
                      let! seed = Gen.choose (0, 1000)
                      return labels, fraction, seed
                  }
              Generators.forAll splitGen (fun (labels, fraction, seed) ->
                  let train, valid = Training.validationSplit fraction seed (Targets.Classes(labels, Array.create 5 1.0f)) labels.Length
                  let count (rows: int[]) c = rows |> Array.filter (fun i -> labels[i] = c) |> Array.length
                  Array.sort (Array.append train valid) = Array.init labels.Length id
                  && [ 0..4 ]
                     |> List.forall (fun c ->
                         let members = labels |> Array.filter ((=) c) |> Array.length
                         members = 0
                         || count valid c = min (members - 1) (int (Math.Round(float members * fraction))) && count train c >= 1))
          )

          test "refit: the fitted model is a fit on every row for the epoch counts of lowest validation loss" {
              let xTrain, yTrain, _, _ = iris.Value
              let s = { settings with MaxEpochs = 30 }
              // The float twin trains as the float pre-training does (same start, rows and shuffles): its best
              // validated epoch is the pre-training's.
              let model, twin = NeuralNetClassifier<int>(s).FitBenchmark(xTrain, yTrain)
              let bestOf (history: EpochReport list) =
                  (history |> List.filter (fun r -> r.ValidLoss.IsSome) |> List.minBy (fun r -> r.ValidLoss.Value)).Epoch
              let validated, refitted = model.History |> List.partition (fun r -> r.ValidLoss.IsSome)
              let best = bestOf model.History
              Expect.equal (validated.Length, refitted.Length) (30, best) "30 validated epochs, then the refit's"
              let direct =
                  NeuralNetClassifier<int>({ s with ValidationFraction = 0.0; MaxEpochs = best; PretrainEpochs = Some(bestOf twin.History) })
                      .Fit(xTrain, yTrain)
              Expect.equal model.IntegerModel direct.IntegerModel "the same integer model"
          }

          test "without refit, the fitted network is the epoch of lowest validation loss" {
              let xTrain, yTrain, _, _ = iris.Value
              let model = NeuralNetClassifier<int>({ settings with MaxEpochs = 30; Refit = false }).Fit(xTrain, yTrain)
              let weights = Array.create 3 1.0f
              let _, valid = Training.validationSplit 0.2 0 (Targets.Classes(yTrain, weights)) yTrain.Length
              let tape = Tape 1
              let out = (Network.forward tape model.Network false (Tensor.ofRows (valid |> Array.map (fun i -> xTrain[i])))).Output
              let loss = Training.loss tape out (Targets.Classes(valid |> Array.map (fun i -> yTrain[i]), weights)) (ReadOnlySpan(Array.init valid.Length id))
              let losses = model.History |> List.map (fun r -> r.ValidLoss.Value)
              Expect.equal (float loss.Value.Data[0]) (List.min losses) "the best epoch's validation loss"
              Expect.isLessThan (List.min losses) (List.last losses) "a later epoch was worse (the test means something)"
          }

          test "balanced class weights, validation split, early stopping and the epoch callback" {
              let xTrain, yTrain, _, _ = iris.Value
              let reports = ResizeArray()
              let s =
                  { settings with
                      ClassWeights = ClassWeights.Balanced
                      ValidationFraction = 0.25
                      Patience = Some 2
                      Refit = false
                      MaxEpochs = 50
                      OnEpoch = Some reports.Add }
              let model = NeuralNetClassifier<int>(s).Fit(xTrain, yTrain)
              Expect.equal (List.length model.History) reports.Count "one report per epoch"
              Expect.isTrue (reports |> Seq.forall (fun r -> r.ValidLoss.IsSome && r.ValidMetric.IsSome)) "validation figures"
              let losses = reports |> Seq.map (fun r -> r.ValidLoss.Value) |> Array.ofSeq
              Expect.isLessThan reports.Count 50 "stopped early"
              Expect.equal (Array.IndexOf(losses, Array.min losses)) (losses.Length - 3) "stopped 2 epochs after the best"
          }

          test "accumulator budget: the integer model respects it and the bit-width report stays within it" {
              let xTrain, yTrain, xTest, yTest = iris.Value
              let model = NeuralNetClassifier<int>({ settings with AccumulatorBits = Some 8 }).Fit(xTrain, yTrain)
              for b in model.BitWidths xTrain do
                  Expect.isLessThanOrEqual b.AccumulatorBits 8 $"layer %d{b.Layer}"
              Expect.isGreaterThan (model.Score(xTest, yTest)) 0.6 "still learns"
          }

          test "prune removes hidden neurons and fine-tunes" {
              let xTrain, yTrain, _, _ = iris.Value
              let model = NeuralNetClassifier<int>({ settings with MaxEpochs = 2 }).Fit(xTrain, yTrain)
              let pruned = model.Prune(xTrain, yTrain, 0.5)
              Expect.equal pruned.Network.Config.Hidden 8 "16 → 8 neurons"
              Expect.equal pruned.IntegerModel.Value.Layers[0].Weights.Length 8 "integer model is smaller"
              throws<ParameterOutOfRangeException> (fun () -> model.Prune(xTrain, yTrain, 1.0) |> ignore) "fraction < 1"
          }

          test "bad input raises typed exceptions" {
              let xTrain, yTrain, xTest, _ = iris.Value
              let c () = NeuralNetClassifier<int>({ settings with MaxEpochs = 1 })
              let nan = xTrain |> Array.mapi (fun i r -> if i = 3 then Array.append [| nanf |] r[1..] else r)
              throws<FheNet.Preprocessing.NonFiniteFeatureException> (fun () -> c().Fit(nan, yTrain) |> ignore) "NaN"
              let inf = xTrain |> Array.mapi (fun i r -> if i = 0 then Array.append [| infinityf |] r[1..] else r)
              throws<FheNet.Preprocessing.NonFiniteFeatureException> (fun () -> c().Fit(inf, yTrain) |> ignore) "infinity"
              let ragged = xTrain |> Array.mapi (fun i r -> if i = 5 then r[1..] else r)
              throws<InvalidShapeException> (fun () -> c().Fit(ragged, yTrain) |> ignore) "ragged rows"
              throws<InvalidShapeException> (fun () -> c().Fit(xTrain, yTrain[1..]) |> ignore) "row count mismatch"
              throws<InvalidShapeException> (fun () -> c().Fit(xTrain, Array.zeroCreate yTrain.Length) |> ignore) "one class"
              throws<NotFittedException> (fun () -> c().Predict xTest |> ignore) "predict before fit"
              let fitted = c().Fit(xTrain, yTrain)
              throws<InvalidShapeException> (fun () -> fitted.Predict(xTest |> Array.map (fun r -> r[1..])) |> ignore) "feature count"
              throws<FheNotAvailableException> (fun () -> fitted.Predict(xTest, FheMode.Simulate) |> ignore) "FHE not compiled"
              throws<ParameterOutOfRangeException> (fun () -> NeuralNetClassifier<int>({ settings with Layers = 0 }) |> ignore) "n_layers < 1"
              throws<ParameterOutOfRangeException> (fun () -> NeuralNetClassifier<int>({ settings with WeightBits = 1 }) |> ignore) "w bits < 2"
              throws<ParameterOutOfRangeException> (fun () -> NeuralNetClassifier<int>({ settings with ActivationBits = 17 }) |> ignore) "a bits > 16"
              let tooSmall =
                  Expect.throwsC (fun () -> NeuralNetClassifier<int>({ settings with AccumulatorBits = Some 6 }) |> ignore) id
              match tooSmall with
              | :? AccumulatorTooSmallException as e -> Expect.equal e.SmallestThatWorks 7 "3/3 bits need 7 accumulator bits"
              | e -> failtest $"unexpected %s{e.GetType().Name}"
              NeuralNetClassifier<int>({ settings with AccumulatorBits = Some 7; MaxEpochs = 1 }).Fit(xTrain, yTrain) |> ignore
              throws<NotFittedException> (fun () -> NeuralNetRegressor(settings).Predict xTest |> ignore) "regressor before fit"
          } ]
