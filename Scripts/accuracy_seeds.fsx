// The training-accuracy table over many seeds, in one process: the issue's three settings (4/4 bits and 100 epochs,
// 3/3 bits with an 8-bit accumulator budget and 100 epochs, the documented defaults) on each data set, seeds 0..N-1.
// dotnet fsi Scripts/accuracy_seeds.fsx -- [--seeds 12] [--data iris,breast_cancer,moons,circles,diabetes]
//   [--extra name=value,name=value]   (settings by their reference names, applied to every fit)
// Data sets: the CSV splits in data/, and three generated ones (friedman, xor, blobs: 3/4 train, 1/4 test).
// One line per (data set, setting): the mean over seeds 0-2 (the issue's), the mean over all seeds, each seed's score.
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run ()
#else
#load "prelude.fsx"

open System
open System.IO
open Prelude
open FheNet.Estimators

let seeds = int (argOr "seeds" "12")
let dataSets = (argOr "data" "iris,breast_cancer,moons,circles,diabetes").Split ','

let extra =
    match scriptArgs |> Map.tryFind "extra" with
    | None -> []
    | Some text ->
        [ for pair in text.Split(',', StringSplitOptions.RemoveEmptyEntries) ->
              match pair.Split '=' with
              | [| name; value |] -> name, box value
              | _ -> failwith $"--extra %s{pair}: expected name=value" ]

let settings =
    [ "4/4, 100 epochs", [ "module__n_w_bits", box "4"; "module__n_a_bits", box "4"; "max_epochs", box "100" ]
      "3/3, budget 8, 100 epochs", [ "module__n_accum_bits", box "8"; "max_epochs", box "100" ]
      "defaults", [] ]

/// Rows (features, target) of a generated data set, from a fixed seed.
let generated (name: string) =
    let rng = FheNet.Numerics.TrainingRng 2024UL
    let gauss () = rng.NextGaussian()
    let uniform () = rng.NextDouble()
    match name with
    | "friedman" ->
        Array.init 400 (fun _ ->
            let x = Array.init 10 (fun _ -> uniform ())
            let y = 10.0 * sin (Math.PI * x[0] * x[1]) + 20.0 * (x[2] - 0.5) ** 2.0 + 10.0 * x[3] + 5.0 * x[4] + gauss ()
            Array.map float32 x, y)
    | "xor" ->
        Array.init 400 (fun _ ->
            let a, b = gauss (), gauss ()
            [| float32 (a + 0.2 * gauss ()); float32 (b + 0.2 * gauss ()) |], (if a * b > 0.0 then 1.0 else 0.0))
    | "blobs" ->
        let centres = Array.init 3 (fun _ -> Array.init 5 (fun _ -> 2.0 * gauss ()))
        Array.init 300 (fun _ ->
            let c = int (uniform () * 3.0)
            Array.init 5 (fun j -> float32 (centres[c][j] + 1.5 * gauss ())), float c)
    | other -> failwith $"--data %s{other}: no data/%s{other}_train.csv and not friedman, xor or blobs"

/// (train features, train targets, test features, test targets), features standardized on the train split.
let load (name: string) =
    let xTrain, yTrain, xTest, yTest =
        if File.Exists(dataFile $"%s{name}_train.csv") then
            let train, test = readCsv (dataFile $"%s{name}_train.csv"), readCsv (dataFile $"%s{name}_test.csv")
            train.Features, train.Target, test.Features, test.Target
        else
            let rows = generated name
            let cut = rows.Length * 3 / 4
            Array.map fst rows[.. cut - 1], Array.map snd rows[.. cut - 1], Array.map fst rows[cut ..], Array.map snd rows[cut ..]
    let standardize = standardizer xTrain
    standardize xTrain, yTrain, standardize xTest, yTest

for name in dataSets do
    let xTrain, yTrain, xTest, yTest = load name
    let regression = not (looksLikeClasses yTrain)
    for label, pairs in settings do
        let scores =
            Array.init seeds (fun seed ->
                let s =
                    NeuralNetSettings.defaults
                    |> NeuralNetSettings.setMany ([ "module__n_layers", box "3"; "random_state", box seed ] @ pairs @ extra)
                if regression then
                    NeuralNetRegressor(s).Fit(xTrain, yTrain).Score(xTest, yTest)
                else
                    NeuralNetClassifier<int>(s).Fit(xTrain, Array.map int yTrain).Score(xTest, Array.map int yTest))
        let first = scores[.. min 2 (seeds - 1)]
        printfn "%-14s %-26s seeds 0-2 %.3f  all %.3f  [%s]" name label (Array.average first) (Array.average scores)
            (scores |> Array.map (sprintf "%.3f") |> String.concat " ")
#endif
