// The exposed-deployment profile: dotnet fsi Scripts/deploy_profile.fsx [-- --rows 5 --bits 4]
// Compiles one Iris-shaped network (4 features, 3 layers, 4/4 bits) twice, at the default p_error of 2^-40 per
// bootstrap and at the deployment profile's 2^-64, and runs both encrypted end to end in process (FheModelClient
// keys + encryption, FheModelServer evaluation) on the same rows in the same run, so the cost of the profile is a
// ratio of two measurements taken side by side. Prints one JSON object per line.
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

let rows = int (argOr "rows" "5")
let bits = argOr "bits" "4"

let train = readCsv (dataFile "iris_train.csv")
let test = readCsv (dataFile "iris_test.csv")
let standardize = standardizer train.Features
let xTrain, xTest = standardize train.Features, standardize test.Features
let settings =
    NeuralNetSettings.defaults
    |> NeuralNetSettings.setMany
        [ "module__n_layers", "3"; "module__n_w_bits", bits; "module__n_a_bits", bits; "max_epochs", "100" ]
let model = NeuralNetClassifier<int>(settings).Fit(xTrain, train.Target |> Array.map int)

let profile (log2PError: float) =
    let circuit = model.Compile(xTrain, pError = Math.Pow(2.0, log2PError))
    let directory = Directory.CreateTempSubdirectory "fhenet-profile"
    try
        FheModelDev(model).Save directory.FullName
        let client = new FheModelClient(directory.FullName, Path.Combine(directory.FullName, "keys"))
        let keygen = Stopwatch.StartNew()
        client.GenerateKeys()
        let keygenSeconds = keygen.Elapsed.TotalSeconds
        let server = FheModelServer directory.FullName
        let evaluationKeys = client.EvaluationKeys()
        let prepared = server.LoadEvaluationKeys evaluationKeys
        let expected = xTest[.. rows - 1] |> Array.map (fun x -> IntegerModel.forward circuit.Model (IntegerModel.quantizeRow circuit.Model x))
        let watch = Stopwatch.StartNew()
        let decrypted =
            xTest[.. rows - 1]
            |> Array.map (fun x -> client.DeserializeDecrypt(server.Evaluate(prepared, client.QuantizeEncryptSerialize x, CancellationToken.None)))
        let secondsPerSample = watch.Elapsed.TotalSeconds / float rows
        client.WipeSecretKey()
        let p = circuit.Parameters
        printfn
            "%s"
            (JsonSerializer.Serialize(
                dict
                    [ "name", box "deploy_profile"
                      "log2_p_error", box log2PError
                      "parameter_set", box p.Name
                      "n", box p.LweDimension
                      "k", box p.GlweDimension
                      "N", box p.PolynomialSize
                      "pbs_levels", box p.PbsLevel
                      "ks_levels", box p.KsLevel
                      "bootstraps_per_sample", box circuit.BootstrapsPerSample
                      "evaluation_key_bytes", box evaluationKeys.Length
                      "keygen_s", box keygenSeconds
                      "s_per_sample", box secondsPerSample
                      "bootstraps_per_s", box (float circuit.BootstrapsPerSample / secondsPerSample)
                      "equal_to_clear", box (decrypted = expected) ]
            ))
        secondsPerSample
    finally
        directory.Delete true

let baseline = profile -40.0
let exposed = profile -64.0
printfn "%s" (JsonSerializer.Serialize(dict [ "name", box "deploy_profile_cost"; "slowdown_2^-64_vs_2^-40", box (exposed / baseline); "rows", box rows ]))
#endif
