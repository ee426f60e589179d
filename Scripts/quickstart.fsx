// The README's main job: dotnet fsi build.fsx quickstart
// Trains a 3-bit network on Iris with quantization-aware training, compiles it to an FHE circuit, generates keys,
// and classifies a few test rows encrypted end to end, checking that they match the integer model in the clear.
// Progress renders live on a terminal; redirected output gets the result lines only.
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx" "ui.fsx"

open Prelude
open FheNet.Estimators

let train = readCsv (dataFile "iris_train.csv")
let test = readCsv (dataFile "iris_test.csv")
// Raw measurements: the model learns their scaling in fit and applies it in every prediction.
let xTrain, xTest = train.Features, test.Features
let yTrain, yTest = train.Target |> Array.map int, test.Target |> Array.map int

let epochs = 100

Ui.heading "FheNet quickstart: Iris, 3-bit weights and activations"

let model, twin =
    Ui.training "fit (3/3-bit QAT + float twin)" epochs 2 (fun onEpoch ->
        let settings =
            NeuralNetSettings.defaults
            |> NeuralNetSettings.setMany [ "module__n_layers", "3"; "max_epochs", string epochs ]
        NeuralNetClassifier<int>({ settings with OnEpoch = Some onEpoch }).FitBenchmark(xTrain, yTrain))

Ui.line "test accuracy" $"float %.3f{twin.Score(xTest, yTest)}, quantized %.3f{model.Score(xTest, yTest)}"

Ui.step "compile" (fun () -> model.Compile xTrain) |> ignore
Ui.step "key generation" (fun () -> model.Keygen()) |> ignore

let rows = xTest[..2]
let encrypted, _ =
    Ui.perSample $"predict %d{rows.Length} rows encrypted" rows (fun row ->
        (model.Predict([| row |], FheMode.Execute))[0])
let clear = model.Predict rows
Ui.line "encrypted predictions" $"%A{encrypted}"
Ui.line "in the clear" $"%A{clear}"
Ui.line "true labels" $"%A{yTest[..2]}"
// With keys and an encrypted run behind it, the report has estimated and measured times per layer.
printf "%s" (string (model.CircuitReport()))
if encrypted <> clear then
    Ui.error "encrypted and clear predictions differ"
    exit 1
Ui.line "encrypted = clear" "yes"
#endif
