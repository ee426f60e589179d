// Shared by every script: loads the built FheNet library. Scripts reach it through their launcher half
// (launch.fsx), which builds first; from the REPL run `dotnet fsi build.fsx build` once, then load this file.
#r "../Core.fs/bin/Release/net10.0/FheNet.Core.dll"
// The library's package dependencies (resolved from the local NuGet cache that the build filled).
#r "nuget: System.Numerics.Tensors, 10.0.0"
#r "nuget: MathNet.Numerics, 5.0.0"
#r "nuget: Sylvan.Data.Csv, 1.4.4"

open System
open System.IO
open FheNet.Preprocessing

/// A CSV file read by the library's reader: raw feature columns (the models scale them) and a label column as text.
type Table =
    { Features: float32[][]
      /// The label column's values as they are written (numbers or words such as `setosa`).
      Labels: string[]
      Columns: string[]
      Csv: CsvTable
      Path: string }

    /// The labels as numbers (regression targets, integer classes); an error naming the line of a word label.
    member t.Target: float[] = CsvTable.valueLabels t.Path t.Csv

    /// True when every label reads as a number.
    member t.NumericLabels = (CsvTable.numericLabels t.Csv).IsSome

/// Reads a CSV file with a header: the label column by name and the feature columns by name (None: every other
/// column). Ragged rows, empty cells and non-numeric features stop with an error naming the line and the column.
let readCsvWith (path: string) (label: string) (features: string[] option) : Table =
    let csv = Csv.readFile path label features
    { Features = csv.Features; Labels = csv.Labels; Columns = csv.Columns; Csv = csv; Path = path }

/// Reads a CSV file of data/ (or any with a `target` column): every other column is a feature.
let readCsv (path: string) : Table = readCsvWith path "target" None

/// The repository's data folder, whatever the working directory.
let dataFile name = Path.Combine(__SOURCE_DIRECTORY__, "..", "data", name)

/// Script arguments after `--` as (flag, value) pairs: `--epochs 10` → ("epochs", "10").
let scriptArgs =
    let args = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")
    args
    |> Array.pairwise
    |> Array.filter (fun (k, _) -> k.StartsWith "--")
    |> Array.map (fun (k, v) -> k.TrimStart '-', v)
    |> Map.ofArray

let argOr name fallback =
    scriptArgs |> Map.tryFind name |> Option.defaultValue fallback

/// Targets that are class labels rather than values: every one an integer, and few distinct ones.
let looksLikeClasses (targets: float[]) =
    targets |> Array.forall (fun v -> v = round v) && (Array.distinct targets).Length <= 20

/// Labels of a classification task: words, or numbers that look like classes.
let isClassification (t: Table) = not t.NumericLabels || looksLikeClasses t.Target

/// Standardizes rows with the mean and standard deviation of `train` (constant columns are left centred). The
/// estimators scale raw features themselves (the `preprocessing` setting); this is for code that uses the networks
/// below the estimators.
let standardizer (train: float32[][]) : float32[][] -> float32[][] =
    let columns = train[0].Length
    let mean = Array.init columns (fun j -> train |> Array.averageBy (fun r -> float r[j]))
    let std =
        Array.init columns (fun j ->
            let s = sqrt (train |> Array.averageBy (fun r -> (float r[j] - mean[j]) ** 2.0))
            if s > 0.0 then s else 1.0)
    fun rows -> rows |> Array.map (fun r -> Array.init columns (fun j -> float32 ((float r[j] - mean[j]) / std[j])))

/// The Iris-shaped network of the deployment scripts (4 features, 3 layers, 16 hidden, 3 classes, B/B bits, 100
/// epochs), fitted on the train split standardized with its own statistics, and compiled on it. Returns the
/// classifier, its circuit and the standardized train and test rows.
let fitIrisShaped (bits: string) =
    let train = readCsv (dataFile "iris_train.csv")
    let test = readCsv (dataFile "iris_test.csv")
    let xTrain, xTest = train.Features, test.Features
    let settings =
        FheNet.Estimators.NeuralNetSettings.defaults
        |> FheNet.Estimators.NeuralNetSettings.setMany
            [ "module__n_layers", "3"; "module__n_w_bits", bits; "module__n_a_bits", bits; "max_epochs", "100" ]
    let model = FheNet.Estimators.NeuralNetClassifier<int>(settings).Fit(xTrain, train.Target |> Array.map int)
    model, model.Compile xTrain, xTrain, xTest

/// Waits until the inference server at an address answers GET /health with "ok"; fails after `timeout`, or as soon as
/// `exited ()` says its process has ended.
let waitUntilServing (address: Uri) (exited: unit -> bool) (timeout: TimeSpan) =
    use http = new FheNet.Deploy.InferenceClient(address)
    let started = Diagnostics.Stopwatch.StartNew()
    let rec wait () =
        let up =
            try
                http.HealthAsync().Result.Status = "ok"
            with _ ->
                false
        if not up then
            if exited () || started.Elapsed > timeout then
                failwith $"the inference server at %O{address} did not start"
            Threading.Thread.Sleep 100
            wait ()
    wait ()
