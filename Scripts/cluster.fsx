// The inference server on an Orleans cluster, end to end on loopback:
//   dotnet fsi Scripts/cluster.fsx [-- --silos 3 --clients 4 --requests 10 --kill-one true --bits 3]
// Trains the Iris-shaped network (4 features, 3 layers, 16 hidden, 3 classes, B/B bits), compiles it, saves it, starts
// --silos FheNet.Cluster processes (localhost clustering, in-memory key storage: the embedded default; with
// --redis HOST:PORT they use that Redis instead), runs --clients concurrent clients, each with its own keys, sending
// --requests encrypted predictions one after the other through ClusterInferenceClient (the HTTP API over the silos'
// front doors), and with --kill-one true kills the last silo's process once the first predictions are back. Prints
// one JSON line: silos, killed, completed, lost, equal_to_disable, p50_ms, p99_ms, rows_per_s. Bounded: every request
// is retried a bounded number of times, and the silos are stopped at the end.
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx"
// The failover client of the cluster, compiled from its source: the cluster library itself would bring Orleans in.
#load "../Cluster/ClusterClient.fs"

open System
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Sockets
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Prelude
open FheNet.Cluster
open FheNet.Deploy
open FheNet.Integer

let silos = int (argOr "silos" "3")
let clients = int (argOr "clients" "4")
let requestsPerClient = int (argOr "requests" "10")
let killOne = bool.Parse(argOr "kill-one" "true")
let bits = argOr "bits" "3"
let redis = scriptArgs |> Map.tryFind "redis"
if silos < 1 || clients < 1 || requestsPerClient < 1 then
    failwith "--silos, --clients and --requests must be at least 1"
if killOne && silos < 2 then
    failwith "--kill-one true needs at least 2 silos: one must survive"

// The Iris-shaped model, standardized with the train split's statistics.
let model, circuit, _, xTest = fitIrisShaped bits
let workDirectory = Directory.CreateTempSubdirectory "fhenet-cluster"
let modelDirectory = Path.Combine(workDirectory.FullName, "model")
FheModelDev(model).Save modelDirectory

let freePort () =
    let listener = new TcpListener(IPAddress.Loopback, 0)
    listener.Start()
    let port = (listener.LocalEndpoint :?> IPEndPoint).Port
    listener.Stop()
    port

// The silos: child processes, the first the primary of localhost clustering (so the one killed is the last).
let clusterDll = Path.Combine(__SOURCE_DIRECTORY__, "..", "Cluster", "bin", "Release", "net10.0", "FheNet.Cluster.dll")
let ports = Array.init silos (fun _ -> freePort (), freePort (), freePort ())
let primarySiloPort = let p, _, _ = ports[0] in p
// A cluster of its own in a shared Redis.
let clusterId = "fhenet-" + Guid.NewGuid().ToString "N"
let startSilo (index: int) =
    let siloPort, gatewayPort, httpPort = ports[index]
    let clustering =
        match redis with
        | Some configuration -> [ "--redis"; configuration; "--cluster-id"; clusterId ]
        | None when siloPort = primarySiloPort -> []
        | None -> [ "--primary"; $"127.0.0.1:%d{primarySiloPort}" ]
    let args =
        [ clusterDll; "--model"; modelDirectory; "--urls"; $"http://127.0.0.1:%d{httpPort}"
          "--silo-port"; string siloPort; "--gateway-port"; string gatewayPort
          "--max-concurrent"; "16"; "--evaluation-slots"; "2"; "--queue-timeout-ms"; "600000"
          "--key-budget-mb"; "4096"; "--probe-timeout-ms"; "3000" ]
        @ clustering
    let silo = Process.Start(ProcessStartInfo("dotnet", args, UseShellExecute = false, RedirectStandardOutput = true))
    // The silos' log goes to standard error, so that standard output is the one JSON line.
    silo.OutputDataReceived.Add(fun e -> if not (isNull e.Data) then eprintfn "silo %d: %s" index e.Data)
    silo.BeginOutputReadLine()
    silo
let frontDoors = ports |> Array.map (fun (_, _, http) -> Uri($"http://127.0.0.1:%d{http}/"))
let processes = ResizeArray<Process>()

try
    // The primary first: the others join it.
    for i in 0 .. silos - 1 do
        let silo = startSilo i
        processes.Add silo
        waitUntilServing frontDoors[i] (fun () -> silo.HasExited) (TimeSpan.FromSeconds 120.0)

    use artifactClient = new InferenceClient(frontDoors[0])
    let artifact = artifactClient.GetClientArtifactAsync().Result
    let disable (row: float32[]) = IntegerModel.forward circuit.Model (IntegerModel.quantizeRow circuit.Model row)
    // Each client its own keys, generated before the clock starts; client u enters through silo u mod silos.
    let users =
        Array.init clients (fun u ->
            let client = new FheModelClient(artifact, Path.Combine(workDirectory.FullName, $"keys-%d{u}"))
            client.GenerateKeys()
            let doors = Array.init silos (fun i -> frontDoors[(u + i) % silos])
            client, new ClusterInferenceClient(doors, client.EvaluationKeys()))
    // Set when the first request of two clients (or of the only one) is back.
    let firstResults = new ManualResetEventSlim()
    let firstDone = ref 0
    let watch = Stopwatch.StartNew()
    let work =
        users
        |> Array.mapi (fun u (client, http) ->
            Task.Run(fun () ->
                Array.init requestsPerClient (fun i ->
                    let row = xTest[(u * requestsPerClient + i) % xTest.Length]
                    let request = client.QuantizeEncryptSerialize row
                    let started = Stopwatch.StartNew()
                    let outcome =
                        try
                            let answer = http.PredictAsync(request).Result
                            Some(client.DeserializeDecrypt answer = disable row, started.Elapsed.TotalMilliseconds)
                        with e ->
                            eprintfn "client %d, request %d lost: %s" u i e.Message
                            None
                    if i = 0 && Interlocked.Increment &firstDone.contents = min clients 2 then
                        firstResults.Set()
                    outcome)))
    let killed =
        if killOne then
            // Mid-run: once the first predictions are back, the last silo's process dies without a goodbye.
            firstResults.Wait(TimeSpan.FromMinutes 10.0) |> ignore
            let victim = processes[silos - 1]
            victim.Kill true
            victim.WaitForExit()
            1
        else
            0
    let outcomes = (Task.WhenAll work).Result |> Array.concat
    let seconds = watch.Elapsed.TotalSeconds
    let completed = outcomes |> Array.choose id
    let latencies = completed |> Array.map snd |> Array.sort
    let percentile p =
        if latencies.Length = 0 then nan
        else latencies[min (latencies.Length - 1) (int (ceil (p * float latencies.Length)) - 1)]
    let report =
        dict
            [ "silos", box silos
              "killed", box killed
              "clients", box clients
              "completed", box completed.Length
              "lost", box (outcomes.Length - completed.Length)
              "equal_to_disable", box (completed |> Array.filter fst |> Array.length)
              "p50_ms", box (Math.Round(percentile 0.50, 1))
              "p99_ms", box (Math.Round(percentile 0.99, 1))
              "rows_per_s", box (Math.Round(float completed.Length / seconds, 4))
              "failovers", box (users |> Array.sumBy (fun (_, http) -> http.Failovers))
              "parameter_set", box circuit.Parameters.Name
              "storage", box (if redis.IsSome then "redis" else "memory") ]
    printfn "%s" (JsonSerializer.Serialize report)
    for _, http in users do
        (http :> IDisposable).Dispose()
finally
    for silo in processes do
        if not silo.HasExited then
            silo.Kill true
            silo.WaitForExit()
    workDirectory.Delete true
#endif
