module FheNet.Tests.Preprocessing.PreprocessingTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open FheNet
open FheNet.Deploy
open FheNet.Estimators
open FheNet.Preprocessing
open FheNet.Tests
open FheNet.Tests.Deploy.DeployFixtures

let private column (j: int) (rows: float32[][]) = rows |> Array.map (fun r -> float r[j])

let private meanStd (values: float[]) =
    let mean = Array.average values
    mean, sqrt (values |> Array.averageBy (fun v -> (v - mean) ** 2.0))

/// Raw features of very different magnitudes: what a user's CSV holds.
let private raw (x: float32[][]) = x |> Array.map (fun r -> [| r[0] * 1000.0f + 3000.0f; r[1] * 0.001f - 0.5f |])

let private nonFinite (f: unit -> unit) =
    try
        f ()
        failtest "expected NonFiniteFeatureException"
    with :? NonFiniteFeatureException as e ->
        e

let private settings =
    NeuralNetSettings.defaults
    |> NeuralNetSettings.setMany ([ "module__n_layers", "2"; "max_epochs", "5" ] |> List.map (fun (k, v) -> k, (v :> objnull)))

[<Tests>]
let tests =
    testList
        "Preprocessing"
        [ testProperty "standard scaling of any finite columns gives mean 0 and standard deviation 1 (or 0 for a constant column)"
          <| fun (seed: int) (scaleExponent: int) (offset: int) ->
              let rng = Random seed
              let scale = 10.0 ** float (abs scaleExponent % 7 - 3)
              let rows =
                  Array.init 50 (fun _ -> [| float32 (float offset + scale * rng.NextDouble()); float32 offset |])
              let scaler = FeatureScaler.fit FeatureScaling.Standard rows
              let scaled = FeatureScaler.transform scaler rows
              let mean0, std0 = meanStd (column 0 scaled)
              let mean1, std1 = meanStd (column 1 scaled)
              abs mean0 < 1e-3 && abs (std0 - 1.0) < 1e-3 && mean1 = 0.0 && std1 = 0.0

          test "a constant or near-constant column is only centred; a small but real spread is kept" {
              let rows =
                  Array.init 20 (fun i -> [| 7.0f; 1000.0f + (if i % 2 = 0 then 0.0f else 6.1e-5f); 0.01f + 0.001f * float32 (i % 2) |])
              let scaler = FeatureScaler.fit FeatureScaling.Standard rows
              Expect.equal scaler.Scale[0] 1.0 "constant"
              Expect.equal scaler.Scale[1] 1.0 "float32 noise on a large magnitude"
              Expect.floatClose Accuracy.high scaler.Scale[2] 0.0005 "small spread on a small magnitude"
              let unseen = FeatureScaler.transformRow scaler [| 8.0f; 1001.0f; 0.02f |]
              Expect.isTrue (unseen |> Array.forall (fun v -> abs v < 100.0f)) $"no blow-up: %A{unseen}"
          }

          test "robust scaling uses the median and the interquartile range (linear quantiles), so outliers do not squeeze the rest" {
              let rows = [| 1.0f; 2.0f; 3.0f; 4.0f; 5.0f; 6.0f; 7.0f; 8.0f; 9.0f; 1000.0f |] |> Array.map (fun v -> [| v |])
              let scaler = FeatureScaler.fit FeatureScaling.Robust rows
              Expect.equal (scaler.Center[0], scaler.Scale[0]) (5.5, 7.75 - 3.25) "median, q75 - q25"
              Expect.equal (FeatureScaler.fit FeatureScaling.None rows) (FeatureScaler.identity 1) "none"
          }

          test "preprocessing is a named setting with the reference's spellings; a bad value names the choices" {
              let set v = (NeuralNetSettings.set "preprocessing" v NeuralNetSettings.defaults).Scaling
              Expect.equal [ set "robust"; set "StandardScaler"; set "none" ] [ FeatureScaling.Robust; FeatureScaling.Standard; FeatureScaling.None ] "parsed"
              Expect.equal NeuralNetSettings.defaults.Scaling FeatureScaling.Standard "default"
              let pairs = NeuralNetSettings.toPairs { NeuralNetSettings.defaults with Scaling = FeatureScaling.Robust }
              Expect.equal (NeuralNetSettings.setMany (pairs |> Array.map (fun (k, v) -> k, (v :> objnull))) NeuralNetSettings.defaults).Scaling FeatureScaling.Robust "round trip"
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> set "minmax" |> ignore) "unknown"
          }

          test "raw features of any magnitude train as well as standardized ones, and every path applies the scaler" {
              let x, y, xTest, yTest = moons.Force()
              let y, yTest = Array.map int y, Array.map int yTest
              let model = NeuralNetClassifier<int>(settings).Fit(raw x, y)
              Expect.isGreaterThan (model.Score(raw xTest, yTest)) 0.8 "accuracy on raw features"
              let none = NeuralNetClassifier<int>({ settings with Scaling = FeatureScaling.None }).Fit(raw x, y)
              Expect.isLessThan (none.Score(raw xTest, yTest)) (model.Score(raw xTest, yTest)) "unscaled raw features train worse"
              Expect.equal (model.BitWidths(raw x)) (FheNet.Integer.IntegerModel.bitWidths model.IntegerModel.Value (FeatureScaler.transform model.Scaler (raw x))) "bit widths on scaled rows"
              model.Compile(raw x) |> ignore
              let rows = (raw xTest)[..19]
              Expect.equal (model.Predict(rows, FheMode.Simulate)) (model.Predict rows) "simulate on raw rows"
              let client = FheModelDev(model).ClientArtifact
              Expect.equal client.Inputs.Scaler model.Scaler "client.fhe carries the scaler"
              use keys = new TempDirectory()
              let c = new FheModelClient(FheSerializer.clientArtifactToBytes client, keys.Path)
              let codes = rows |> Array.map c.Quantize
              let expected = rows |> Array.map (FeatureScaler.transformRow model.Scaler >> FheNet.Integer.IntegerModel.quantizeRow model.Circuit.Model)
              Expect.equal codes expected "the client quantizes raw rows as the model does"
          }

          test "a NaN or infinite feature is a typed error naming the row and the column, in fit, predict and the client" {
              let x, y, _, _ = moons.Force()
              let bad = Array.copy x
              bad[3] <- [| x[3][0]; Single.PositiveInfinity |]
              let fitError = nonFinite (fun () -> NeuralNetClassifier<int>(settings).Fit(bad, Array.map int y) |> ignore)
              Expect.equal (fitError.Row, fitError.Column) (3, 1) "fit names row 3, column 1"
              let model = classifier.Force()
              let e = nonFinite (fun () -> model.Predict([| x[0]; [| Single.NaN; 0.0f |] |]) |> ignore)
              Expect.equal (e.Row, e.Column) (1, 0) "predict names row 1, column 0"
              use keys = new TempDirectory()
              let client = new FheModelClient(FheSerializer.clientArtifactToBytes (dev.Force().ClientArtifact), keys.Path)
              Expect.throwsT<NonFiniteFeatureException> (fun () -> client.Quantize [| 0.0f; Single.NaN |] |> ignore) "client"
          }

          test "the dumped model keeps its scaler; a version-1 document (no scaler) still loads and takes features as they are" {
              let model = classifier.Force()
              let loaded = NeuralNetClassifier<int>.Load(model.Dump())
              Expect.equal loaded.Scaler model.Scaler "scaler"
              let doc = JsonObject.Parse(model.Dump()) |> nonNull |> _.AsObject()
              doc["Version"] <- JsonValue.Create 1
              doc.Remove "ScalerCenter" |> ignore
              doc.Remove "ScalerScale" |> ignore
              let old = NeuralNetClassifier<int>.Load(doc.ToJsonString())
              Expect.equal old.Scaler (FeatureScaler.identity 2) "identity"
              Expect.equal old.Settings.Scaling FeatureScaling.None "setting"
              doc["Version"] <- JsonValue.Create 3
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> NeuralNetClassifier<int>.Load(doc.ToJsonString()) |> ignore) "future version"
          }

          test "a compiled model is restored only by a model with the same scaler" {
              let model = classifier.Force()
              use dir = new TempDirectory()
              FheModelDev(model).Save dir.Path
              let same = NeuralNetClassifier<int>.Load(model.Dump())
              Expect.equal (same.LoadCompiled dir.Path) model.Circuit "restored"
              let doc = JsonObject.Parse(model.Dump()) |> nonNull |> _.AsObject()
              doc["ScalerCenter"] <- JsonArray(JsonValue.Create 1.0, JsonValue.Create 2.0)
              let other = NeuralNetClassifier<int>.Load(doc.ToJsonString())
              Expect.throwsT<ArgumentException> (fun () -> other.LoadCompiled dir.Path |> ignore) "another scaler"
          }

          test "the client flags each feature of a row outside the calibrated range, widened by the compile's margin" {
              let x, _, _, _ = moons.Force()
              let lo, hi = column 0 x |> Array.min, column 0 x |> Array.max
              let margin = 0.25
              let client = dev.Force().ClientArtifact
              Expect.floatClose Accuracy.high client.Inputs.Range.Max[0] (hi + margin * (hi - lo)) "max"
              use keys = new TempDirectory()
              let c = new FheModelClient(FheSerializer.clientArtifactToBytes client, keys.Path)
              Expect.isTrue (c.CheckRange x[0]).InRange "a training row"
              let outside = c.CheckRange [| float32 (hi + (margin + 0.1) * (hi - lo)); float32 (lo - 1000.0) |]
              Expect.equal (outside.Features |> Array.map (fun f -> f.Column)) [| 0; 1 |] "both features"
              Expect.equal (FeatureRange.ofRows Double.PositiveInfinity x) (FeatureRange.unbounded 2) "infinite margin: unbounded"
          }

          test "client.fhe refuses a scaler or a range that cannot be, and dumped models a scaler of the wrong width" {
              let artifact = dev.Force().ClientArtifact
              let refused (inputs: InputContract) =
                  let bytes = FheSerializer.clientArtifactToBytes { artifact with Inputs = inputs }
                  Expect.throwsT<InvalidFheDataException> (fun () -> FheSerializer.clientArtifactOfBytes bytes |> ignore) $"%A{inputs}"
              refused { artifact.Inputs with Scaler = { artifact.Inputs.Scaler with Scale = [| 0.0; 1.0 |] } }
              refused { artifact.Inputs with Range = { Min = [| 1.0; 0.0 |]; Max = [| 0.0; 1.0 |] } }
              refused { artifact.Inputs with Scaler = { artifact.Inputs.Scaler with Center = [| 0.0 |] } }
              Expect.equal (FheSerializer.clientArtifactOfBytes (FheSerializer.clientArtifactToBytes artifact)) artifact "a valid one reads back"
              let doc = JsonObject.Parse(classifier.Force().Dump()) |> nonNull |> _.AsObject()
              doc["ScalerScale"] <- JsonArray(JsonValue.Create 1.0)
              Expect.throwsT<InvalidShapeException> (fun () -> NeuralNetClassifier<int>.Load(doc.ToJsonString()) |> ignore) "one scale for two features"
          }

          test "the CSV reader skips blank lines, reads columns by name and names the line of a bad cell" {
              let text = "x,y,label\n1,2,a\n\n3,4,b\n5,,c\n"
              let e =
                  try
                      Csv.read "t.csv" (new StringReader(text)) "label" None |> ignore
                      failtest "expected CsvFormatException"
                  with :? CsvFormatException as e ->
                      e
              Expect.equal (e.Line, e.Column) (5, "y") "the empty cell's line and column"
              let table = Csv.read "t.csv" (new StringReader("x,y,label\n1,2,a\n\n3,4,b\n")) "label" (Some [| "y" |])
              Expect.equal (table.Features, table.Labels, table.Lines) ([| [| 2.0f |]; [| 4.0f |] |], [| "a"; "b" |], [| 2; 4 |]) "table"
          } ]
