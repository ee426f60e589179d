/// What a client accepts from the wire: the security check on every received parameter set, the model owner's
/// signature, the pinned model; and the exact sizes a server expects.
module FheNet.Tests.Deploy.TrustTests

open System
open System.IO
open System.Security.Cryptography
open Expecto
open FheNet.Deploy
open FheNet.Tfhe
open FheNet.Tests.Deploy.DeployFixtures

/// The refusal a call raised; fails the test when it succeeded or raised anything else.
let private refusalOf (f: unit -> 'a) =
    try
        f () |> ignore
        failtest "the artifact was accepted"
    with :? UntrustedArtifactException as e ->
        e.Refusal

/// The real (secure) client artifact with its parameter set swapped for TFHE-rs-sized test keys (n = 128), framed
/// and checksummed like a genuine one: what a malicious server or a man in the middle would send.
let private forged (insecureMark: bool) =
    let genuine = dev.Force().ClientArtifact
    FheSerializer.clientArtifactToBytes { genuine with Parameters = { Presets.testFast with Insecure = insecureMark } }

let private p256 () = ECDsa.Create ECCurve.NamedCurves.nistP256

[<Tests>]
let tests =
    testList
        "Deploy.Trust"
        [ test "a forged artifact with an insecure parameter set is refused before any key is generated, whatever its mark" {
              use directory = new TempDirectory()
              for mark in [ true; false ] do
                  match refusalOf (fun () -> new FheModelClient(forged mark, directory.Path)) with
                  | ArtifactRefusal.InsecureParameters report ->
                      Expect.equal report.ParameterSet Presets.testFast.Name "names the set"
                      Expect.isFalse report.IsSecure "the verdict"
                  | other -> failtest $"refused for another reason: %A{other}"
              Expect.isEmpty (Directory.GetFileSystemEntries directory.Path) "no key was written"
              // The same artifact in a model directory is refused too: a file's mark is no more trusted than the wire's.
              let model = directory.Sub "model"
              Directory.CreateDirectory model |> ignore
              File.WriteAllBytes(Path.Combine(model, ModelFiles.ClientArtifact), forged true)
              match refusalOf (fun () -> new FheModelClient(model, directory.Sub "keys")) with
              | ArtifactRefusal.InsecureParameters _ -> ()
              | other -> failtest $"refused for another reason: %A{other}"
              Expect.isFalse (Directory.Exists(directory.Sub "keys")) "no key directory was created"
          }

          test "only a local opt-in accepts an insecure set, and the message says what is missing" {
              let bytes = forged true
              let accepted = ArtifactTrust.accept { ArtifactTrust.defaults with InsecureParameters = InsecureParameters.AllowForTests } bytes
              Expect.equal accepted.Parameters.LweDimension 128 "decoded under the opt-in"
              let e = Expect.throwsC (fun () -> ArtifactTrust.accept ArtifactTrust.defaults bytes |> ignore) id
              Expect.stringContains e.Message "not 128-bit secure" "says why"
              Expect.stringContains e.Message "n = 128" "names the weak key"
          }

          test "a model saved with the owner's key is served signed, and a client that trusts the key accepts it" {
              use owner = p256 ()
              use directory = new TempDirectory()
              let model = directory.Sub "model"
              dev.Force().Save(model, owner)
              let served = (FheModelServer model).ClientArtifact
              Expect.isTrue (ArtifactSigning.isSigned served) "GET /client bytes are signed"
              use ownerPublic = ArtifactSigning.importPublicKey (ArtifactSigning.exportPublicKey owner)
              let trust = { ArtifactTrust.defaults with OwnerPublicKey = Some ownerPublic }
              use client = new FheModelClient(served, directory.Sub "keys", trust)
              Expect.equal client.Artifact (dev.Force().ClientArtifact) "the saved artifact"
              // A signature of another model's artifact in the directory stops the server from starting.
              let other = Array.copy (FheSerializer.clientArtifactToBytes (dev.Force().ClientArtifact))
              other[other.Length / 2] <- other[other.Length / 2] ^^^ 1uy
              File.WriteAllBytes(Path.Combine(model, ModelFiles.SignedClientArtifact), ArtifactSigning.sign owner other)
              Expect.throwsT<InvalidFheDataException> (fun () -> FheModelServer model |> ignore) "a mismatched signed artifact"
          }

          test "a signed artifact verifies under the owner's key; forged, re-signed, altered or unsigned ones are refused" {
              use owner = p256 ()
              use attacker = p256 ()
              let genuine = FheSerializer.clientArtifactToBytes (dev.Force().ClientArtifact)
              let signed = ArtifactSigning.sign owner genuine
              use ownerPublic = ArtifactSigning.importPublicKey (ArtifactSigning.exportPublicKey owner)
              let trust = { ArtifactTrust.defaults with OwnerPublicKey = Some ownerPublic }
              Expect.equal (ArtifactTrust.accept trust signed) (dev.Force().ClientArtifact) "the genuine artifact"
              use directory = new TempDirectory()
              let client = new FheModelClient(signed, directory.Path, trust)
              Expect.equal client.Artifact (dev.Force().ClientArtifact) "a client of the signed artifact"
              // An attacker who forges an insecure artifact must sign it with a key the client does not trust.
              Expect.equal (refusalOf (fun () -> ArtifactTrust.accept trust (ArtifactSigning.sign attacker (forged false)))) ArtifactRefusal.BadSignature "forged and re-signed"
              Expect.equal (refusalOf (fun () -> ArtifactTrust.accept trust (ArtifactSigning.sign attacker genuine))) ArtifactRefusal.BadSignature "genuine but signed by another key"
              Expect.equal (refusalOf (fun () -> ArtifactTrust.accept trust genuine)) ArtifactRefusal.Unsigned "unsigned"
              Expect.equal (refusalOf (fun () -> new FheModelClient(forged false, directory.Sub "k", trust))) ArtifactRefusal.Unsigned "unsigned forgery"
              // Every single-byte change of the signed bytes is refused with a typed error.
              for position in 0 .. signed.Length - 1 do
                  let altered = Array.copy signed
                  altered[position] <- altered[position] ^^^ 0x20uy
                  try
                      ArtifactTrust.accept trust altered |> ignore
                      failtest $"a change at byte %d{position} was accepted"
                  with
                  | :? UntrustedArtifactException
                  | :? InvalidFheDataException -> ()
              // Without a key the signature is not checked but the security check still is.
              Expect.equal (ArtifactTrust.accept ArtifactTrust.defaults signed) (dev.Force().ClientArtifact) "signed, no key given"
          }

          test "the owner's key must be P-256" {
              use p384 = ECDsa.Create ECCurve.NamedCurves.nistP384
              Expect.throwsT<ArgumentException> (fun () -> ArtifactSigning.sign p384 [| 1uy |] |> ignore) "P-384 owner"
              Expect.throwsT<ArgumentException> (fun () -> ArtifactSigning.importPublicKey [| 1uy; 2uy |] |> ignore) "not a key"
              Expect.throwsT<ArgumentException> (fun () -> ArtifactSigning.importPublicKey (p384.ExportSubjectPublicKeyInfo()) |> ignore) "a P-384 public key"
          }

          test "a client pinned to a model refuses another model's artifact" {
              let genuine = dev.Force().ClientArtifact
              let bytes = FheSerializer.clientArtifactToBytes genuine
              let pinned = { ArtifactTrust.defaults with ExpectedModelContext = Some genuine.ModelContext }
              Expect.equal (ArtifactTrust.accept pinned bytes) genuine "the expected model"
              let other = Array.copy genuine.ModelContext
              other[0] <- other[0] ^^^ 1uy
              match refusalOf (fun () -> ArtifactTrust.accept { pinned with ExpectedModelContext = Some other } bytes) with
              | ArtifactRefusal.UnexpectedModel(expected, found) ->
                  Expect.equal (expected, found) (other, genuine.ModelContext) "both contexts named"
              | refusal -> failtest $"refused for another reason: %A{refusal}"
          }

          test "the exact framed sizes a server expects are those of real keys and rows" {
              let wider = { tinyParameters with Name = "TINY_K2_INSECURE"; GlweDimension = 2; PbsLevel = 3; KsLevel = 2 }
              for p in [ tinyParameters; wider ] do
                  let key = CompressedServerKey.generate (ClientKey.generate p)
                  let bytes = FheSerializer.evaluationKeysToBytes (tinyContext.Force()) key
                  Expect.equal (FramedSize.evaluationKeys p) (int64 bytes.Length) $"evaluation keys of %s{p.Name}"
              let key = tinyClientKey.Force()
              for features in [ 1; 2; 7 ] do
                  let row = SeededLweRow.encrypt key (Encoding.WithPadding 16) (Array.zeroCreate features)
                  Expect.equal (FramedSize.inputRow features) (int64 (FheSerializer.inputsToBytes (tinyContext.Force()) row).Length) $"%d{features} features"
          } ]

[<Tests>]
let hygiene =
    testList
        "Deploy.KeyHygiene"
        [ test "wiping a client key zeroes its bits" {
              let key = ClientKey.generate tinyParameters
              Expect.isTrue (Array.exists ((<>) 0UL) key.GlweKey.Bits) "a fresh key has set bits"
              ClientKey.wipe key
              Expect.isTrue (Array.forall ((=) 0UL) key.SmallKey.Bits && Array.forall ((=) 0UL) key.GlweKey.Bits) "all zero"
          }

          test "a client whose secret key was wiped refuses to encrypt or regenerate" {
              use directory = new TempDirectory()
              let client = new FheModelClient(FheSerializer.clientArtifactToBytes (dev.Force().ClientArtifact), directory.Path)
              client.GenerateKeys()
              client.QuantizeEncryptSerialize(Array.zeroCreate 2) |> ignore
              client.WipeSecretKey()
              Expect.throwsT<ObjectDisposedException> (fun () -> client.QuantizeEncryptSerialize(Array.zeroCreate 2) |> ignore) "encrypt"
              Expect.throwsT<ObjectDisposedException> (fun () -> client.GenerateKeys()) "regenerate"
              Expect.isTrue (File.Exists(Path.Combine(directory.Path, ModelFiles.ClientKey))) "the key file stays"
          }

          test "disposing a client wipes its secret key" {
              use directory = new TempDirectory()
              let client = new FheModelClient(FheSerializer.clientArtifactToBytes (dev.Force().ClientArtifact), directory.Path)
              do
                  use scoped = client
                  scoped.GenerateKeys()
              Expect.throwsT<ObjectDisposedException> (fun () -> client.QuantizeEncryptSerialize(Array.zeroCreate 2) |> ignore) "encrypt after dispose"
          } ]

[<Tests>]
let streamBounds =
    testList
        "Deploy.StreamBounds"
        [ test "reading keys from a stream allocates at most the payload limit, whatever the header and counts declare" {
              let context = tinyContext.Force()
              let genuine = FheSerializer.evaluationKeysToBytes context (tinyEvaluationKeys.Force())
              // A header declaring `declared` payload bytes and a bootstrapping key body count filling them, followed
              // by only 200 bytes: what a stranger sends to make a server allocate before the data arrives.
              let forged (declared: int64) =
                  let bytes = Array.copy genuine[.. 199]
                  Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(Span(bytes, 44, 8), declared)
                  Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(Span(bytes, Container.HeaderBytes + 36, 4), int ((declared - 64L) / 8L))
                  bytes
              let readWith (limit: int64) (bytes: byte[]) =
                  use stream = new MemoryStream(bytes)
                  let before = GC.GetAllocatedBytesForCurrentThread()
                  let error =
                      try
                          FheSerializer.readEvaluationKeys stream tinyParameters context limit |> ignore
                          None
                      with :? InvalidFheDataException as e ->
                          Some e.Error
                  error, GC.GetAllocatedBytesForCurrentThread() - before
              let limit = 1L <<< 20
              let error, allocated = readWith limit (forged (64L <<< 20))
              Expect.equal error (Some(FormatError.TooLarge(64L <<< 20, limit))) "over the limit: refused from the header"
              Expect.isLessThan allocated (64L <<< 10) "nothing sized by the declaration"
              let error, allocated = readWith limit (forged limit)
              Expect.equal error (Some FormatError.Truncated) "within the limit: refused when the data ends"
              Expect.isLessThan allocated (limit + (256L <<< 10)) "at most the limit"
              Expect.isGreaterThan allocated (limit / 2L) "the count was honoured up to the limit (so the bound is what holds)"
          } ]
