module FheNet.Tests.Nn.NetworkTests

open System
open Expecto
open FheNet.Numerics
open FheNet.Autodiff
open FheNet.Quantization
open FheNet.Nn
open FheNet.Estimators
open FheNet.Tests
open FsCheck.FSharp

let private quantized inputDim hidden =
    { InputDim = inputDim; Hidden = hidden; Outputs = 2; Layers = 2; Activation = Activation.ReLU
      Quant = Some { WeightBits = 3; ActivationBits = 3; AccumulatorBits = None; PowerOfTwo = false } }

/// log2 of the MSE-optimal scale over every value, the figure a sample must approach.
let private fullDataLog2Scale bits signed (values: float32[]) =
    let template = Quantizer.symmetric bits signed false (Scale.Real 1.0)
    Math.Log2(Calibration.threshold (Calibrator.MinMse 64) template values / float template.QMax)

/// Rows × columns where the columns whose index is a multiple of `period` are zero and the others of magnitude
/// `magnitude` (random sign and size): a row-major layout a fixed sampling stride can alias with.
let private striped (rng: TrainingRng) rows columns period magnitude =
    Tensor.init rows columns (fun _ j ->
        if j % period = 0 then 0.0f else float32 ((2.0 * rng.NextDouble() - 1.0) * magnitude))

[<Tests>]
let tests =
    testList
        "Nn.Network"
        [ test "input scale calibration sees every column: 512 rows of 64 features, every 8th column zero" {
              // A sampling stride of 8 over this row-major matrix reads only the zero columns (digits' left pixel
              // column, constant 0, collapsed standardized digits to chance this way).
              let x = striped (TrainingRng 5UL) 512 64 8 100.0
              let net = Network.create (quantized 64 16) (TrainingRng 1UL)
              Network.calibrateScales 1 net x
              let calibrated = float net.Layers[0].InputLog2Scale.Value.Data[0]
              Expect.isLessThan (abs (calibrated - fullDataLog2Scale 3 true x.Data)) 1.0 "within 2x of the full-data scale"
          }

          testProperty "calibrated input and weight scales are within 2x of the full-data MSE-optimal scales, whatever the shape" (
              let case = Gen.zip3 (Gen.choose (2, 80)) (Gen.choose (2, 9)) (Gen.choose (0, 1_000_000))
              Generators.forAll case (fun (columns, period, seed) ->
                  let rng = TrainingRng(uint64 seed)
                  let rows = 4096 / columns * 3
                  let x = striped rng rows columns period 50.0
                  let net = Network.create (quantized columns (columns * 4)) rng
                  // Weights with the same striped structure (columns of the weight matrix = input features).
                  let w = net.Layers[0].Weight.Value
                  Array.blit (striped rng w.Rows w.Cols period 1.0).Data 0 w.Data 0 w.Length
                  Network.calibrateScales 1 net x
                  let input = float net.Layers[0].InputLog2Scale.Value.Data[0]
                  let weight = float net.Layers[0].WeightLog2Scale.Value.Data[0]
                  abs (input - fullDataLog2Scale 3 true x.Data) < 1.0
                  && abs (weight - fullDataLog2Scale 3 true w.Data) < 1.0)
          )

          test "digits (64 pixels, three constant) at the documented defaults reaches 0.90 test accuracy" {
              let xTrain, yTrain, xTest, yTest = TestData.split "digits"
              let model =
                  NeuralNetClassifier<int>({ NeuralNetSettings.defaults with Threads = 2 })
                      .Fit(xTrain, Array.map int yTrain)
              Expect.isGreaterThanOrEqual (model.Score(xTest, Array.map int yTest)) 0.90 "accuracy"
          } ]

let private irisTrained =
    lazy
        (let xTrain, yTrain, _, _ = TestData.split "iris"
         let labels = Array.map int yTrain
         let model = NeuralNetClassifier<int>({ NeuralNetSettings.defaults with Threads = 1; MaxEpochs = 20 }).Fit(xTrain, labels)
         model, Tensor.ofRows xTrain, Targets.Classes(labels, Array.create 3 1.0f))

[<Tests>]
let collapseTests =
    testList
        "Nn.QuantizationCheck"
        [ test "a trained model is close to its float path; inputs clipped by a stale scale are a collapse" {
              let model, x, targets = irisTrained.Value
              let check = model.QuantizationCheck.Value
              Expect.isFalse check.Collapsed $"trained: %A{check}"
              Expect.isGreaterThan check.Quantized 0.8 "quantized accuracy on the training rows"
              let broken = Network.copy model.Network
              // An input scale 2^10 too coarse: every standardized feature rounds to code 0.
              broken.Layers[0].InputLog2Scale.Value.Data[0] <- broken.Layers[0].InputLog2Scale.Value.Data[0] + 10.0f
              let brokenCheck = (Training.checkQuantization 1 broken x targets).Value
              Expect.isTrue brokenCheck.Collapsed $"broken: %A{brokenCheck}"
              Expect.floatClose Accuracy.veryHigh brokenCheck.Float check.Float "the float path ignores the scales"
          }

          test "the guard re-fits the scales of a collapsed network and says it recovered" {
              let model, x, targets = irisTrained.Value
              let broken = Network.copy model.Network
              broken.Layers[1].InputLog2Scale.Value.Data[0] <- broken.Layers[1].InputLog2Scale.Value.Data[0] - 12.0f
              let settings = { NeuralNetSettings.defaults with Threads = 1 }
              let net, check = Fitting.guardCollapse settings 1 broken x targets
              let check = check.Value
              Expect.isTrue check.Recovered "recovered"
              Expect.isFalse check.Collapsed $"after the re-fit: %A{check}"
              Expect.isGreaterThan check.Quantized 0.8 "accuracy after the re-fit"
              Expect.isFalse (obj.ReferenceEquals(net, broken)) "a re-fitted copy"
              let untouched, same = Fitting.guardCollapse settings 1 model.Network x targets
              Expect.isTrue (obj.ReferenceEquals(untouched, model.Network)) "a healthy network is kept as it is"
              Expect.isFalse same.Value.Recovered "nothing to recover"
          } ]
