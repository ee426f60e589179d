/// Structure-aware fuzzing of every serialized format: each case changes one field the writer wrote (a count, a
/// dimension, a tag, a flag, a float, or a bit of a body), recomputes the checksum so the change reaches the decoder,
/// and requires either a typed error or a decode that re-encodes to exactly the bytes given.
module FheNet.Tests.Deploy.FormatFuzzTests

open System
open System.Buffers.Binary
open System.IO
open System.Security.Cryptography
open Expecto
open FheNet.Deploy
open FheNet.Fhe
open FheNet.Tfhe
open FheNet.Tests.Deploy.DeployFixtures

/// A write-only stream that records where each write began and how long it was: PayloadWriter writes every scalar
/// field (and each array's data) with one call, so the writes are the payload's fields.
[<Sealed>]
type private FieldRecorder() =
    inherit Stream()
    let memory = new MemoryStream()
    let fields = ResizeArray<struct (int * int)>()
    member _.Bytes = memory.ToArray()
    member _.Fields = fields.ToArray()
    override _.CanRead = false
    override _.CanSeek = false
    override _.CanWrite = true
    override _.Length = memory.Length
    override _.Position with get () = memory.Position and set _ = raise (NotSupportedException())
    override _.Flush() = ()
    override _.Read(_: byte[], _: int, _: int) = raise (NotSupportedException())
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())
    override this.Write(buffer: byte[], offset: int, count: int) = this.Write(ReadOnlySpan(buffer, offset, count))
    override _.Write(buffer: ReadOnlySpan<byte>) =
        fields.Add(struct (int memory.Position, buffer.Length))
        memory.Write buffer

/// One format: its framed bytes with their payload fields, and decode-then-encode of received bytes.
type private Format =
    { Name: string
      Framed: byte[]
      Fields: struct (int * int)[]
      Reencode: byte[] -> byte[]
      /// Extra requirements on what decoded (true when none).
      Accepted: byte[] -> bool }

let private format name kind context (write: PayloadWriter -> unit) (decode: byte[] -> 'T) (encode: 'T -> byte[]) accepted =
    use recorder = new FieldRecorder()
    Container.write recorder kind context write
    let framed = recorder.Bytes
    // The first write is the header and the last the checksum: the fields are the writes between them.
    let fields = recorder.Fields[1 .. recorder.Fields.Length - 2]
    { Name = name
      Framed = framed
      Fields = fields
      Reencode = fun bytes -> encode (decode bytes)
      Accepted = accepted }

let private formats () =
    let artifacts = ModelContext.artifacts
    let context = tinyContext.Force()
    let tiny = tinyArtifact.Force()
    // Client artifacts are small whatever the set: the real, secure one, so that the security check can refuse.
    let client = dev.Force().ClientArtifact
    let key = tinyClientKey.Force()
    let row = SeededLweRow.encrypt key (Encoding.WithPadding 16) (Array.init tiny.Features int64)
    let outputs = Array.init tiny.Outputs (fun i -> Lwe.encrypt key (int64 (i % 4)))
    let batch = Array.init 3 (fun i -> SeededLweRow.encrypt key (Encoding.WithPadding 16) (Array.init tiny.Features (fun j -> int64 (i + j))))
    let outputBatch = Array.init 2 (fun r -> Array.init tiny.Outputs (fun i -> Lwe.encrypt key (int64 ((r + i) % 4))))
    [ format "server artifact" ObjectKind.ServerArtifact artifacts (fun w -> CircuitFormat.write w (tinyCircuit.Force()))
          FheSerializer.circuitOfBytes FheSerializer.circuitToBytes (fun _ -> true)
      format "client artifact" ObjectKind.ClientArtifact artifacts (fun w -> ClientArtifactFormat.write w client)
          (ArtifactTrust.accept ArtifactTrust.defaults) FheSerializer.clientArtifactToBytes
          // Whatever a received artifact's fields say, one that decodes has a secure parameter set.
          (fun bytes -> (Security.check (ArtifactTrust.accept ArtifactTrust.defaults bytes).Parameters).IsSecure)
      format "client key" ObjectKind.ClientKey context (fun w -> KeyFormat.writeClientKey w key)
          (FheSerializer.clientKeyOfBytes tiny) (FheSerializer.clientKeyToBytes context) (fun _ -> true)
      format "evaluation keys" ObjectKind.CompressedEvaluationKey context (fun w -> KeyFormat.writeEvaluationKeys w (tinyEvaluationKeys.Force()))
          (FheSerializer.evaluationKeysOfBytes tinyParameters context) (FheSerializer.evaluationKeysToBytes context) (fun _ -> true)
      format "input ciphertexts" ObjectKind.CompressedCiphertexts context (fun w -> CiphertextFormat.writeRow w row)
          (FheSerializer.inputsOfBytes tinyParameters tiny.Features context) (FheSerializer.inputsToBytes context) (fun _ -> true)
      format "output ciphertexts" ObjectKind.Ciphertexts context (fun w -> CiphertextFormat.writeOutputs w outputs)
          (FheSerializer.outputsOfBytes tinyParameters tiny.Outputs context) (FheSerializer.outputsToBytes context) (fun _ -> true)
      format "input ciphertext batch" ObjectKind.CompressedCiphertextBatch context (fun w -> CiphertextFormat.writeRows w batch)
          (FheSerializer.inputBatchOfBytes tinyParameters tiny.Features 8 context) (FheSerializer.inputBatchToBytes context) (fun _ -> true)
      format "output ciphertext batch" ObjectKind.CiphertextBatch context (fun w -> CiphertextFormat.writeOutputRows w outputBatch)
          (FheSerializer.outputBatchOfBytes tinyParameters tiny.Outputs context) (FheSerializer.outputBatchToBytes context) (fun _ -> true) ]

/// Changes one field in place: a scalar gets a boundary or nearby value, a longer field (a body, a string) one bit.
let private mutateField (rng: Random) (bytes: byte[]) (struct (offset, length): struct (int * int)) =
    let span = Span(bytes, offset, length)
    match length with
    | 1 ->
        let v = span[0]
        span[0] <- [| 0uy; 1uy; 2uy; 3uy; 4uy; 255uy; v ^^^ 1uy; v + 1uy |][rng.Next 8]
    | 4 ->
        let v = BinaryPrimitives.ReadInt32LittleEndian span
        let choices = [| 0; 1; -1; v + 1; v - 1; v * 2; v / 2; Int32.MaxValue; Int32.MinValue; 1 <<< 20; 1 <<< 30; rng.Next() |]
        BinaryPrimitives.WriteInt32LittleEndian(span, choices[rng.Next choices.Length])
    | 8 when rng.Next 2 = 0 ->
        let v = BinaryPrimitives.ReadDoubleLittleEndian span
        let choices = [| nan; infinity; -infinity; 0.0; -0.0; -v; 2.0 * v; 1e300; Double.Epsilon; v + 1.0 |]
        BinaryPrimitives.WriteDoubleLittleEndian(span, choices[rng.Next choices.Length])
    | 8 ->
        let v = BinaryPrimitives.ReadInt64LittleEndian span
        let choices = [| 0L; 1L; -1L; v + 1L; v - 1L; Int64.MaxValue; Int64.MinValue |]
        BinaryPrimitives.WriteInt64LittleEndian(span, choices[rng.Next choices.Length])
    | _ ->
        let at = rng.Next length
        span[at] <- span[at] ^^^ (1uy <<< rng.Next 8)

/// Recomputes the frame's checksum over the header and the payload.
let private rechecksum (bytes: byte[]) =
    let body = bytes.Length - Container.ChecksumBytes
    SHA256.HashData(ReadOnlySpan(bytes, 0, body)).CopyTo(bytes, body)

[<Literal>]
let private Cases = 10_000

[<Tests>]
let tests =
    testList
        "Deploy.FormatFuzz"
        [ for f in formats () do
              test $"%s{f.Name}: %d{Cases} field mutations give the typed error or a decode equal to the bytes" {
                  Expect.isGreaterThan f.Fields.Length 3 "the writer's fields were recorded"
                  Expect.equal (f.Reencode f.Framed) f.Framed "the unmutated bytes decode to themselves"
                  let rng = Random 20261203
                  let mutable refused, decoded = 0, 0
                  for case in 1..Cases do
                      let bytes = Array.copy f.Framed
                      // Usually one field, sometimes two (a count and the data it counts).
                      for _ in 1 .. 1 + rng.Next 2 do
                          mutateField rng bytes f.Fields[rng.Next f.Fields.Length]
                      rechecksum bytes
                      let before = GC.GetAllocatedBytesForCurrentThread()
                      let outcome =
                          try
                              Ok(f.Reencode bytes)
                          with
                          | :? InvalidFheDataException
                          | :? UntrustedArtifactException as e -> Error e
                      // A corrupted count never makes the reader allocate far beyond the data's size.
                      let allocated = GC.GetAllocatedBytesForCurrentThread() - before
                      Expect.isLessThan allocated (64L * int64 bytes.Length + (4L <<< 20)) $"case %d{case}: allocation"
                      match outcome with
                      | Error _ -> refused <- refused + 1
                      | Ok again ->
                          if again <> bytes then
                              let at = Seq.zip again bytes |> Seq.tryFindIndex (fun (a, b) -> a <> b) |> Option.defaultValue (min again.Length bytes.Length)
                              let field = f.Fields |> Array.tryFind (fun (struct (o, l)) -> o <= at && at < o + l)
                              failtest $"case %d{case}: decoded to a value that encodes to other bytes (first difference at byte %d{at}, field %A{field}, lengths %d{bytes.Length} and %d{again.Length}; given %A{bytes[at - 4 .. at + 4]}, original %A{f.Framed[at - 4 .. at + 4]}, re-encoded %A{again[at - 4 .. at + 4]})"
                          Expect.isTrue (f.Accepted bytes) $"case %d{case}: a decoded value breaks the format's requirements"
                          decoded <- decoded + 1
                  // Most changes hit a checked field; some (a body bit, a quantizer value) are valid data.
                  Expect.isGreaterThan refused (Cases / 10) "structural changes are refused"
                  printfn "%s: %d refused, %d decoded to themselves" f.Name refused decoded
              } ]
