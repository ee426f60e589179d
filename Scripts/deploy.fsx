// Deployment end to end: dotnet fsi Scripts/deploy.fsx [-- --rows 5 --bits 4 --clients 4 --requests 10 --port 0]
// Trains the Iris-shaped network (4 features, 3 layers, 16 hidden, 3 classes, 4/4 bits), compiles it, saves the
// server and client artifacts, starts the HTTP inference server as a child process on loopback, downloads the client
// artifact, generates keys, uploads the evaluation keys, predicts rows encrypted over HTTP, decrypts them and checks
// them against the integer model in the clear (fhe = disable). With --clients N > 0 it then runs a bounded load test:
// N concurrent clients, each with its own keys, sending --requests encrypted predictions one after the other.
// Prints one JSON object per line.
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx"

open System
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Sockets
open System.Text.Json
open System.Threading.Tasks
open Prelude
open FheNet.Deploy
open FheNet.Estimators
open FheNet.Integer

let rowsToPredict = int (argOr "rows" "5")
let clients = int (argOr "clients" "0")
let requestsPerClient = int (argOr "requests" "10")
let bits = argOr "bits" "4"

let report (name: string) (fields: (string * obj) list) =
    printfn "%s" (JsonSerializer.Serialize(dict (("name", box name) :: fields)))

let timed (work: unit -> 'a) =
    let watch = Stopwatch.StartNew()
    let result = work ()
    result, watch.Elapsed.TotalMilliseconds

// The Iris-shaped model, on raw measurements: the model and its deployed client scale them.
let model, circuit, xTrain, xTest = fitIrisShaped bits
let columns = xTrain[0].Length

let workDirectory = Directory.CreateTempSubdirectory "fhenet-deploy"
let modelDirectory = Path.Combine(workDirectory.FullName, "model")
let (), saveMs = timed (fun () -> FheModelDev(model).Save modelDirectory)
let _, loadMs = timed (fun () -> FheModelServer modelDirectory)
let fileBytes name = FileInfo(Path.Combine(modelDirectory, name)).Length
report
    "deploy_save"
    [ "parameter_set", box circuit.Parameters.Name
      "save_ms", box saveMs
      "server_load_ms", box loadMs
      "server_artifact_bytes", box (fileBytes ModelFiles.ServerArtifact)
      "client_artifact_bytes", box (fileBytes ModelFiles.ClientArtifact) ]

// The server, as a child process on a free loopback port.
let port =
    match int (argOr "port" "0") with
    | 0 ->
        let listener = new TcpListener(IPAddress.Loopback, 0)
        listener.Start()
        let p = (listener.LocalEndpoint :?> IPEndPoint).Port
        listener.Stop()
        p
    | p -> p
let serverDll = Path.Combine(__SOURCE_DIRECTORY__, "..", "Server", "bin", "Release", "net10.0", "FheNet.Server.dll")
if not (File.Exists serverDll) then
    failwith $"%s{serverDll} is missing: build first with dotnet fsi build.fsx build"
let address = Uri($"http://127.0.0.1:%d{port}/")
let serverProcess =
    Process.Start(
        ProcessStartInfo(
            "dotnet",
            [ serverDll; "--model"; modelDirectory; "--urls"; $"http://127.0.0.1:%d{port}"; "--max-concurrent"; "2"
              "--key-budget-mb"; argOr "key-budget-mb" "8192"; "--queue-timeout-ms"; "600000" ],
            UseShellExecute = false
        )
    )

try
    use http = new InferenceClient(address)
    let started = Stopwatch.StartNew()
    waitUntilServing address (fun () -> serverProcess.HasExited) (TimeSpan.FromSeconds 60.0)
    report "deploy_server_start" [ ("seconds", box started.Elapsed.TotalSeconds) ]

    let artifact = http.GetClientArtifactAsync().Result
    let newClient () =
        let keys = Path.Combine(workDirectory.FullName, "keys-" + Guid.NewGuid().ToString "N")
        new FheModelClient(artifact, keys)
    let client = newClient ()
    let (), keygenMs = timed (fun () -> client.GenerateKeys())
    let evaluationKeys = client.EvaluationKeys()
    let keyId, registerMs = timed (fun () -> http.RegisterKeysAsync(evaluationKeys).Result)
    let disable (row: float32[]) =
        IntegerModel.forward circuit.Model (IntegerModel.quantizeRow circuit.Model (FheNet.Preprocessing.FeatureScaler.transformRow model.Scaler row))

    /// One encrypted prediction over HTTP: its decrypted accumulators, and the milliseconds spent in each step.
    let predict (c: FheModelClient) (id: string) (row: float32[]) =
        let request, encryptMs = timed (fun () -> c.QuantizeEncryptSerialize row)
        let answer, httpMs = timed (fun () -> http.PredictAsync(id, request).Result)
        let accumulators, decryptMs = timed (fun () -> c.DeserializeDecrypt answer)
        accumulators, request.Length, answer.Length, encryptMs, httpMs, decryptMs

    let rows = xTest[.. min (xTest.Length - 1) (rowsToPredict - 1)]
    let results = rows |> Array.map (predict client keyId)
    let agreement = Array.forall2 (fun (acc, _, _, _, _, _) row -> acc = disable row) results rows
    let labels = results |> Array.map (fun (acc, _, _, _, _, _) -> client.Dequantize acc |> Array.indexed |> Array.maxBy snd |> fst)
    let _, requestBytes, answerBytes, _, _, _ = results[0]
    let median (values: float[]) = (Array.sort values)[values.Length / 2]
    report
        "deploy_http_predict"
        [ "rows", box rows.Length
          "equal_to_disable", box agreement
          "labels", box labels
          "clear_labels", box (model.Predict rows)
          "keygen_ms", box keygenMs
          "evaluation_key_bytes", box evaluationKeys.Length
          "register_keys_ms", box registerMs
          "request_bytes", box requestBytes
          "request_bytes_per_feature", box (float requestBytes / float train.Columns.Length)
          "answer_bytes", box answerBytes
          "encrypt_ms_median", box (results |> Array.map (fun (_, _, _, e, _, _) -> e) |> median)
          "http_predict_ms_median", box (results |> Array.map (fun (_, _, _, _, h, _) -> h) |> median)
          "decrypt_ms_median", box (results |> Array.map (fun (_, _, _, _, _, d) -> d) |> median) ]
    if not agreement then
        eprintfn "encrypted results differ from the integer model"
        exit 1

    // The same evaluation in this process, without HTTP: what the transport adds.
    let local = FheModelServer modelDirectory
    let context = client.Artifact.ModelContext
    let compressed, parseMs = timed (fun () -> FheSerializer.evaluationKeysOfBytes circuit.Parameters context evaluationKeys)
    let _, serializeMs = timed (fun () -> FheSerializer.evaluationKeysToBytes context compressed)
    let prepared, prepareMs = timed (fun () -> local.LoadEvaluationKeys evaluationKeys)
    let request = client.QuantizeEncryptSerialize rows[0]
    let _, evaluateMs = timed (fun () -> local.Evaluate(prepared, request, Threading.CancellationToken.None))
    report
        "deploy_in_process"
        [ "serialize_evaluation_keys_ms", box serializeMs
          "deserialize_evaluation_keys_ms", box parseMs
          "load_evaluation_keys_ms", box prepareMs
          "prepared_key_bytes", box (FheModelServer.MemoryBytes prepared)
          "evaluate_ms", box evaluateMs
          "bootstraps_per_sample", box circuit.BootstrapsPerSample ]

    if clients > 0 then
        // Each client its own keys (generated and registered before the clock starts).
        let users =
            Array.init clients (fun _ ->
                let c = newClient ()
                c.GenerateKeys()
                c, http.RegisterKeysAsync(c.EvaluationKeys()).Result)
        let watch = Stopwatch.StartNew()
        // Per request: the test row, whether the result equals disable, the latency.
        let outcomes =
            users
            |> Array.mapi (fun u (c, id) ->
                Task.Run(fun () ->
                    Array.init requestsPerClient (fun i ->
                        let index = (u * requestsPerClient + i) % xTest.Length
                        let acc, _, _, _, ms, _ = predict c id xTest[index]
                        index, acc = disable xTest[index], ms)))
            |> Task.WhenAll
            |> fun t -> Array.concat t.Result
        let latencies = outcomes |> Array.map (fun (_, _, ms) -> ms) |> Array.sort
        let seconds = watch.Elapsed.TotalSeconds
        let percentile p = latencies[min (latencies.Length - 1) (int (ceil (p * float latencies.Length)) - 1)]
        let health = http.HealthAsync().Result
        report
            "deploy_load_test"
            [ "clients", box clients
              "requests", box latencies.Length
              "failed", box (clients * requestsPerClient - latencies.Length)
              "equal_to_disable", box (outcomes |> Array.filter (fun (_, equal, _) -> equal) |> Array.length)
              // A row whose accumulators leave the calibrated range wraps in FHE (the compile layer's bound).
              "differing_test_rows", box (outcomes |> Array.filter (fun (_, equal, _) -> not equal) |> Array.map (fun (i, _, _) -> i) |> Array.distinct)
              "server_slots", box health.MaxConcurrent
              "p50_ms", box (percentile 0.50)
              "p99_ms", box (percentile 0.99)
              "requests_per_second", box (float latencies.Length / seconds)
              "server_completed", box health.Completed
              "server_rejected", box health.Rejected
              "server_key_bytes", box health.KeyBytes ]
finally
    if not serverProcess.HasExited then
        serverProcess.Kill true
        serverProcess.WaitForExit()
    workDirectory.Delete true
#endif
