/// Models, parameter sets and keys shared by the deployment tests, built once.
module FheNet.Tests.Deploy.DeployFixtures

open System
open System.IO
open FheNet
open FheNet.Deploy
open FheNet.Estimators
open FheNet.Fhe
open FheNet.Tfhe
open FheNet.Tests

/// A 2-layer moons network: fast to train, compile and run encrypted.
let private settings =
    NeuralNetSettings.defaults
    |> NeuralNetSettings.setMany (
        // Quantization-aware training from the random start: its wide tables make the compiler choose the
        // two-step reads and its ranges overflow without a margin, which these tests exercise.
        [ "module__n_layers", "2"; "module__n_hidden_neurons_multiplier", "2"; "max_epochs", "15"; "pretrain_epochs", "0" ]
        |> List.map (fun (name, value) -> name, (value :> objnull))
    )

let moons = lazy (TestData.split "moons")

/// A fitted classifier compiled with a 3-bit rounding threshold (so the sign bootstraps of exact rounding run).
let classifier =
    lazy
        (let x, y, _, _ = moons.Force()
         let clf = NeuralNetClassifier<int>(settings).Fit(x, y |> Array.map int)
         clf.Compile(x, roundingThresholdBits = 3) |> ignore
         clf)

/// The classifier's circuit and its client artifact.
let circuit = lazy (classifier.Force().Circuit)
let dev = lazy (FheModelDev(classifier.Force()))

/// INSECURE and tiny (n = 16, N = 64, one level): keys of a few KB so that fuzzing thousands of cases is fast.
let tinyParameters =
    { Presets.testFast with
        Name = "TINY_INSECURE_FOR_FORMAT_TESTS"
        LweDimension = 16
        PolynomialSize = 64
        PbsBaseLog = 12
        PbsLevel = 1
        KsBaseLog = 5
        KsLevel = 1 }

/// The classifier's circuit on the tiny set (for format tests only: never run encrypted at this size).
let tinyCircuit = lazy { circuit.Force() with Parameters = tinyParameters }
let tinyArtifact =
    lazy (ClientArtifactFormat.ofCircuit (tinyCircuit.Force()) (dev.Force().ClientArtifact.Task) (dev.Force().ClientArtifact.Inputs))
let tinyContext = lazy (tinyArtifact.Force().ModelContext)
let tinyClientKey = lazy (ClientKey.generate tinyParameters)
let tinyEvaluationKeys = lazy (CompressedServerKey.generate (tinyClientKey.Force()))

/// A fresh temporary directory, deleted by disposing.
type TempDirectory() =
    let info = Directory.CreateTempSubdirectory "fhenet-deploy-test"
    member _.Path = info.FullName
    member _.Sub(name: string) = System.IO.Path.Combine(info.FullName, name)
    interface IDisposable with
        member _.Dispose() = info.Delete true

/// The format error a call raised; None when it succeeded. Any other exception escapes (and fails the test).
let errorOf (f: unit -> 'a) =
    try
        f () |> ignore
        None
    with :? InvalidFheDataException as e ->
        Some e.Error

/// The same frame with its payload changed by `mutate` and the checksum recomputed: exercises the payload decoders
/// themselves, past the checksum.
let reframe (bytes: byte[]) (mutate: byte[] -> unit) =
    let copy = Array.copy bytes
    let payload = copy[Container.HeaderBytes .. copy.Length - Container.ChecksumBytes - 1]
    mutate payload
    Array.blit payload 0 copy Container.HeaderBytes payload.Length
    let hash = Security.Cryptography.SHA256.HashData(ReadOnlySpan(copy, 0, copy.Length - Container.ChecksumBytes))
    Array.blit hash 0 copy (copy.Length - Container.ChecksumBytes) Container.ChecksumBytes
    copy

/// True when `pattern` occurs in `bytes`.
let contains (bytes: byte[]) (pattern: byte[]) = ReadOnlySpan(bytes).IndexOf(ReadOnlySpan pattern) >= 0
