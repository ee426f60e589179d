module FheNet.Tests.Deploy.ContainerTests

open System
open System.IO
open Expecto
open FsCheck.FSharp
open FheNet.Deploy
open FheNet.Tests.Generators

/// A payload of every field type the readers support.
type private Sample =
    { Count: int
      Big: int64
      Real: float
      Words: uint64[]
      Name: string }

let private writeSample (s: Sample) (w: PayloadWriter) =
    w.WriteInt32 s.Count
    w.WriteInt64 s.Big
    w.WriteDouble s.Real
    w.WriteUInt64Array s.Words
    w.WriteString s.Name

let private readSample (r: PayloadReader) =
    let count = r.ReadInt32()
    let big = r.ReadInt64()
    let real = r.ReadDouble()
    let words = r.ReadUInt64Array()
    let name = r.ReadString()
    { Count = count; Big = big; Real = real; Words = words; Name = name }

let private sample =
    gen {
        let! count = Gen.choose (-1000, 1000)
        let! big = Gen.choose (Int32.MinValue, Int32.MaxValue) |> Gen.map (fun v -> int64 v * 7919L)
        let! real = Gen.choose (-100000, 100000) |> Gen.map (fun v -> float v / 7.0)
        let! n = Gen.choose (0, 64)
        let! words = Gen.arrayOfLength n (Gen.choose (0, Int32.MaxValue) |> Gen.map (fun v -> uint64 v * 0x9E3779B97F4A7C15UL))
        let! name = Gen.elements [ ""; "iris"; "clé d'évaluation"; String('x', 300) ]
        return { Count = count; Big = big; Real = real; Words = words; Name = name }
    }

let private context = Container.contextHash "TUNIFORM_2M128_M2C2/model-42"
let private otherContext = Container.contextHash "TUNIFORM_2M128_M1C1/model-42"

let private encode s =
    Container.toBytes ObjectKind.Ciphertexts context (writeSample s)

let private decode bytes =
    Container.ofBytes bytes ObjectKind.Ciphertexts context readSample

let private errorOf (f: unit -> 'a) =
    try
        f () |> ignore
        None
    with :? InvalidFheDataException as e ->
        Some e.Error

/// A stream that hands out at most 3 bytes per Read and cannot seek, like a network stream.
type private TrickleStream(bytes: byte[]) =
    inherit MemoryStream(bytes, false)
    override _.CanSeek = false
    override this.Read(buffer: byte[], offset, count) = base.Read(buffer, offset, min count 3)
    override this.Read(buffer: Span<byte>) = base.Read(buffer.Slice(0, min buffer.Length 3))

let private fuzz = { FsCheckConfig.defaultConfig with maxTest = 2000 }

[<Tests>]
let tests =
    testList
        "Deploy.Container"
        [ testProperty "a framed object round-trips"
          <| forAll sample (fun s -> decode (encode s) = s)

          testProperty "reading from a trickling, non-seekable stream gives the same object"
          <| forAll sample (fun s ->
              use stream = new TrickleStream(encode s)
              Container.read stream ObjectKind.Ciphertexts context Container.DefaultMaxPayloadBytes readSample = s)

          testPropertyWithConfig fuzz "any single-byte mutation is refused with the typed error"
          <| forAll
              (gen {
                  let! s = sample
                  let bytes = encode s
                  let! position = Gen.choose (0, bytes.Length - 1)
                  let! flip = Gen.choose (1, 255)
                  return bytes, position, byte flip
              })
              (fun (bytes, position, flip) ->
                  let mutated = Array.copy bytes
                  mutated[position] <- mutated[position] ^^^ flip
                  (errorOf (fun () -> decode mutated)).IsSome)

          testPropertyWithConfig fuzz "any truncation or extension is refused with the typed error"
          <| forAll
              (gen {
                  let! s = sample
                  let bytes = encode s
                  let! cut = Gen.choose (0, bytes.Length - 1)
                  let! extra = Gen.choose (1, 16)
                  return bytes, cut, extra
              })
              (fun (bytes, cut, extra) ->
                  (errorOf (fun () -> decode bytes[.. cut - 1])).IsSome
                  && (errorOf (fun () -> decode (Array.append bytes (Array.zeroCreate extra)))).IsSome)

          testPropertyWithConfig fuzz "random bytes are refused with the typed error"
          <| forAll (Gen.choose (0, 200) |> Gen.bind (fun n -> Gen.arrayOfLength n (Gen.choose (0, 255) |> Gen.map byte))) (fun bytes ->
              (errorOf (fun () -> decode bytes)).IsSome)

          test "the header names what is wrong" {
              let bytes = encode { Count = 1; Big = 2L; Real = 3.0; Words = [| 4UL |]; Name = "n" }
              Expect.equal
                  (errorOf (fun () -> Container.ofBytes bytes ObjectKind.EvaluationKey context readSample))
                  (Some(FormatError.WrongKind(ObjectKind.EvaluationKey, uint16 ObjectKind.Ciphertexts)))
                  "a ciphertext file read as a key"
              Expect.equal
                  (errorOf (fun () -> Container.ofBytes bytes ObjectKind.Ciphertexts otherContext readSample))
                  (Some FormatError.ParameterMismatch)
                  "ciphertexts of another parameter set"
              Expect.equal (errorOf (fun () -> decode "PK\003\004 not ours"B)) (Some FormatError.NotFheNetData) "a zip file"
              use stream = new MemoryStream(bytes)
              Expect.equal
                  (errorOf (fun () -> Container.read stream ObjectKind.Ciphertexts context 10L readSample))
                  (Some(FormatError.TooLarge(int64 (bytes.Length - Container.HeaderBytes - Container.ChecksumBytes), 10L)))
                  "a payload over the caller's limit"
          }

          test "a hostile element count never allocates: it is refused as truncated" {
              // A well-formed frame whose payload claims 2^31 - 1 words but holds none.
              let bytes =
                  Container.toBytes ObjectKind.Ciphertexts context (fun w -> w.WriteCount Int32.MaxValue)
              let before = GC.GetAllocatedBytesForCurrentThread()
              let error = errorOf (fun () -> Container.ofBytes bytes ObjectKind.Ciphertexts context (fun r -> r.ReadUInt64Array()))
              let allocated = GC.GetAllocatedBytesForCurrentThread() - before
              Expect.equal error (Some FormatError.Truncated) "declared count beyond the payload"
              Expect.isLessThan allocated 1_000_000L "no allocation of the declared size"
          }

          test "a payload the reader does not consume exactly is malformed" {
              let bytes = Container.toBytes ObjectKind.Ciphertexts context (fun w -> w.WriteInt64 5L)
              match errorOf (fun () -> Container.ofBytes bytes ObjectKind.Ciphertexts context (fun r -> r.ReadInt32())) with
              | Some(FormatError.Malformed _) -> ()
              | other -> failtest $"expected Malformed, got %A{other}"
          } ]
