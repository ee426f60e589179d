module FheNet.Tests.Tfhe.EngineTests

open System
open Expecto
open FsCheck.FSharp
open FheNet
open FheNet.Tfhe
open FheNet.Tests.Generators

/// A deliberately insecure set that bootstraps `bits`-bit messages quickly and reliably: tiny n, tiny GLWE noise,
/// N large enough that a half box is 16 modulus-switch slots (about 10 σ of the switch noise for n = 128).
let weak (bits: int) (order: PbsOrder) =
    { Presets.tuniformM2C2 with
        Name = $"WEAK_%d{bits}BIT_%A{order}"
        MessageModulus = 1 <<< bits
        CarryModulus = 1
        MaxNoiseLevel = 1
        LweDimension = 128
        GlweDimension = 1
        PolynomialSize = max 512 (32 <<< bits)
        LweNoise = NoiseDistribution.TUniform 20
        GlweNoise = NoiseDistribution.TUniform 3
        PbsBaseLog = 23
        PbsLevel = 1
        KsBaseLog = 4
        KsLevel = 8
        Order = order
        Insecure = true }

let private keysCache = Collections.Concurrent.ConcurrentDictionary<string, Lazy<ClientKey * ServerKey>>()

/// Client and server keys of a set, generated once per test run.
let keys (p: TfheParameters) =
    keysCache.GetOrAdd(p.Name, fun _ -> lazy (let ck = ClientKey.generate p in ck, ServerKey.ofClientKey ck)).Value

// One generator per thread: Expecto runs tests in parallel and a generator's buffer is not thread-safe.
let private rng = new Threading.ThreadLocal<AesCtrGenerator>(fun () -> AesCtrGenerator.Secret())
let private randomBelow (m: int) = int64 (rng.Value.NextUInt64() % uint64 m)

let private weak4 = weak 4 PbsOrder.KeyswitchBootstrap

/// Checks PBS(f)(m) = f(m) for a random table at `bits` and the given messages.
let private checkTable (p: TfheParameters) (messages: int64 list) =
    let ck, sk = keys p
    let table = Array.init p.PlaintextModulus (fun _ -> randomBelow p.PlaintextModulus)
    let lut = Pbs.lookupTableOfValues p p.PlaintextModulus table
    for m in messages do
        let out = Pbs.apply sk lut (Lwe.encrypt ck m)
        Expect.equal (Lwe.decrypt ck out) table[int m] $"%s{p.Name}: f(%d{m})"

[<Tests>]
let tests =
    testList
        "Tfhe.Engine"
        [ test "every TUniform preset: encrypt/decrypt round trip under the big and the small key" {
              for p in Presets.tuniform2M128 do
                  let ck = ClientKey.generate p
                  let e = Parameters.encoding p
                  let noise = AesCtrGenerator.Secret()
                  for m in 0L .. int64 p.PlaintextModulus - 1L do
                      Expect.equal (Lwe.decrypt ck (Lwe.encrypt ck m)) m $"%s{p.Name} big key, m = %d{m}"
                      let small = LweEncryption.encrypt ck.SmallKey (AesCtrGenerator(Seed.Fresh())) noise p.LweNoise (e.Encode m)
                      Expect.equal (e.Decode(LweEncryption.phase ck.SmallKey small)) m $"%s{p.Name} small key, m = %d{m}"
          }
          testProperty "add, sub, neg, scalar multiply, plaintext add and linear combinations act on messages mod 2p"
          <| forAll (Gen.zip3 (Gen.choose (0, 15)) (Gen.choose (0, 15)) (Gen.choose (-3, 3))) (fun (a, b, w) ->
              let ck, _ = keys weak4
              let ca, cb = Lwe.encrypt ck (int64 a), Lwe.encrypt ck (int64 b)
              let signed (x: int64) = let r = ((x % 32L) + 32L) % 32L in if r >= 16L then r - 32L else r
              Lwe.decryptSigned ck (Lwe.add ca cb) = signed (int64 (a + b))
              && Lwe.decryptSigned ck (Lwe.sub ca cb) = signed (int64 (a - b))
              && Lwe.decryptSigned ck (Lwe.neg ca) = signed (int64 -a)
              && Lwe.decryptSigned ck (Lwe.mulScalar (int64 w) ca) = signed (int64 (w * a))
              && Lwe.decryptSigned ck (Lwe.addPlaintext weak4 (int64 w) ca) = signed (int64 (a + w))
              && Lwe.decryptSigned ck (Lwe.linearCombination weak4 [| int64 w; 2L |] [| ca; cb |] 5L) = signed (int64 (w * a + 2 * b + 5)))
          test "signed messages wrap modulo 2p; trivial ciphertexts decrypt without noise" {
              let ck, sk = keys weak4
              for m in -16L .. 15L do
                  Expect.equal (Lwe.decryptSigned ck (Lwe.encryptWrapping ck m)) m $"signed m = %d{m}"
                  Expect.equal (Lwe.decryptSigned ck (Lwe.trivial weak4 m)) m $"trivial m = %d{m}"
              // A trivial ciphertext bootstraps like any other.
              let lut = Pbs.lookupTable weak4 (fun i -> int64 (i * i % 16))
              Expect.equal (Lwe.decrypt ck (Pbs.apply sk lut (Lwe.trivial weak4 3L))) 9L "f(3) = 9"
          }
          test "GLWE phase = plaintext + small noise; sample extraction keeps coefficient 0" {
              let ck, _ = keys weak4
              let key = ck.GlweKey
              let n = key.PolynomialSize
              let plaintext = Array.init n (fun _ -> rng.Value.NextUInt64())
              let ct = GlweEncryption.encrypt key (AesCtrGenerator(Seed.Fresh())) (AesCtrGenerator.Secret()) weak4.GlweNoise plaintext
              let phase = GlweEncryption.phase key ct
              Expect.isTrue (Array.forall2 (fun (a: uint64) b -> abs (int64 (a - b)) <= 8L) phase plaintext) "|noise| ≤ 2^3"
              let lwe = Array.zeroCreate<uint64> (n + 1)
              Bootstrap.sampleExtractInto 1 n (ReadOnlySpan ct.Data) (Span lwe)
              Expect.equal (LweEncryption.phase ck.BigKey { Data = lwe }) phase[0] "same phase, exactly"
          }
          test "external product by GGSW(μ) multiplies by μ; CMux selects" {
              let ck, _ = keys weak4
              let key = ck.GlweKey
              let n = key.PolynomialSize
              let e = Encoding.WithPadding 16
              let messages = Array.init n (fun _ -> randomBelow 16)
              let encrypt (m: int64[]) =
                  GlweEncryption.encrypt key (AesCtrGenerator(Seed.Fresh())) (AesCtrGenerator.Secret()) weak4.GlweNoise (Array.map e.Encode m)
              let decrypt ct = GlweEncryption.phase key ct |> Array.map e.Decode
              let decomposer = Decomposer.Create(weak4.PbsBaseLog, weak4.PbsLevel)
              let scratch = BootstrapScratch(1, n, decomposer.Level)
              for path in SimdPath.supported do
                  for mu in [ 0L; 1L ] do
                      let ggsw = GlweEncryption.encryptGgsw key decomposer (AesCtrGenerator(Seed.Fresh())) (AesCtrGenerator.Secret()) weak4.GlweNoise mu
                      let fourier = FourierConversion.ggsw path ggsw
                      let ct = encrypt messages
                      let out = Array.zeroCreate<uint64> (2 * n)
                      Bootstrap.externalProductAdd path fourier 0 ct.Data out scratch
                      Expect.equal (decrypt { ct with Data = out }) (Array.map ((*) mu) messages) $"%A{path}: GGSW(%d{mu}) ⊡ GLWE(M)"
                      let other = Array.init n (fun _ -> randomBelow 16)
                      let ct0 = Array.copy ct.Data
                      Bootstrap.cmux path fourier 0 ct0 (encrypt other).Data scratch
                      Expect.equal (decrypt { ct with Data = ct0 }) (if mu = 1L then other else messages) $"%A{path}: CMux(%d{mu})"
          }
          testProperty "the blind rotation's fused CMux equals the external product of the explicit difference, every path"
          <| forAll (Gen.choose (1, 2 * 512 - 1)) (fun degree ->
              let ck, _ = keys weak4
              let n = 512
              let decomposer = Decomposer.Create(weak4.PbsBaseLog, weak4.PbsLevel)
              let ggsw = GlweEncryption.encryptGgsw ck.GlweKey decomposer (AesCtrGenerator(Seed.Fresh())) (AesCtrGenerator.Secret()) weak4.GlweNoise 1L
              let acc = Array.init (2 * n) (fun _ -> rng.Value.NextUInt64())
              SimdPath.supported
              |> List.forall (fun path ->
                  let fourier = FourierConversion.ggsw path ggsw
                  let scratch = BootstrapScratch(1, n, 1)
                  let fused = Array.copy acc
                  Bootstrap.cmuxRotation path fourier 0 fused degree scratch
                  let difference = Array.zeroCreate<uint64> (2 * n)
                  for r in 0..1 do
                      Polynomial.monomialMulMinusSelf (ReadOnlySpan(acc, r * n, n)) degree (Span(difference, r * n, n))
                  let reference = Array.copy acc
                  Bootstrap.externalProductAdd path fourier 0 difference reference scratch
                  fused = reference))
          test "keyswitch preserves the message; every supported path agrees exactly with the scalar one" {
              let ck, sk = keys weak4
              let e = Parameters.encoding weak4
              for m in 0L..15L do
                  let ct = Lwe.encrypt ck m
                  let run path =
                      let out = Array.zeroCreate<uint64> (sk.Keyswitch.OutputDimension + 1)
                      Keyswitch.keyswitchInto path sk.Keyswitch ct.Data 0 out
                      out
                  let reference = run SimdPath.Scalar
                  for path in SimdPath.supported do
                      Expect.equal (run path) reference $"%A{path} = scalar"
                  Expect.equal (e.Decode(LweEncryption.phase ck.SmallKey { Data = reference })) m $"m = %d{m}"
          }
          test "PBS(f)(m) = f(m) for random tables at precisions 1 to 8 bits" {
              for bits in 1..8 do
                  let p = weak bits PbsOrder.KeyswitchBootstrap
                  let messages = if bits <= 4 then [ 0L .. int64 p.PlaintextModulus - 1L ] else List.init 6 (fun _ -> randomBelow p.PlaintextModulus)
                  checkTable p messages
          }
          test "PBS-KS order: small-key ciphertexts in and out" {
              let p = weak 3 PbsOrder.BootstrapKeyswitch
              checkTable p [ 0L..7L ]
              let ck, _ = keys p
              Expect.equal (Lwe.encrypt ck 1L).Dimension p.LweDimension "ciphertexts under the small key"
          }
          test "a table may change the encoding: 4-bit input, 2-bit signed output" {
              let ck, sk = keys weak4
              let lut = Pbs.lookupTableWith weak4 16 4 (fun i -> int64 (i / 4) - 2L)
              for m in 0L..15L do
                  let out = Pbs.apply sk lut (Lwe.encrypt ck m)
                  Expect.equal (lut.Output.DecodeSigned(LweEncryption.phase ck.BigKey out)) (m / 4L - 2L) $"m = %d{m}"
          }
          test "applyMany on all cores equals apply" {
              let ck, sk = keys weak4
              let lut = Pbs.lookupTable weak4 (fun i -> int64 (15 - i))
              let cts = Array.init 12 (fun i -> Lwe.encrypt ck (int64 (i % 16)))
              let results = Pbs.applyMany sk lut cts |> Array.map (Lwe.decrypt ck)
              Expect.equal results (Array.init 12 (fun i -> int64 (15 - i % 16))) "f(m) = 15 - m"
          }
          test "seeded ciphertexts and compressed keys expand deterministically, decrypt and bootstrap correctly" {
              let ck, _ = keys weak4
              for m in 0L..15L do
                  let seeded = Lwe.encryptSeeded ck m
                  Expect.equal (Lwe.decrypt ck (Lwe.expand seeded)) m "seeded decrypts"
                  Expect.equal (Lwe.expand seeded) (Lwe.expand seeded) "expansion is deterministic"
              let compressed = CompressedServerKey.generate ck
              let a, b = CompressedServerKey.decompress compressed, CompressedServerKey.decompress compressed
              Expect.equal a.Bootstrap.Data b.Bootstrap.Data "same Fourier BSK"
              Expect.equal a.Keyswitch.Data b.Keyswitch.Data "same KSK"
              let plainBsk = BootstrapKeyGeneration.expand compressed.Bootstrap
              Expect.equal (FourierConversion.bootstrapKey SimdPath.best plainBsk).Data a.Bootstrap.Data "streamed = expanded then converted"
              Expect.equal (plainBsk.Data.Length / 2) compressed.Bootstrap.Bodies.Length "k = 1: the seeded BSK is half the size"
              Expect.isLessThan compressed.SizeBytes a.SizeBytes "compressed is smaller"
              let lut = Pbs.lookupTable weak4 (fun i -> int64 ((i * 5) % 16))
              for m in 0L..15L do
                  Expect.equal (Lwe.decrypt ck (Pbs.apply a lut (Lwe.encrypt ck m))) ((m * 5L) % 16L) "decompressed key bootstraps"
          }
          test "the real 4-bit preset TUNIFORM_2M128_M2C2: KS-PBS of a random table on every message" {
              checkTable Presets.tuniformM2C2 [ 0L..15L ]
          }
          test "a table may read fewer bits than the set's plaintext space, and one box reads the sign" {
              let ck, sk = keys weak4
              // Messages encoded for an 8-entry table (Δ = 2^60) on the 16-message set.
              let eight = Encoding.WithPadding 8
              let table = Pbs.lookupTableWith weak4 8 16 (fun i -> int64 (7 - i))
              for m in 0L..7L do
                  Expect.equal (Lwe.decrypt ck (Pbs.apply sk table (Lwe.encryptWith ck eight m))) (7L - m) $"f(%d{m})"
              // The sign lookup: +v below half a turn, -v above (here v = 3 at Δ_16).
              let sign = Pbs.lookupTableWith weak4 1 16 (fun _ -> 3L)
              Expect.equal (Lwe.decryptSigned ck (Pbs.apply sk sign (Lwe.encryptWith ck eight 1L))) 3L "phase 1/16 of a turn"
              Expect.equal (Lwe.decryptSigned ck (Pbs.apply sk sign (Lwe.encryptWith ck eight 9L))) -3L "phase 9/16 of a turn"
          }
          test "bad input: mismatched dimensions, wrong tables, out-of-range messages" {
              let ck, sk = keys weak4
              let ck3, _ = keys (weak 3 PbsOrder.BootstrapKeyswitch)
              let lut = Pbs.lookupTable weak4 (fun i -> int64 i)
              let ct = Lwe.encrypt ck 1L
              let foreign = Lwe.encrypt ck3 1L
              Expect.throwsT<DimensionMismatchException> (fun () -> Pbs.apply sk lut foreign |> ignore) "a ciphertext of another set"
              Expect.throwsT<DimensionMismatchException> (fun () -> Lwe.add ct foreign |> ignore) "adding ciphertexts of two sets"
              Expect.throwsT<DimensionMismatchException> (fun () -> Lwe.decrypt ck3 ct |> ignore) "decrypting with another key"
              Expect.throwsT<DimensionMismatchException> (fun () -> Pbs.apply sk (Pbs.lookupTable (weak 5 PbsOrder.KeyswitchBootstrap) (fun i -> int64 i)) ct |> ignore) "a table of another set"
              Expect.throwsT<DimensionMismatchException> (fun () -> Pbs.apply sk { lut with InputModulus = 3 } ct |> ignore) "a table whose size is not a power of two"
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> Pbs.lookupTableWith weak4 3 16 (fun i -> int64 i) |> ignore) "3 entries asked for"
              Expect.throwsT<InvalidShapeException> (fun () -> Pbs.lookupTableOfValues weak4 16 [| 1L; 2L; 3L |] |> ignore) "3 entries"
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> Lwe.encrypt ck 16L |> ignore) "16 is outside [0, 16)"
              Expect.throwsT<ParameterOutOfRangeException> (fun () -> ClientKey.generate { weak4 with PolynomialSize = 1000 } |> ignore) "N not a power of two"
              Expect.throwsT<DimensionMismatchException> (fun () -> Lwe.linearCombination weak4 [| 1L |] [| ct; ct |] 0L |> ignore) "one weight, two ciphertexts"
          } ]
