// Trains a quantized network on a CSV split and scores it on another; the last line is one JSON object. Features are
// raw columns (the model scales them, --preprocessing); labels are numbers or words (`setosa`, `virginica`).
// dotnet fsi Scripts/evaluate.fsx -- --train A.csv --test B.csv [--label target] [--features a,b,c]
//   [--task classification|regression] [--preprocessing standard|robust|none] [--layers 3]
//   [--w-bits 3] [--a-bits 3] [--accum-bits N] [--epochs 10] [--lr 0.001] [--batch-size N] [--activation relu]
//   [--multiplier 4] [--pot true|false] [--validation-fraction F] [--patience N] [--seed 0]
//   [--fhe disable|simulate|execute] [--fhe-samples N]
//   [--rounding exact|per-bit|approximate] [--rounding-bits N] [--p-error P]
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx"

open System
open System.Diagnostics
open System.Text.Json
open Prelude
open FheNet.Autodiff
open FheNet.Estimators
open FheNet.Integer

let label = argOr "label" "target"
let features = scriptArgs |> Map.tryFind "features" |> Option.map (fun f -> f.Split(',', StringSplitOptions.TrimEntries))
let train = readCsvWith (argOr "train" (dataFile "iris_train.csv")) label features
let test = readCsvWith (argOr "test" (dataFile "iris_test.csv")) label features

/// Classification when a label is a word, or every label an integer with few distinct values.
let task =
    argOr
        "task"
        (if isClassification train then "classification" else "regression")

let xTrain, xTest = train.Features, test.Features

let settings =
    NeuralNetSettings.defaults
    |> NeuralNetSettings.setMany
        [ "module__n_layers", box (argOr "layers" "3")
          "module__n_w_bits", box (argOr "w-bits" "3")
          "module__n_a_bits", box (argOr "a-bits" "3")
          "module__n_accum_bits", box (argOr "accum-bits" "none")
          "max_epochs", box (argOr "epochs" "10")
          "lr", box (argOr "lr" "0.001")
          "batch_size", box (argOr "batch-size" "none")
          "module__activation_function", box (argOr "activation" "relu")
          "module__n_hidden_neurons_multiplier", box (argOr "multiplier" "4")
          "module__power_of_two_scaling", box (argOr "pot" "true")
          "validation_fraction", box (argOr "validation-fraction" (string NeuralNetSettings.defaults.ValidationFraction))
          "patience", box (argOr "patience" "none")
          "preprocessing", box (argOr "preprocessing" "standard")
          "random_state", box (argOr "seed" "0") ]

let fhe =
    match (argOr "fhe" "disable").ToLowerInvariant() with
    | "disable" -> FheMode.Disable
    | "simulate" -> FheMode.Simulate
    | "execute" -> FheMode.Execute
    | other -> failwith $"--fhe %s{other}: expected disable, simulate or execute"

/// Compiles on the training rows, then runs `fhe` on the first --fhe-samples test rows and compares every output
/// with the integer model's (disable); `outputs mode rows` gives the model's real outputs per row.
let rounding =
    match (argOr "rounding" "exact").ToLowerInvariant() with
    | "exact" -> FheNet.Fhe.RoundingMethod.Exact
    | "per-bit" -> FheNet.Fhe.RoundingMethod.ExactPerBit
    | "approximate" -> FheNet.Fhe.RoundingMethod.Approximate
    | other -> failwith $"--rounding %s{other}: expected exact, per-bit or approximate"

let compileArgs =
    {| pError = scriptArgs |> Map.tryFind "p-error" |> Option.map float
       roundingBits = scriptArgs |> Map.tryFind "rounding-bits" |> Option.map int |}

let runFhe
    (compile: unit -> FheNet.Fhe.Circuit)
    (keygen: unit -> FheNet.Fhe.CircuitKeys)
    (outputs: FheMode -> float32[][] -> float[][])
    (report: unit -> FheNet.Fhe.CircuitReport)
    =
    let circuit = compile ()
    let samples = min xTest.Length (int (argOr "fhe-samples" (if fhe = FheMode.Execute then "5" else string xTest.Length)))
    let rows = xTest[.. samples - 1]
    let keygenWatch = Stopwatch.StartNew()
    let keys = if fhe = FheMode.Execute then Some(keygen ()) else None
    let keygenSeconds = keygenWatch.Elapsed.TotalSeconds
    let runWatch = Stopwatch.StartNew()
    let got = outputs fhe rows
    let seconds = runWatch.Elapsed.TotalSeconds / float samples
    let expected = outputs FheMode.Disable rows
    let agreement = float (Array.fold2 (fun n a b -> if a = b then n + 1 else n) 0 got expected) / float samples
    eprintfn "%s" (string (report ()))
    [ "fhe", box (string fhe)
      "fhe_samples", box samples
      "fhe_agreement", box agreement
      "fhe_seconds_per_sample", box (Math.Round(seconds, 4))
      "keygen_seconds", box (Math.Round(keygenSeconds, 3))
      "pbs_per_sample", box circuit.BootstrapsPerSample
      "eval_key_bytes", box (keys |> Option.map (fun k -> k.CompressedServerKey.SizeBytes) |> Option.defaultValue 0L)
      "fhe_parameters", box circuit.Parameters.Name
      "rounding", box (string circuit.Rounding) ]

let watch = Stopwatch.StartNew()
let score, floatScore, bitWidths, metric, fheFields =
    if task = "classification" then
        let yTrain, yTest = train.Labels, test.Labels
        let model, twin = NeuralNetClassifier<string>(settings).FitBenchmark(xTrain, yTrain)
        let seconds = watch.Elapsed.TotalSeconds
        let accuracy = model.Score(xTest, yTest)
        let fheFields =
            if fhe = FheMode.Disable then []
            else runFhe (fun () -> model.Compile(xTrain, ?pError = compileArgs.pError, ?roundingThresholdBits = compileArgs.roundingBits, rounding = rounding)) (fun () -> model.Keygen()) (fun mode rows -> model.PredictProba(rows, mode)) model.CircuitReport
        (accuracy, seconds), twin.Score(xTest, yTest), model.BitWidths xTrain, "accuracy", fheFields
    else
        let model, twin = NeuralNetRegressor(settings).FitBenchmark(xTrain, train.Target)
        let seconds = watch.Elapsed.TotalSeconds
        let fheFields =
            if fhe = FheMode.Disable then []
            else runFhe (fun () -> model.Compile(xTrain, ?pError = compileArgs.pError, ?roundingThresholdBits = compileArgs.roundingBits, rounding = rounding)) (fun () -> model.Keygen()) (fun mode rows -> model.PredictMulti(rows, mode)) model.CircuitReport
        (model.Score(xTest, test.Target), seconds), twin.Score(xTest, test.Target), model.BitWidths xTrain, "r2", fheFields

let result =
    dict (
        [ "task", box task
          "metric", box metric
          "score", box (Math.Round(fst score, 4))
          "float_score", box (Math.Round(floatScore, 4))
          "train_seconds", box (Math.Round(snd score, 3))
          "max_accumulator_bits", box (bitWidths |> List.map (fun b -> b.AccumulatorBits) |> List.max)
          "max_tlu_input_bits", box (bitWidths |> List.choose (fun b -> b.LookupInputBits) |> List.fold max 0)
          "train_rows", box xTrain.Length
          "test_rows", box xTest.Length ]
        @ fheFields
    )
printfn "%s" (JsonSerializer.Serialize result)
#endif
