// The README's main job: dotnet fsi build.fsx quickstart
// Trains a 3-bit network on Iris with quantization-aware training, compiles it to an FHE circuit, generates keys,
// and classifies a few test rows encrypted end to end, checking that they match the integer model in the clear.
#load "prelude.fsx"

open System
open System.Diagnostics
open Prelude
open FheNet.Estimators
open FheNet.Fhe

let train = readCsv (dataFile "iris_train.csv")
let test = readCsv (dataFile "iris_test.csv")

// Standardize with the train split's statistics.
let columns = train.Columns.Length
let mean = Array.init columns (fun j -> train.Features |> Array.averageBy (fun r -> float r[j]))
let std = Array.init columns (fun j -> sqrt (train.Features |> Array.averageBy (fun r -> (float r[j] - mean[j]) ** 2.0)))
let standardize (rows: float32[][]) =
    rows |> Array.map (fun r -> Array.init columns (fun j -> float32 ((float r[j] - mean[j]) / std[j])))
let xTrain, xTest = standardize train.Features, standardize test.Features
let yTrain, yTest = train.Target |> Array.map int, test.Target |> Array.map int

let timed label (work: unit -> 'a) =
    let watch = Stopwatch.StartNew()
    let result = work ()
    printfn "%-34s %8.2f s" label watch.Elapsed.TotalSeconds
    result

let settings =
    NeuralNetSettings.defaults
    |> NeuralNetSettings.setMany [ "module__n_layers", "3"; "max_epochs", "100" ]

let model, twin = timed "fit (3/3-bit QAT + float twin)" (fun () -> NeuralNetClassifier<int>(settings).FitBenchmark(xTrain, yTrain))
printfn "test accuracy: float %.3f, quantized %.3f" (twin.Score(xTest, yTest)) (model.Score(xTest, yTest))

timed "compile" (fun () -> model.Compile xTrain) |> ignore
timed "key generation" (fun () -> model.Keygen()) |> ignore

let rows = xTest[..2]
let encrypted = timed $"predict %d{rows.Length} rows encrypted" (fun () -> model.Predict(rows, FheMode.Execute))
let clear = model.Predict rows
printfn "encrypted predictions %A, in the clear %A, true labels %A" encrypted clear yTest[..2]
printf "%s" (string (model.CircuitReport()))
if encrypted <> clear then
    eprintfn "encrypted and clear predictions differ"
    exit 1
