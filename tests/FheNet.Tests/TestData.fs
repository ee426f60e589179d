/// The repository's datasets (data/), standardized as the scripts do: statistics of the train split only.
module FheNet.Tests.TestData

open System
open System.Globalization
open System.IO

/// Features and targets of a data file (header skipped, last column the target).
let readCsv (name: string) =
    let path = Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "data", name)
    let rows =
        File.ReadAllLines path
        |> Array.skip 1
        |> Array.filter (fun l -> l <> "")
        |> Array.map (fun l -> l.Split ',' |> Array.map (fun s -> Double.Parse(s, CultureInfo.InvariantCulture)))
    rows |> Array.map (fun r -> r[.. r.Length - 2]), rows |> Array.map (fun r -> r[r.Length - 1])

/// Rows standardized with the mean and standard deviation of `train`.
let standardized (train: float[][]) (rows: float[][]) =
    let d = train[0].Length
    let mean = Array.init d (fun j -> train |> Array.averageBy (fun r -> r[j]))
    let std = Array.init d (fun j -> max 1e-12 (sqrt (train |> Array.averageBy (fun r -> (r[j] - mean[j]) ** 2.0))))
    rows |> Array.map (fun r -> Array.init d (fun j -> float32 ((r[j] - mean[j]) / std[j])))

/// A split of a dataset: standardized train and test features with their targets.
let split (name: string) =
    let xTrain, yTrain = readCsv $"%s{name}_train.csv"
    let xTest, yTest = readCsv $"%s{name}_test.csv"
    standardized xTrain xTrain, yTrain, standardized xTrain xTest, yTest
