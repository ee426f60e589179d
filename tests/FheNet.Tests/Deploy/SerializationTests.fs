module FheNet.Tests.Deploy.SerializationTests

open System
open Expecto
open FsCheck.FSharp
open FheNet
open FheNet.Deploy
open FheNet.Fhe
open FheNet.Tfhe
open FheNet.Tests.Generators
open FheNet.Tests.Deploy.DeployFixtures

let private anyContext = Container.contextHash "format tests"

let private parameters =
    gen {
        let! p = Gen.elements (Presets.all @ Presets.testing @ [ tinyParameters ])
        let! name = Gen.elements [ p.Name; "x"; "paramètres"; String('n', 256) ]
        let! insecure = Gen.elements [ true; false ]
        return { p with Name = name; Insecure = insecure }
    }

let private words (count: int) = Gen.arrayOfLength count (Gen.choose (Int32.MinValue, Int32.MaxValue) |> Gen.map (fun v -> uint64 v * 0x9E3779B97F4A7C15UL))

let private seed = gen {
    let! w = words 2
    return { Low = w[0]; High = w[1] } }

let private bits (count: int) = Gen.arrayOfLength count (Gen.elements [ 0UL; 1UL ])

/// The circuit with some weights and biases changed within their ranges: other valid models.
let private circuits =
    gen {
        let c = circuit.Force()
        let! l = Gen.choose (0, c.Model.Layers.Length - 1)
        let layer = c.Model.Layers[l]
        let! i = Gen.choose (0, layer.Weights.Length - 1)
        let! j = Gen.choose (0, layer.Weights[i].Length - 1)
        let! w = Gen.choose (layer.WeightCodes.Min, layer.WeightCodes.Max)
        let! b = Gen.choose (-1000, 1000)
        let weights = layer.Weights |> Array.map Array.copy
        weights[i][j] <- w
        let biases = Array.copy layer.Biases
        biases[i] <- int64 b
        let layers = Array.copy c.Model.Layers
        layers[l] <- { layer with Weights = weights; Biases = biases }
        let! rounding = Gen.elements [ RoundingMethod.Exact; RoundingMethod.ExactPerBit; RoundingMethod.Approximate ]
        // Two-step reads go with exact rounding only.
        let programs = if rounding = RoundingMethod.Exact then c.Layers else c.Layers |> Array.map (fun l -> { l with WindowBits = 0 })
        return { c with Model = { c.Model with Layers = layers }; Layers = programs; Rounding = rounding }
    }

let private tasks (outputs: int) =
    Gen.oneof
        [ Gen.arrayOfLength outputs (Gen.elements [ "0"; "setosa"; "classe é"; ""; String('c', 100) ])
          |> Gen.map ModelTask.Classification
          gen {
              let! mean = Gen.arrayOfLength outputs (Gen.choose (-1000, 1000) |> Gen.map (fun v -> float v / 3.0))
              let! std = Gen.arrayOfLength outputs (Gen.choose (1, 1000) |> Gen.map (fun v -> float v / 7.0))
              return ModelTask.Regression(mean, std)
          } ]

let private outputs (count: int) =
    let size = CiphertextFormat.ciphertextDimension tinyParameters + 1
    Gen.arrayOfLength count (words size |> Gen.map (fun d -> { Data = d }))

/// The serialized forms of each object on the tiny set, and how the receiving side reads them.
let private formats () =
    let artifact = tinyArtifact.Force()
    let context = tinyContext.Force()
    let row = SeededLweRow.encrypt (tinyClientKey.Force()) (Encoding.WithPadding 16) (Array.init artifact.Features int64)
    let result = Array.init artifact.Outputs (fun i -> Lwe.encrypt (tinyClientKey.Force()) (int64 (i % 4)))
    [ "server artifact", FheSerializer.circuitToBytes (tinyCircuit.Force()), (fun b -> FheSerializer.circuitOfBytes b |> ignore)
      // The tiny set is below 128-bit security: read under the tests' local opt-in.
      "client artifact",
      FheSerializer.clientArtifactToBytes artifact,
      (fun b -> ArtifactTrust.accept { ArtifactTrust.defaults with InsecureParameters = InsecureParameters.AllowForTests } b |> ignore)
      "client key",
      FheSerializer.clientKeyToBytes context (tinyClientKey.Force()),
      (fun b -> FheSerializer.clientKeyOfBytes artifact b |> ignore)
      "evaluation keys",
      FheSerializer.evaluationKeysToBytes context (tinyEvaluationKeys.Force()),
      (fun b -> FheSerializer.evaluationKeysOfBytes tinyParameters context b |> ignore)
      "input ciphertexts",
      FheSerializer.inputsToBytes context row,
      (fun b -> FheSerializer.inputsOfBytes tinyParameters artifact.Features context b |> ignore)
      "output ciphertexts",
      FheSerializer.outputsToBytes context result,
      (fun b -> FheSerializer.outputsOfBytes tinyParameters artifact.Outputs context b |> ignore) ]

let private fuzz = { FsCheckConfig.defaultConfig with maxTest = 1000 }

/// Random byte edits: 1 to 4 XORs at distinct positions (two flips of one byte could cancel and leave the frame
/// intact), or a cut, or an insertion.
let private edit (length: int) =
    Gen.oneof
        [ gen {
              let! count = Gen.choose (1, 4)
              let! drawn = Gen.arrayOfLength count (Gen.choose (0, length - 1))
              let positions = Array.distinct drawn
              let! flips = Gen.arrayOfLength positions.Length (Gen.choose (1, 255))
              return fun (b: byte[]) ->
                  Array.iter2 (fun p f -> b[p] <- b[p] ^^^ byte f) positions flips
                  b
          }
          gen {
              let! cut = Gen.choose (0, length - 1)
              return fun (b: byte[]) -> b[.. cut - 1]
          }
          gen {
              let! at = Gen.choose (0, length)
              let! extra = Gen.arrayOfLength 8 (Gen.choose (0, 255) |> Gen.map byte)
              return fun (b: byte[]) -> Array.concat [ b[.. at - 1]; extra; b[at..] ]
          } ]

[<Tests>]
let tests =
    testList
        "Deploy.Serialization"
        [ testProperty "parameter sets round-trip, and their canonical descriptions differ exactly when they do"
          <| forAll (Gen.zip parameters parameters) (fun (p, q) ->
              let bytes = Container.toBytes ObjectKind.ServerArtifact anyContext (fun w -> ParameterFormat.write w p)
              Container.ofBytes bytes ObjectKind.ServerArtifact anyContext ParameterFormat.read = p
              && ((ParameterFormat.canonical p = ParameterFormat.canonical q) = (p = q)))

          testProperty "circuits round-trip"
          <| forAll circuits (fun c -> FheSerializer.circuitOfBytes (FheSerializer.circuitToBytes c) = c)

          test "a circuit that reads its tables in two steps round-trips; a window narrower than a table's is refused" {
              let x, _, _, _ = moons.Force()
              let twoStep = Compiler.compile CompileOptions.Default (classifier.Force().IntegerModel.Value) x
              Expect.exists twoStep.Layers (fun l -> l.WindowBits > 1) "the compiler chose two-step reads"
              Expect.equal (FheSerializer.circuitOfBytes (FheSerializer.circuitToBytes twoStep)) twoStep "round trip"
              let narrowed = { twoStep with Layers = twoStep.Layers |> Array.map (fun l -> if l.WindowBits > 1 then { l with WindowBits = 1 } else l) }
              match errorOf (fun () -> FheSerializer.circuitOfBytes (FheSerializer.circuitToBytes narrowed)) with
              | Some(FormatError.Malformed _) -> ()
              | other -> failtest $"a window of one bit for tables that need more: %A{other}"
          }

          testProperty "a different circuit or parameter set is a different model context"
          <| forAll circuits (fun c ->
              let original = circuit.Force()
              (ModelContext.ofCircuit c = ModelContext.ofCircuit original) = (c = original)
              && ModelContext.ofCircuit { c with Parameters = tinyParameters } <> ModelContext.ofCircuit c)

          testProperty "client artifacts round-trip"
          <| forAll (tasks (circuit.Force().Layers |> Array.last).Neurons) (fun task ->
              let a = ClientArtifactFormat.ofCircuit (circuit.Force()) task (dev.Force().ClientArtifact.Inputs)
              FheSerializer.clientArtifactOfBytes (FheSerializer.clientArtifactToBytes a) = a)

          testProperty "client keys round-trip"
          <| forAll (Gen.zip (bits tinyParameters.LweDimension) (bits tinyParameters.BigLweDimension)) (fun (small, glwe) ->
              let key =
                  { ClientKey.Parameters = tinyParameters
                    SmallKey = { Bits = small }
                    GlweKey = { GlweDimension = 1; PolynomialSize = tinyParameters.PolynomialSize; Bits = glwe } }
              FheSerializer.clientKeyOfBytes (tinyArtifact.Force()) (FheSerializer.clientKeyToBytes (tinyContext.Force()) key) = key)

          testProperty "compressed evaluation keys round-trip"
          <| forAll
              (Gen.zip (Gen.zip seed seed) (Gen.zip (words (16 * 2 * 64)) (words 64)))
              (fun ((bskSeed, kskSeed), (bskBodies, kskBodies)) ->
                  let template = tinyEvaluationKeys.Force()
                  let key =
                      { template with
                          Bootstrap = { template.Bootstrap with Seed = bskSeed; Bodies = bskBodies }
                          Keyswitch = { template.Keyswitch with Seed = kskSeed; Bodies = kskBodies } }
                  let context = tinyContext.Force()
                  FheSerializer.evaluationKeysOfBytes tinyParameters context (FheSerializer.evaluationKeysToBytes context key) = key)

          testProperty "a seeded row round-trips and decrypts to its messages"
          <| forAll (Gen.arrayOfLength (tinyArtifact.Force().Features) (Gen.choose (-64, 63))) (fun messages ->
              let key = tinyClientKey.Force()
              let encoding = Encoding.WithPadding 64
              let row = SeededLweRow.encrypt key encoding (Array.map int64 messages)
              let context = tinyContext.Force()
              let back = FheSerializer.inputsOfBytes tinyParameters messages.Length context (FheSerializer.inputsToBytes context row)
              back = row
              && (SeededLweRow.expand back |> Array.map (Lwe.decryptWith key encoding))
                 = (messages |> Array.map (fun m -> int64 ((m + 128) % 128))))

          testProperty "output ciphertexts round-trip"
          <| forAll (outputs (tinyArtifact.Force().Outputs)) (fun result ->
              let context = tinyContext.Force()
              let count = result.Length
              FheSerializer.outputsOfBytes tinyParameters count context (FheSerializer.outputsToBytes context result) = result)

          testList
              "fuzzed bytes never escape as anything but InvalidFheDataException"
              [ for name, bytes, read in formats () do
                    testPropertyWithConfig fuzz $"%s{name}: edits of the frame are refused"
                    <| forAll (edit bytes.Length) (fun change -> (errorOf (fun () -> read (change (Array.copy bytes)))).IsSome)

                    testPropertyWithConfig fuzz $"%s{name}: edits of the payload past the checksum are refused or decode, without large allocations"
                    <| forAll
                        (Gen.zip (Gen.choose (0, bytes.Length - Container.HeaderBytes - Container.ChecksumBytes - 1)) (Gen.choose (1, 255)))
                        (fun (position, flip) ->
                            let mutated = reframe bytes (fun p -> p[position] <- p[position] ^^^ byte flip)
                            let before = GC.GetAllocatedBytesForCurrentThread()
                            // Decoding either succeeds or raises the typed error; anything else escapes and fails.
                            errorOf (fun () -> read mutated) |> ignore
                            // A corrupted count or dimension never makes the reader allocate beyond the data's size (plus a
                            // constant for formatting an error message).
                            GC.GetAllocatedBytesForCurrentThread() - before < 32L * int64 mutated.Length + (4L <<< 20)) ]

          test "mismatched, truncated and misdirected data is refused with the right error" {
              let real = dev.Force().ClientArtifact
              let tiny = tinyArtifact.Force()
              let keyBytes = FheSerializer.evaluationKeysToBytes tiny.ModelContext (tinyEvaluationKeys.Force())
              Expect.equal
                  (errorOf (fun () -> FheSerializer.evaluationKeysOfBytes real.Parameters real.ModelContext keyBytes))
                  (Some FormatError.ParameterMismatch)
                  "keys of another parameter set"
              let c = tinyCircuit.Force()
              let last = Array.last c.Model.Layers
              let otherModel =
                  { c with
                      Model =
                          { c.Model with
                              Layers = Array.append c.Model.Layers[.. c.Model.Layers.Length - 2] [| { last with Biases = last.Biases |> Array.map ((+) 1L) } |] } }
              Expect.equal
                  (errorOf (fun () -> FheSerializer.evaluationKeysOfBytes tinyParameters (ModelContext.ofCircuit otherModel) keyBytes))
                  (Some FormatError.ParameterMismatch)
                  "keys of another model on the same parameter set"
              Expect.equal
                  (errorOf (fun () -> FheSerializer.evaluationKeysOfBytes tinyParameters tiny.ModelContext keyBytes[.. keyBytes.Length - 2]))
                  (Some FormatError.Truncated)
                  "a truncated key file"
              Expect.equal
                  (errorOf (fun () -> FheSerializer.evaluationKeysOfBytes tinyParameters tiny.ModelContext keyBytes[.. 100]))
                  (Some FormatError.Truncated)
                  "a key file cut in its payload"
              Expect.equal
                  (errorOf (fun () -> FheSerializer.clientKeyOfBytes tiny keyBytes))
                  (Some(FormatError.WrongKind(ObjectKind.ClientKey, uint16 ObjectKind.CompressedEvaluationKey)))
                  "evaluation keys read as a client key"
              let flipped = Array.copy keyBytes
              flipped[keyBytes.Length / 2] <- flipped[keyBytes.Length / 2] ^^^ 1uy
              Expect.equal
                  (errorOf (fun () -> FheSerializer.evaluationKeysOfBytes tinyParameters tiny.ModelContext flipped))
                  (Some FormatError.ChecksumMismatch)
                  "one flipped bit in a body"
              let wrongCount =
                  reframe keyBytes (fun p ->
                      // The bootstrapping key's body count sits after its seed and five dimensions.
                      p[16 + 20] <- p[16 + 20] ^^^ 1uy)
              match errorOf (fun () -> FheSerializer.evaluationKeysOfBytes tinyParameters tiny.ModelContext wrongCount) with
              | Some(FormatError.Malformed _)
              | Some FormatError.Truncated -> ()
              | other -> failtest $"a wrong body count: %A{other}"
          } ]
