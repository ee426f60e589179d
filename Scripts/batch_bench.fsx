// Batches against single requests: dotnet fsi Scripts/batch_bench.fsx [-- --rows 16]
// Trains the quickstart's network (Iris, n_layers 3, 3/3 bits), compiles and saves it, and runs `rows` test rows
// encrypted through one FheModelServer with one set of prepared keys, twice in the same run: as `rows` single-row
// requests one after the other, and as one batch request (its rows evaluated in parallel). Both times include the
// client's encryption and decryption; every result is checked against the integer model in the clear. Prints one
// JSON object.
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx"

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Threading
open Prelude
open FheNet.Deploy
open FheNet.Estimators
open FheNet.Integer

let rows = int (argOr "rows" "16")

let train = readCsv (dataFile "iris_train.csv")
let test = readCsv (dataFile "iris_test.csv")
let settings = NeuralNetSettings.defaults |> NeuralNetSettings.setMany [ "module__n_layers", "3"; "max_epochs", "100" ]
let model = NeuralNetClassifier<int>(settings).Fit(train.Features, train.Target |> Array.map int)
let circuit = model.Compile train.Features
let directory = Directory.CreateTempSubdirectory "fhenet-batch-bench"
try
    FheModelDev(model).Save directory.FullName
    use client = new FheModelClient(directory.FullName, Path.Combine(directory.FullName, "keys"))
    client.GenerateKeys()
    let server = FheModelServer directory.FullName
    let keys = server.LoadEvaluationKeys(client.EvaluationKeys())
    let x = Array.init rows (fun i -> test.Features[i % test.Features.Length])
    let clear =
        x |> Array.map (fun row -> IntegerModel.forward circuit.Model (IntegerModel.quantizeRow circuit.Model (FheNet.Preprocessing.FeatureScaler.transformRow model.Scaler row)))
    let single = Stopwatch.StartNew()
    let singles =
        x |> Array.map (fun row -> client.DeserializeDecrypt(server.Evaluate(keys, client.QuantizeEncryptSerialize row, CancellationToken.None)))
    let singleSeconds = single.Elapsed.TotalSeconds
    let batch = Stopwatch.StartNew()
    let batched = client.DeserializeDecryptBatch(server.Evaluate(keys, client.QuantizeEncryptSerializeBatch x, CancellationToken.None))
    let batchSeconds = batch.Elapsed.TotalSeconds
    printfn
        "%s"
        (JsonSerializer.Serialize(
            dict
                [ "name", box "batch_vs_single"
                  "parameter_set", box circuit.Parameters.Name
                  "rows", box rows
                  "cores", box Environment.ProcessorCount
                  "single_requests_s", box singleSeconds
                  "batch_request_s", box batchSeconds
                  "single_rows_per_s", box (float rows / singleSeconds)
                  "batch_rows_per_s", box (float rows / batchSeconds)
                  "speedup", box (singleSeconds / batchSeconds)
                  "equal_to_clear", box (singles = clear && batched = clear) ]
        ))
finally
    directory.Delete true
#endif
