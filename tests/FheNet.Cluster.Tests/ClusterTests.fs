/// The inference cluster on an in-process Orleans test cluster: three silos with the real key storage, placement and
/// FHE backend, each with the server's HTTP front door on loopback, driven through ClusterInferenceClient.
module FheNet.Cluster.Tests.ClusterTests

open System
open System.IO
open System.Threading
open System.Threading.Tasks
open Expecto
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting.Server
open Microsoft.AspNetCore.Hosting.Server.Features
open Microsoft.Extensions.DependencyInjection
open Orleans.TestingHost
open FheNet.Cluster
open FheNet.Deploy
open FheNet.Estimators
open FheNet.Integer
open FheNet.Server
open FheNet.Tests

/// A tiny Iris classifier (2 layers, few epochs: small keys, fast evaluation), compiled and saved once.
let private model =
    lazy
        (let xTrain, yTrain, xTest, _ = TestData.split "iris"
         let settings =
             NeuralNetSettings.defaults
             |> NeuralNetSettings.setMany (
                 [ "module__n_layers", "2"; "module__n_hidden_neurons_multiplier", "1"; "max_epochs", "10" ]
                 |> List.map (fun (name, value) -> name, (value :> objnull))
             )
         let clf = NeuralNetClassifier<int>(settings).Fit(xTrain, yTrain |> Array.map int)
         let circuit = clf.Compile xTrain
         let directory = Directory.CreateTempSubdirectory "fhenet-cluster-model"
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try directory.Delete true with _ -> ())
         FheModelDev(clf).Save directory.FullName
         directory.FullName, circuit.Model, xTest)

let private serverOptions directory =
    { ServerOptions.defaults directory with
        Urls = "http://127.0.0.1:0"
        MaxConcurrentEvaluations = 8
        KeyBudgetBytes = 1L <<< 30
        MaxKeyRequestBytes = 512L <<< 20
        MaxPredictRequestBytes = 1L <<< 20
        QueueTimeout = TimeSpan.FromSeconds 60.0 }

/// An in-process test cluster whose silos each have the server's HTTP front door.
[<Sealed>]
type private TestClusterWithFrontDoors(cluster: InProcessTestCluster, frontDoors: (InProcessSiloHandle * WebApplication * Uri)[]) =
    member _.Cluster = cluster
    member _.FrontDoors = frontDoors |> Array.map (fun (_, _, address) -> address)

    /// Kills a silo without a goodbye, and its front door with it, as when its machine dies.
    member _.Kill(index: int) =
        task {
            let silo, app, _ = frontDoors[index]
            do! app.StopAsync(CancellationToken(true))
            do! cluster.KillSiloAsync silo
        }

    interface IAsyncDisposable with
        member _.DisposeAsync() =
            task {
                for _, app, _ in frontDoors do
                    do! app.StopAsync(CancellationToken(true))
                    do! app.DisposeAsync()
                do! cluster.DisposeAsync()
            }
            |> ValueTask

let private startCluster (silos: int) =
    task {
        let directory, _, _ = model.Force()
        let settings =
            { ClusterSettings.defaults (serverOptions directory) with
                EvaluationSlots = 2
                ProbeTimeout = TimeSpan.FromSeconds 2.0 }
        let fheModel = FheModelServer directory
        let builder = InProcessTestClusterBuilder(int16 silos)
        builder.Options.ConfigureFileLogging <- false
        builder.ConfigureSilo(fun _ silo -> ClusterHost.configureSilo settings fheModel silo) |> ignore
        let cluster = builder.Build()
        do! cluster.DeployAsync()
        let frontDoors = ResizeArray()
        for silo in cluster.Silos do
            let app = Server.createApp settings.Server (ClusterHost.backendOf fheModel silo.ServiceProvider)
            do! app.StartAsync()
            let addresses = nonNull (app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>())
            frontDoors.Add((silo, app, Uri(Seq.exactlyOne addresses.Addresses)))
        return new TestClusterWithFrontDoors(cluster, frontDoors.ToArray())
    }

/// A client with its own keys, in a temporary directory.
let private newClient (artifact: byte[]) =
    let directory = Directory.CreateTempSubdirectory "fhenet-cluster-keys"
    AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try directory.Delete true with _ -> ())
    let client = new FheModelClient(artifact, directory.FullName)
    client.GenerateKeys()
    client

/// Fails unless the work raises RejectedFheDataException (the server's 400).
let private refused (work: unit -> Task<'T>) (message: string) =
    task {
        let mutable raised = false
        try
            let! _ = work ()
            ()
        with :? RejectedFheDataException ->
            raised <- true
        Expect.isTrue raised message
    }

let private clusterTest name (work: unit -> Task<unit>) =
    testCaseAsync name (async { do! work () |> Async.AwaitTask })

[<Tests>]
let settingsTests =
    testList
        "Cluster.Settings"
        [ test "cluster options are taken, the rest goes to the server's parser" {
              let settings =
                  ClusterSettings.parse
                      [| "--model"; "m"; "--silo-port"; "11112"; "--gateway-port"; "30001"; "--primary"; "127.0.0.1:11111"
                         "--urls"; "http://127.0.0.1:5001"; "--evaluation-slots"; "3"; "--probe-timeout-ms"; "1500" |]
              Expect.equal settings.Server.ModelDirectory "m" "the server's option"
              Expect.equal settings.Server.Urls "http://127.0.0.1:5001" "the server's option"
              Expect.equal (settings.SiloPort, settings.GatewayPort) (11112, 30001) "ports"
              Expect.equal (settings.Primary |> Option.map string) (Some "127.0.0.1:11111") "primary"
              Expect.equal settings.EvaluationSlots 3 "slots"
              Expect.equal settings.ProbeTimeout (TimeSpan.FromMilliseconds 1500.0) "probe timeout"
              Expect.isNone settings.Redis "embedded clustering by default"
          }
          test "Redis and a primary silo exclude each other" {
              Expect.throwsT<ClusterOptionsException>
                  (fun () -> ClusterSettings.parse [| "--model"; "m"; "--redis"; "127.0.0.1:6390"; "--primary"; "127.0.0.1:11111" |] |> ignore)
                  "two ways of finding the silos"
          }
          test "a bad port names the option" {
              let e = Expect.throwsC (fun () -> ClusterSettings.parse [| "--model"; "m"; "--silo-port"; "0" |] |> ignore) id
              Expect.stringContains e.Message "--silo-port" "names the option"
          }
          test "replica i of a key is placed by its index" {
              Expect.equal (KeyReplicaPlacementDirector.ReplicaOf(ClusterNames.ReplicaKey("ab12", 7))) 7 "index after the slash"
              Expect.equal (KeyReplicaPlacementDirector.ReplicaOf "ab12") 0 "no index: the first"
          } ]

[<Tests>]
let clusterTests =
    testSequenced
    <| testList
        "Cluster.Fhe"
        [ clusterTest "bad evaluation keys and ciphertexts are refused with 400 at a front door" (fun () ->
              task {
                  use! running = startCluster 2
                  use http = new InferenceClient(running.FrontDoors[1])
                  do! refused (fun () -> http.RegisterKeysAsync [| 1uy; 2uy; 3uy |]) "bytes that are not keys"
                  let directory, _, _ = model.Force()
                  let client = newClient (File.ReadAllBytes(Path.Combine(directory, ModelFiles.ClientArtifact)))
                  let! keyId = http.RegisterKeysAsync(client.EvaluationKeys())
                  Expect.equal keyId (ClusterNames.ContentId(client.EvaluationKeys())) "the key id is the content id"
                  do! refused (fun () -> http.PredictAsync(keyId, [| 9uy; 9uy |])) "bytes that are not ciphertexts"
              })
          clusterTest "3 silos, 2 clients, 3 requests each, one silo killed mid-run: nothing lost, all equal to disable" (fun () ->
              task {
                  let _, integerModel, xTest = model.Force()
                  use! running = startCluster 3
                  use artifactClient = new InferenceClient(running.FrontDoors[0])
                  let! artifact = artifactClient.GetClientArtifactAsync()
                  let killed = 2
                  let requests = 3
                  // Client 0 enters through the silo that dies, client 1 through another one.
                  let users =
                      [| for u in 0..1 ->
                             let client = newClient artifact
                             let doors = Array.init 3 (fun i -> running.FrontDoors[(killed + 2 * u + i) % 3])
                             client, new ClusterInferenceClient(doors, client.EvaluationKeys()) |]
                  let firstResult = TaskCompletionSource()
                  let run u =
                      task {
                          let client, http = users[u]
                          let results = ResizeArray()
                          for i in 0 .. requests - 1 do
                              let row = xTest[(u * requests + i) % xTest.Length]
                              let! answer = http.PredictAsync(client.QuantizeEncryptSerialize row)
                              results.Add((row, client.DeserializeDecrypt answer))
                              if u = 0 then firstResult.TrySetResult() |> ignore
                          return results.ToArray()
                      }
                  let work = [| run 0; run 1 |]
                  do! firstResult.Task.WaitAsync(TimeSpan.FromMinutes 5.0)
                  do! running.Kill killed
                  let! outcomes = Task.WhenAll work
                  let results = Array.concat outcomes
                  Expect.equal results.Length (2 * requests) "every request completed"
                  for row, accumulators in results do
                      Expect.equal accumulators (IntegerModel.forward integerModel (IntegerModel.quantizeRow integerModel row)) "equal to disable"
                  let _, http0 = users[0]
                  Expect.isGreaterThanOrEqual http0.Failovers 1 "the client of the killed silo moved to another front door"
                  Expect.equal (running.Cluster.GetActiveSilos() |> Seq.length) 2 "the killed silo is gone"
                  for _, http in users do
                      (http :> IDisposable).Dispose()
              }) ]
