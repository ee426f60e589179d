/// The HTTP server with the real FHE backend: a saved model served on loopback, driven by FheModelClient through
/// InferenceClient.
module FheNet.Server.Tests.DeploymentTests

open System
open System.IO
open System.Threading.Tasks
open Expecto
open FheNet
open FheNet.Deploy
open FheNet.Estimators
open FheNet.Integer
open FheNet.Server
open FheNet.Server.Tests.ToyBackend

/// A fresh temporary directory, deleted by disposing.
type private TempDirectoryForTest() =
    let info = Directory.CreateTempSubdirectory "fhenet-server-test"
    member _.Path = info.FullName
    interface IDisposable with
        member _.Dispose() = info.Delete true

/// Two interleaved half-moons with a little noise (seeded test data, not a secret).
let private moons (count: int) (seed: int) =
    let rng = Random seed
    let x =
        Array.init count (fun i ->
            let t = rng.NextDouble() * Math.PI
            let jitter () = (rng.NextDouble() - 0.5) * 0.3
            if i % 2 = 0 then [| float32 (cos t + jitter ()); float32 (sin t + jitter ()) |]
            else [| float32 (1.0 - cos t + jitter ()); float32 (0.5 - sin t + jitter ()) |])
    x, Array.init count (fun i -> i % 2)

/// A small classifier, compiled and saved once; the rows to predict.
let private model =
    lazy
        (let x, y = moons 300 1
         let settings =
             NeuralNetSettings.defaults
             |> NeuralNetSettings.setMany (
                 [ "module__n_layers", "2"; "module__n_hidden_neurons_multiplier", "2"; "max_epochs", "10" ]
                 |> List.map (fun (name, value) -> name, (value :> objnull))
             )
         let clf = NeuralNetClassifier<int>(settings).Fit(x, y)
         clf.Compile x |> ignore
         let directory = Directory.CreateTempSubdirectory "fhenet-server-model"
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try directory.Delete true with _ -> ())
         FheModelDev(clf).Save directory.FullName
         directory.FullName, clf, fst (moons 3 2))

let private options =
    { testOptions with
        KeyBudgetBytes = 2L <<< 30
        MaxKeyRequestBytes = 512L <<< 20
        MaxPredictRequestBytes = 1L <<< 20
        QueueTimeout = TimeSpan.FromSeconds 30.0 }

let private serverTest name (work: unit -> Task<unit>) =
    testCaseAsync name (async { do! work () |> Async.AwaitTask })

/// Encrypts, predicts over HTTP and decrypts each row.
let private predictAll (running: RunningServer) (client: FheModelClient) (keyId: string) (rows: float32[][]) =
    task {
        let results = ResizeArray()
        for row in rows do
            let! answer = running.Client.PredictAsync(keyId, client.QuantizeEncryptSerialize row)
            results.Add(client.DeserializeDecrypt answer)
        return results.ToArray()
    }

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Server.Fhe"
        [ serverTest "client → HTTP server → client equals the in-process result and the integer model" (fun () ->
              task {
                  let directory, clf, rows = model.Force()
                  use! running = start options (FheBackend directory)
                  use keys = new TempDirectoryForTest()
                  let! artifact = running.Client.GetClientArtifactAsync()
                  let client = new FheModelClient(artifact, keys.Path)
                  client.GenerateKeys()
                  let! id = running.Client.RegisterKeysAsync(client.EvaluationKeys())
                  let! remote = predictAll running client id rows
                  let local = FheModelServer directory
                  let evaluationKeys = client.EvaluationKeys()
                  let inProcess = rows |> Array.map (fun row -> client.DeserializeDecrypt(local.Run(client.QuantizeEncryptSerialize row, evaluationKeys)))
                  Expect.equal remote inProcess "HTTP equals in-process"
                  let c = clf.Circuit
                  let scaled = rows |> Array.map (FheNet.Preprocessing.FeatureScaler.transformRow clf.Scaler)
                  Expect.equal remote (scaled |> Array.map (fun r -> IntegerModel.forward c.Model (IntegerModel.quantizeRow c.Model r))) "equals disable"
                  let tampered = client.QuantizeEncryptSerialize rows[0]
                  tampered[tampered.Length / 2] <- tampered[tampered.Length / 2] ^^^ 4uy
                  let! refused =
                      task {
                          try
                              let! _ = running.Client.PredictAsync(id, tampered)
                              return None
                          with :? RejectedFheDataException as e ->
                              return Some e
                      }
                  Expect.isSome refused "a tampered ciphertext is refused with 400"
              })

          serverTest "after a restart the client registers its keys again and gets identical results" (fun () ->
              task {
                  let directory, _, rows = model.Force()
                  use keys = new TempDirectoryForTest()
                  let client = new FheModelClient(directory, keys.Path)
                  client.GenerateKeys()
                  let! before, id =
                      task {
                          use! running = start options (FheBackend directory)
                          let! id = running.Client.RegisterKeysAsync(client.EvaluationKeys())
                          let! results = predictAll running client id rows
                          return results, id
                      }
                  use! restarted = start options (FheBackend directory)
                  let! unknown =
                      task {
                          try
                              let! _ = restarted.Client.PredictAsync(id, client.QuantizeEncryptSerialize rows[0])
                              return false
                          with :? UnknownKeyException ->
                              return true
                      }
                  Expect.isTrue unknown "the restarted server does not know the old key id (404)"
                  let! again = restarted.Client.RegisterKeysAsync(client.EvaluationKeys())
                  Expect.equal again id "the same keys register under the same id"
                  let! after = predictAll restarted client again rows
                  Expect.equal after before "identical results"
              })

          serverTest "the real backend's exact key and row sizes are required before a byte is uploaded" (fun () ->
              task {
                  let directory, _, _ = model.Force()
                  let backend = FheBackend directory
                  let bounded = backend :> IBoundedInferenceBackend
                  use! running = start options backend
                  use keys = new TempDirectoryForTest()
                  let client = new FheModelClient(directory, keys.Path)
                  client.GenerateKeys()
                  Expect.equal (int64 (client.EvaluationKeys()).Length) bounded.EvaluationKeyBytes "real keys have the expected size"
                  Expect.equal (int64 (client.QuantizeEncryptSerialize(Array.zeroCreate 2)).Length) bounded.CiphertextBytes "a real row too"
                  let! id = running.Client.RegisterKeysAsync(client.EvaluationKeys())
                  // Raw requests with Expect: 100-continue: the answer comes before any body is sent.
                  let statusFor (path: string) (keyId: string) (length: int64) =
                      task {
                          use tcp = new Net.Sockets.TcpClient()
                          do! tcp.ConnectAsync(running.Address.Host, running.Address.Port)
                          use stream = tcp.GetStream()
                          let head = $"POST /%s{path} HTTP/1.1\r\nHost: localhost\r\nX-FheNet-Key-Id: %s{keyId}\r\nContent-Length: %d{length}\r\nExpect: 100-continue\r\n\r\n"
                          do! stream.WriteAsync(Text.Encoding.ASCII.GetBytes head)
                          use reader = new StreamReader(stream)
                          use timeout = new Threading.CancellationTokenSource(TimeSpan.FromSeconds 10.0)
                          return! reader.ReadLineAsync(timeout.Token)
                      }
                  let! over = statusFor "keys" "" (bounded.EvaluationKeyBytes + 1L)
                  Expect.stringStarts over "HTTP/1.1 413" "one byte more than real keys"
                  let! under = statusFor "keys" "" (bounded.EvaluationKeyBytes - 1L)
                  Expect.stringStarts under "HTTP/1.1 400" "one byte less"
                  let! rowOver = statusFor "predict" id (bounded.CiphertextBytes + 8L)
                  Expect.stringStarts rowOver "HTTP/1.1 413" "a row of another width"
                  let! exact = statusFor "keys" "" bounded.EvaluationKeyBytes
                  Expect.stringStarts exact "HTTP/1.1 100" "the exact size is asked to upload"
                  let batchRows = [| [| 0.1f; -0.2f |]; [| 1.0f; 0.5f |] |]
                  let batch = client.QuantizeEncryptSerializeBatch batchRows
                  Expect.equal (int64 batch.Length) (bounded.CiphertextBatchBytes 2) "a real batch has rows × the row size plus one frame"
                  let! batchExact = statusFor "predict" id (bounded.CiphertextBatchBytes 2)
                  Expect.stringStarts batchExact "HTTP/1.1 100" "a batch's exact size is asked to upload"
                  let! batchOver = statusFor "predict" id (bounded.CiphertextBatchBytes 2 + 1L)
                  Expect.stringStarts batchOver "HTTP/1.1 413" "one byte more than a batch"
                  let! tooMany = statusFor "predict" id (bounded.CiphertextBatchBytes(bounded.MaxBatchRows + 1))
                  Expect.stringStarts tooMany "HTTP/1.1 413" "more rows than the server takes"
                  let! batchResult = running.Client.PredictAsync(id, batch)
                  let! single = running.Client.PredictAsync(id, client.QuantizeEncryptSerialize batchRows[1])
                  let decrypted = client.DeserializeDecryptBatch batchResult
                  Expect.equal decrypted.Length 2 "one result per row over POST /predict"
                  Expect.equal decrypted[1] (client.DeserializeDecrypt single) "a batch's row equals the same row sent alone"
              })

          test "main exits with status 2 on a damaged model directory" {
              use directory = new TempDirectoryForTest()
              File.WriteAllBytes(Path.Combine(directory.Path, ModelFiles.ServerArtifact), "FHENET\000\026 damaged"B)
              Expect.equal (Program.main [| "--model"; directory.Path; "--urls"; "http://127.0.0.1:0" |]) 2 "damaged artifact"
          } ]
