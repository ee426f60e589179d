module FheNet.Tests.Deploy.ModelDeploymentTests

open System
open System.IO
open Expecto
open FheNet
open FheNet.Deploy
open FheNet.Estimators
open FheNet.Fhe
open FheNet.Integer
open FheNet.Tfhe
open FheNet.Tests
open FheNet.Tests.Deploy.DeployFixtures

/// What the integer model (fhe = disable, which execute equals) computes for raw rows, scaled as the model learned.
let private disable (c: Circuit) (scaler: FheNet.Preprocessing.FeatureScaler) (rows: float32[][]) =
    rows
    |> Array.map (fun row ->
        IntegerModel.forward c.Model (IntegerModel.quantizeRow c.Model (FheNet.Preprocessing.FeatureScaler.transformRow scaler row)))

/// In-process execute: the Fhe layer's own client and server halves, fresh keys.
let private execute (c: Circuit) (rows: float32[][]) =
    let keys = FheClient.keygen c
    let prepared = FheServer.prepare c (CompressedServerKey.decompress keys.CompressedServerKey)
    rows
    |> Array.map (fun row ->
        FheClient.decrypt keys c (FheServer.evaluate prepared (FheClient.encryptRow keys c row |> Array.map Lwe.expand)))

/// A model directory saved from the classifier, and a client with keys for it (generated once for these tests).
let private deployed =
    lazy
        (let directory = Directory.CreateTempSubdirectory "fhenet-deploy-model"
         let model = directory.FullName
         dev.Force().Save model
         let client = new FheModelClient(model, Path.Combine(model, "keys"))
         client.GenerateKeys()
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try directory.Delete true with _ -> ())
         model, client)

let private windows (bytes: byte[]) (size: int) =
    [ for start in 0 .. size .. bytes.Length - size -> bytes[start .. start + size - 1] ]

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Deploy.Model"
        [ test "dev → client → server → client equals in-process execute and disable" {
              let _, _, xTest, _ = moons.Force()
              let rows = xTest[..1]
              let model, client = deployed.Force()
              let server = FheModelServer model
              let c = circuit.Force()
              Expect.equal server.Circuit c "the server reloads the compiled circuit"
              let evaluationKeys = client.EvaluationKeys()
              let remote =
                  rows |> Array.map (fun row -> client.DeserializeDecrypt(server.Run(client.QuantizeEncryptSerialize row, evaluationKeys)))
              Expect.equal remote (execute c rows) "equal to in-process execute"
              Expect.equal remote (disable c (classifier.Force().Scaler) rows) "equal to disable"
              use file = File.OpenRead client.EvaluationKeysPath
              let streamed = server.LoadEvaluationKeys(file, file.Length)
              let row = client.QuantizeEncryptSerialize rows[0]
              Expect.equal
                  (client.DeserializeDecrypt(server.Evaluate(streamed, row, Threading.CancellationToken.None)))
                  remote[0]
                  "keys streamed from the key file"
              use cancelled = new Threading.CancellationTokenSource()
              cancelled.Cancel()
              Expect.throwsT<OperationCanceledException> (fun () -> server.Evaluate(streamed, row, cancelled.Token) |> ignore) "cancelled"
              let id = server.RegisterKeys evaluationKeys
              Expect.equal (server.RegisterKeys evaluationKeys) id "the same keys, the same id"
              let probabilities = rows |> Array.map (fun row -> client.DeserializeDecryptDequantize(server.Run(id, client.QuantizeEncryptSerialize row)))
              Expect.equal probabilities (classifier.Force().PredictProba(rows, FheMode.Execute)) "the estimator's probabilities"
              Expect.throwsT<EvaluationKeysNotFoundException> (fun () -> server.Run("00", client.QuantizeEncryptSerialize rows[0]) |> ignore) "unknown id"
              Expect.equal client.Classes [| "0"; "1" |] "class labels"
          }

          test "a batch of rows is evaluated under one key and decrypts to the clear model's outputs row by row" {
              let _, _, xTest, _ = moons.Force()
              let rows = xTest[..2]
              let model, client = deployed.Force()
              let server = FheModelServer model
              let id = server.RegisterKeys(client.EvaluationKeys())
              let batch = client.QuantizeEncryptSerializeBatch rows
              Expect.equal (int64 batch.Length) (FramedSize.inputBatch 2 rows.Length) "the batch's exact framed size"
              let result = server.Run(id, batch)
              Expect.equal (client.DeserializeDecryptBatch result) (disable (circuit.Force()) (classifier.Force().Scaler) rows) "equal to disable, row by row"
              Expect.equal
                  (client.DeserializeDecryptDequantizeBatch(server.Run(id, batch)))
                  (classifier.Force().PredictProba(rows, FheMode.Execute))
                  "the estimator's probabilities, row by row"
              Expect.equal (errorOf (fun () -> client.DeserializeDecrypt result)) (Some(FormatError.WrongKind(ObjectKind.Ciphertexts, uint16 ObjectKind.CiphertextBatch))) "a batch result is not one row's"
              Expect.throwsT<InvalidShapeException> (fun () -> client.QuantizeEncryptSerializeBatch [||] |> ignore) "zero rows"
              Expect.throwsT<InvalidShapeException> (fun () -> client.QuantizeEncryptSerializeBatch [| rows[0]; [| 1.0f |] |] |> ignore) "a row of another width"
              server.MaxBatchRows <- 2
              Expect.equal (errorOf (fun () -> server.Run(id, batch))) (Some(FormatError.Malformed "input rows = 3 is outside [1, 2]")) "more rows than the server takes"
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> server.MaxBatchRows <- 0) "at least one row"
              use cancelled = new Threading.CancellationTokenSource()
              cancelled.Cancel()
              Expect.throwsT<OperationCanceledException>
                  (fun () -> server.Evaluate(server.TryGetKeys(id).Value, client.QuantizeEncryptSerializeBatch rows[..1], cancelled.Token) |> ignore)
                  "cancelled"
          }

          test "the client quantizes and dequantizes as the estimator does" {
              let x, y, xTest, _ = moons.Force()
              let _, client = deployed.Force()
              let c = circuit.Force()
              for row in xTest do
                  let scaled = FheNet.Preprocessing.FeatureScaler.transformRow (classifier.Force().Scaler) row
                  Expect.equal (client.Quantize row) (IntegerModel.quantizeRow c.Model scaled) "input codes"
              let proba = xTest |> Array.map (fun row -> client.Dequantize(disable c (classifier.Force().Scaler) [| row |] |> Array.exactlyOne))
              Expect.equal proba (classifier.Force().PredictProba xTest) "probabilities"
              // A regressor: values mapped back through the target scaling.
              let targets = Array.init x.Length (fun i -> float y[i] * 3.0 + float (x[i][0]))
              let regressor =
                  NeuralNetRegressor(
                      NeuralNetSettings.defaults
                      |> NeuralNetSettings.setMany ([ "module__n_layers", "2"; "max_epochs", "5" ] |> List.map (fun (n, v) -> n, (v :> objnull)))
                  )
                      .Fit(x, targets)
              regressor.Compile x |> ignore
              use keys = new TempDirectory()
              let regressorClient = new FheModelClient(FheSerializer.clientArtifactToBytes (FheModelDev(regressor).ClientArtifact), keys.Path)
              let values = xTest |> Array.map (fun row -> regressorClient.Dequantize(disable regressor.Circuit regressor.Scaler [| row |] |> Array.exactlyOne))
              Expect.equal values (regressor.PredictMulti xTest) "regression values"
              Expect.equal regressorClient.Classes [||] "no classes"
          }

          test "a saved compiled model reloads and predicts identically in every mode" {
              let _, _, xTest, _ = moons.Force()
              let model, _ = deployed.Force()
              let original = classifier.Force()
              let reloaded = NeuralNetClassifier<int>.Load(original.Dump())
              Expect.equal (reloaded.LoadCompiled model) original.Circuit "the same circuit"
              for mode in [ FheMode.Disable; FheMode.Simulate ] do
                  Expect.equal (reloaded.PredictProba(xTest, mode)) (original.PredictProba(xTest, mode)) $"%A{mode}"
              Expect.equal (reloaded.PredictProba(xTest[..1], FheMode.Execute)) (original.PredictProba(xTest[..1], FheMode.Execute)) "execute"
              let loaded = FheModelDev.Load model
              Expect.equal loaded.ClientArtifact (dev.Force().ClientArtifact) "the client artifact"
              let other = NeuralNetClassifier<int>(original.Settings).Fit(Array.map (Array.map (fun v -> -v)) (let x, _, _, _ = moons.Force() in x), (let _, y, _, _ = moons.Force() in y |> Array.map int))
              Expect.throwsT<ArgumentException> (fun () -> other.LoadCompiled model |> ignore) "another network's circuit"
          }

          test "keys are stored owner-only, reloaded, refused for another model, regenerated when forced" {
              let model, client = deployed.Force()
              let keyDirectory = Path.Combine(model, "keys")
              let secret = Path.Combine(keyDirectory, ModelFiles.ClientKey)
              if not (OperatingSystem.IsWindows()) then
                  Expect.equal (File.GetUnixFileMode secret) (UnixFileMode.UserRead ||| UnixFileMode.UserWrite) "0600"
              let again = new FheModelClient(model, keyDirectory)
              Expect.equal (again.EvaluationKeys()) (client.EvaluationKeys()) "the same keys are loaded"
              let server = FheModelServer model
              let result = server.Run(client.QuantizeEncryptSerialize (let _, _, xTest, _ = moons.Force() in xTest[0]), client.EvaluationKeys())
              Expect.equal (again.DeserializeDecrypt result) (client.DeserializeDecrypt result) "a reloaded client decrypts"
              // A client of another model (the tiny parameter set) finds these keys and refuses them.
              let foreign =
                  new FheModelClient(
                      FheSerializer.clientArtifactToBytes (tinyArtifact.Force()),
                      keyDirectory,
                      { ArtifactTrust.defaults with InsecureParameters = InsecureParameters.AllowForTests }
                  )
              Expect.equal (errorOf (fun () -> foreign.EvaluationKeys())) (Some FormatError.ParameterMismatch) "another model's keys"
              Expect.equal (errorOf (fun () -> foreign.GenerateKeys())) (Some FormatError.ParameterMismatch) "not overwritten unless forced"
              use fresh = new TempDirectory()
              let empty = new FheModelClient(model, fresh.Path)
              Expect.throwsT<FileNotFoundException> (fun () -> empty.EvaluationKeys() |> ignore) "no keys yet"
              empty.GenerateKeys()
              let first = empty.EvaluationKeys()
              empty.GenerateKeys()
              Expect.equal (empty.EvaluationKeys()) first "existing keys are kept"
              empty.GenerateKeys(force = true)
              Expect.notEqual (empty.EvaluationKeys()) first "forced: new keys"
              Expect.equal
                  (errorOf (fun () -> server.Run(client.QuantizeEncryptSerialize (Array.zeroCreate 2), FheSerializer.evaluationKeysToBytes (tinyContext.Force()) (tinyEvaluationKeys.Force()))))
                  (Some FormatError.ParameterMismatch)
                  "the server refuses keys of another model"
          }

          test "no artifact contains the secret key, and the client never sends it" {
              let model, client = deployed.Force()
              let secretFile = File.ReadAllBytes(Path.Combine(model, "keys", ModelFiles.ClientKey))
              let key = FheSerializer.clientKeyOfBytes client.Artifact secretFile
              let packed (bits: uint64[]) = Array.init ((bits.Length + 7) / 8) (fun i -> Seq.fold (fun acc k -> if 8 * i + k < bits.Length then acc ||| (byte bits[8 * i + k] <<< k) else acc) 0uy [ 0..7 ])
              let wide (bits: uint64[]) = bits |> Array.collect BitConverter.GetBytes
              // 16-byte windows of the packed bits (128 key bits) and 64-byte windows of the bits as u64 (8 key bits).
              let patterns =
                  windows (packed key.GlweKey.Bits) 16 @ windows (packed key.SmallKey.Bits) 16
                  @ windows (wide key.GlweKey.Bits) 64 @ windows (wide key.SmallKey.Bits) 64
                  |> List.filter (fun w -> w |> Array.exists ((<>) 0uy))
              Expect.isTrue (patterns |> List.exists (contains secretFile)) "the search finds the key in the secret key file"
              let published =
                  [ "server.fhe", File.ReadAllBytes(Path.Combine(model, ModelFiles.ServerArtifact))
                    "client.fhe", File.ReadAllBytes(Path.Combine(model, ModelFiles.ClientArtifact))
                    "manifest.json", File.ReadAllBytes(Path.Combine(model, ModelFiles.Manifest))
                    "evaluation keys", client.EvaluationKeys()
                    "ciphertexts", client.QuantizeEncryptSerialize(Array.zeroCreate 2) ]
              for name, bytes in published do
                  Expect.isFalse (patterns |> List.exists (contains bytes)) $"%s{name} holds no secret key bits"
          }

          test "damaged or mismatched model directories are refused with the right error" {
              let model, _ = deployed.Force()
              use copy = new TempDirectory()
              for file in [ ModelFiles.ServerArtifact; ModelFiles.ClientArtifact ] do
                  File.Copy(Path.Combine(model, file), copy.Sub file)
              Expect.equal (FheModelDev.Load(copy.Path).Circuit) (circuit.Force()) "a copy loads"
              // Another model on the same (secure) parameter set: its last layer's biases moved by one.
              let c = circuit.Force()
              let last = Array.last c.Model.Layers
              let moved = { last with Biases = last.Biases |> Array.map ((+) 1L) }
              let otherModel = { c with Model = { c.Model with Layers = Array.append c.Model.Layers[.. c.Model.Layers.Length - 2] [| moved |] } }
              use other = new TempDirectory()
              FheModelDev(otherModel, dev.Force().ClientArtifact.Task).Save other.Path
              File.Copy(other.Sub ModelFiles.ClientArtifact, copy.Sub ModelFiles.ClientArtifact, true)
              Expect.equal (errorOf (fun () -> FheModelDev.Load copy.Path)) (Some FormatError.ParameterMismatch) "another model's client artifact"
              let server = File.ReadAllBytes(Path.Combine(model, ModelFiles.ServerArtifact))
              File.WriteAllBytes(copy.Sub ModelFiles.ServerArtifact, server[.. server.Length / 2])
              Expect.equal (errorOf (fun () -> FheModelServer copy.Path)) (Some FormatError.Truncated) "a truncated server artifact"
              File.Delete(copy.Sub ModelFiles.ServerArtifact)
              Expect.throwsT<FileNotFoundException> (fun () -> FheModelServer copy.Path |> ignore) "no server artifact"
          } ]
