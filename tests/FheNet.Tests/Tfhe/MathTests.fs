module FheNet.Tests.Tfhe.MathTests

open System
open Expecto
open FsCheck.FSharp
open FheNet
open FheNet.Tfhe
open FheNet.Tests.Generators

let private u64 = Gen.choose (0, Int32.MaxValue) |> Gen.two |> Gen.map (fun (a, b) -> (uint64 a <<< 33) ^^^ (uint64 b <<< 2) ^^^ uint64 (a &&& 3))

let private aesHex (path: bool) (key: string) (plain: string) =
    let rk = Aes128.expandKey (ReadOnlySpan(Convert.FromHexString key))
    let input = Convert.FromHexString plain
    if path then
        let out = Aes128.encryptBlockHardware (Aes128.hardwareRoundKeys rk) (Runtime.Intrinsics.Vector128.Create<byte>(ReadOnlySpan input))
        let bytes = Array.zeroCreate<byte> 16
        Runtime.Intrinsics.Vector128.CopyTo(out, Span bytes)
        Convert.ToHexString bytes
    else
        let out = Array.zeroCreate<byte> 16
        Aes128.encryptBlockPortable rk (ReadOnlySpan input) (Span out)
        Convert.ToHexString out

let private sampleVariance (samples: float[]) =
    let mean = Array.average samples
    samples |> Array.averageBy (fun x -> (x - mean) ** 2.0)

[<Tests>]
let tests =
    testList
        "Tfhe.Math"
        [ testList
              "torus and encoding"
              [ testProperty "decode(encode m + e) = m for |e| < Δ/2, every p"
                <| forAll
                    (Gen.zip3 (Gen.choose (1, 12)) (Gen.choose (0, Int32.MaxValue)) (Gen.choose (-1_000_000, 1_000_000)))
                    (fun (bits, m, e) ->
                        let enc = Encoding.WithPadding(1 <<< bits)
                        let m = int64 m % int64 enc.PlaintextModulus
                        let noise = int64 (float e / 1_000_001.0 * float (enc.Delta / 2UL))
                        enc.Decode(enc.Encode m + uint64 noise) = m && enc.Error(enc.Encode m + uint64 noise) = noise)
                testProperty "signed values wrap modulo 2p and decode back"
                <| forAll (Gen.zip (Gen.choose (1, 8)) (Gen.choose (-1000, 1000))) (fun (bits, m) ->
                    let enc = Encoding.WithPadding(1 <<< bits)
                    let p = int64 enc.PlaintextModulus
                    let m = int64 m % p
                    enc.DecodeSigned(enc.EncodeWrapping m) = m)
                test "Δ = 2^64 / 2p" {
                    Expect.equal (Encoding.WithPadding(16).Delta) (1UL <<< 59) "M2C2: Δ = 2^59"
                    Expect.equal (Encoding.WithPadding(4).Delta) (1UL <<< 61) "M1C1: Δ = 2^61"
                }
                test "a message outside [0, p) or a non-power-of-two space is refused" {
                    let enc = Encoding.WithPadding 16
                    Expect.throwsT<ParameterOutOfRangeException> (fun () -> enc.Encode 16L |> ignore) "16 is outside [0, 16)"
                    Expect.throwsT<ParameterOutOfRangeException> (fun () -> enc.Encode -1L |> ignore) "-1 is outside [0, 16)"
                    Expect.throwsT<ParameterOutOfRangeException> (fun () -> Encoding.WithPadding 12 |> ignore) "12 is not a power of two"
                }
                testProperty "ofReal inverts toReal"
                <| forAll u64 (fun x -> Torus.ofReal (Torus.toReal x) - x + 1024UL <= 2048UL) ]
          testList
              "AES-128-CTR"
              [ test "FIPS-197 appendix C.1, portable" {
                    Expect.equal (aesHex false "000102030405060708090A0B0C0D0E0F" "00112233445566778899AABBCCDDEEFF") "69C4E0D86A7B0430D8CDB78070B4C55A" "C.1"
                    Expect.equal (aesHex false "2B7E151628AED2A6ABF7158809CF4F3C" "3243F6A8885A308D313198A2E0370734") "3925841D02DC09FBDC118597196A0B32" "appendix B"
                }
                test "FIPS-197 appendix C.1, AES-NI" {
                    if Aes128.hardwareSupported then
                        Expect.equal (aesHex true "000102030405060708090A0B0C0D0E0F" "00112233445566778899AABBCCDDEEFF") "69C4E0D86A7B0430D8CDB78070B4C55A" "C.1"
                    else
                        skiptest "AES-NI not available"
                }
                test "the stream depends only on the seed; every path agrees" {
                    let seed = { Low = 0x0123456789ABCDEFUL; High = 42UL }
                    let draw (g: AesCtrGenerator) = Array.init 100 (fun _ -> g.NextUInt64())
                    let portable = draw (AesCtrGenerator(seed, AesPath.Portable))
                    Expect.equal (draw (AesCtrGenerator(seed, AesPath.Portable))) portable "same seed, same stream"
                    Expect.equal (draw (AesCtrGenerator(seed, AesPath.Platform))) portable "platform AES = portable"
                    if Aes128.hardwareSupported then
                        Expect.equal (draw (AesCtrGenerator(seed, AesPath.Hardware))) portable "AES-NI = portable"
                    Expect.notEqual (draw (AesCtrGenerator { seed with Low = 1UL })) portable "another seed, another stream"
                    // Block 0 is AES_seed(counter 0): its first 8 bytes, little-endian.
                    let block = Array.zeroCreate<byte> 16
                    Aes128.encryptBlockPortable (Aes128.expandKey (ReadOnlySpan(seed.ToBytes()))) (ReadOnlySpan(Array.zeroCreate<byte> 16)) (Span block)
                    Expect.equal portable[0] (BitConverter.ToUInt64(block, 0)) "counter mode from 0"
                }
                test "known answer: the first 256 bytes of tfhe-csprng's stream for Seed(1) (its test_vectors), on every path" {
                    let expected =
                        [| 220; 14; 216; 93; 249; 97; 26; 187; 114; 73; 205; 209; 104; 197; 70; 126; 250; 235; 1; 136; 141; 46
                           146; 174; 231; 14; 204; 28; 99; 139; 246; 214; 112; 253; 151; 34; 114; 235; 7; 76; 37; 36; 154; 226
                           148; 68; 238; 117; 87; 212; 183; 174; 200; 222; 153; 62; 48; 166; 134; 27; 97; 230; 206; 78; 128; 151
                           166; 15; 156; 120; 158; 35; 41; 121; 55; 180; 184; 108; 160; 33; 208; 255; 147; 246; 159; 10; 239; 6
                           103; 124; 123; 83; 72; 189; 237; 225; 36; 30; 151; 134; 94; 211; 181; 108; 239; 137; 18; 246; 237; 233
                           59; 61; 24; 111; 198; 76; 92; 86; 129; 171; 50; 124; 2; 72; 143; 160; 223; 32; 187; 175; 239; 111; 51
                           85; 110; 134; 45; 193; 113; 247; 249; 78; 230; 103; 123; 66; 48; 31; 169; 228; 140; 202; 168; 202; 199
                           147; 89; 135; 104; 254; 198; 72; 31; 103; 236; 207; 138; 24; 100; 230; 168; 233; 214; 130; 195; 0; 25
                           220; 136; 128; 173; 40; 154; 116; 87; 114; 187; 170; 150; 131; 163; 155; 98; 217; 198; 238; 178; 165
                           214; 168; 252; 107; 123; 214; 33; 17; 114; 35; 23; 172; 145; 5; 39; 16; 33; 92; 163; 132; 240; 167; 128
                           226; 165; 80; 9; 153; 252; 139; 0; 139; 0; 54; 188; 253; 141; 2; 78; 97; 53; 214; 173; 155; 84; 98; 51
                           70; 110; 91; 181; 229; 231; 27; 225; 185; 143; 63 |]
                        |> Array.map byte
                    Expect.equal expected.Length 256 "two batches of eight blocks"
                    let paths = [ AesPath.Portable; AesPath.Platform ] @ (if Aes128.hardwareSupported then [ AesPath.Hardware ] else [])
                    for path in paths do
                        let g = AesCtrGenerator({ Low = 1UL; High = 0UL }, path)
                        let bytes = Array.init 32 (fun _ -> g.NextUInt64()) |> Array.collect BitConverter.GetBytes
                        Expect.equal bytes expected $"%A{path}"
                }
                test "secret generators run a constant-time path and expose no seed" {
                    let g = AesCtrGenerator.Secret()
                    Expect.notEqual g.Path AesPath.Portable "never the table-based AES"
                    let seedMembers =
                        typeof<AesCtrGenerator>.GetMembers(Reflection.BindingFlags.Public ||| Reflection.BindingFlags.Instance)
                        |> Array.filter (fun m ->
                            match m with
                            | :? Reflection.PropertyInfo as p -> p.PropertyType = typeof<Seed>
                            | :? Reflection.MethodInfo as m -> m.ReturnType = typeof<Seed>
                            | _ -> false)
                    Expect.isEmpty seedMembers "no public member returns the seed"
                } ]
          testList
              "noise"
              [ test "TUniform(b): support [-2^b, 2^b], variance (2^(2b+1)+1)/6 within 3 %" {
                    let rng = AesCtrGenerator.Secret()
                    for b in [ 3; 10 ] do
                        let samples = Array.init 200_000 (fun _ -> float (int64 (Noise.sampleTUniform b rng)))
                        Expect.isTrue (samples |> Array.forall (fun x -> abs x <= float (1 <<< b))) "bounded"
                        Expect.equal (Array.max samples) (float (1 <<< b)) "reaches the bound"
                        let expected = (NoiseDistribution.TUniform b).Variance * Math.Pow(2.0, 128.0)
                        Expect.floatClose { absolute = 0.0; relative = 0.03 } (sampleVariance samples) expected $"variance b=%d{b}"
                }
                test "Gaussian(σ): variance (σ·2^64)² within 3 %, mean 0" {
                    let rng = AesCtrGenerator.Secret()
                    let sigma = 2.845267479601915e-15
                    let samples = Array.init 200_000 (fun _ -> float (int64 (Noise.sampleGaussian sigma rng)))
                    let expected = (NoiseDistribution.Gaussian sigma).Variance * Math.Pow(2.0, 128.0)
                    Expect.floatClose { absolute = 0.0; relative = 0.03 } (sampleVariance samples) expected "variance"
                    Expect.isLessThan (abs (Array.average samples)) (4.0 * sqrt (expected / 200_000.0)) "mean"
                } ]
          testList
              "decomposition"
              [ testProperty "recompose(decompose x) is the closest representable value; digits in [-B/2, B/2]"
                <| forAll
                    (gen {
                        let! beta = Gen.choose (1, 30)
                        let! level = Gen.choose (1, 63 / beta)
                        let! x = u64
                        return beta, level, x
                     })
                    (fun (beta, level, x) ->
                        let d = Decomposer.Create(beta, level)
                        let digits = d.Decompose x
                        let closest = d.ClosestRepresentable x
                        let shift = 64 - beta * level
                        // closest is a multiple of 2^shift at distance at most 2^(shift-1) from x
                        d.Recompose digits = closest
                        && closest % (1UL <<< shift) = 0UL
                        && (x - closest + (1UL <<< (shift - 1))) <= (1UL <<< shift)
                        && digits |> Array.forall (fun g -> abs g <= (1L <<< (beta - 1))))
                testProperty "the 8-lane and 4-lane decompositions equal the scalar one, also next to the rounding and balancing boundaries"
                <| forAll
                    (gen {
                        let! beta = Gen.choose (1, 30)
                        let! level = Gen.choose (1, 63 / beta)
                        // Half the values next to the rounding and balancing boundaries: ±2^63 and ±half a unit.
                        let unit = 1UL <<< (64 - beta * level)
                        let edge =
                            gen {
                                let! centre = Gen.elements [ 0UL; 1UL <<< 63; (1UL <<< 63) - unit / 2UL; (1UL <<< 63) + unit / 2UL; unit / 2UL; 0UL - unit / 2UL ]
                                let! offset = Gen.choose (-2, 2)
                                return centre + uint64 (int64 offset)
                            }
                        let! xs = Gen.arrayOfLength 64 (Gen.oneof [ u64; edge ])
                        return beta, level, xs
                     })
                    (fun (beta, level, xs) ->
                        let d = Decomposer.Create(beta, level)
                        let scalar = Array.zeroCreate<int64> (level * 64)
                        d.DecomposePolynomial(ReadOnlySpan xs, scalar)
                        let vector = Array.zeroCreate<int64> (level * 64)
                        for c in 0..8..63 do
                            let mutable state = d.InitState512(Runtime.Intrinsics.Vector512.Create<uint64>(ReadOnlySpan(xs, c, 8)))
                            for i in 0 .. level - 1 do
                                Runtime.Intrinsics.Vector512.CopyTo(d.NextDigit512(&state), Span(vector, i * 64 + c, 8))
                        let vector4 = Array.zeroCreate<int64> (level * 64)
                        for c in 0..4..63 do
                            let mutable state = d.InitState256(Runtime.Intrinsics.Vector256.Create<uint64>(ReadOnlySpan(xs, c, 4)))
                            for i in 0 .. level - 1 do
                                Runtime.Intrinsics.Vector256.CopyTo(d.NextDigit256(&state), Span(vector4, i * 64 + c, 4))
                        scalar = vector && scalar = vector4)
                testProperty "decompose-and-transform equals decompose then transform, every SIMD path"
                <| forAll
                    (gen {
                        let! level = Gen.choose (1, 3)
                        let! xs = Gen.arrayOfLength 256 u64
                        return level, xs
                     })
                    (fun (level, xs) ->
                        let d = Decomposer.Create(10, level)
                        let plan = FftPlan.ForSize 256
                        let digits = Array.zeroCreate<int64> (level * 256)
                        d.DecomposePolynomial(ReadOnlySpan xs, digits)
                        SimdPath.supported
                        |> List.forall (fun path ->
                            let reference = Array.zeroCreate<float> (level * 256)
                            for i in 0 .. level - 1 do
                                plan.ForwardInteger(path, digits, i * 256, reference, i * 256)
                            let fused = Array.zeroCreate<float> (level * 256)
                            plan.ForwardDecomposed(path, d, xs, 0, fused, 0, 256, Array.zeroCreate (level * 256))
                            fused = reference))
                test "hand-computed digits follow TFHE-rs's rounding and balancing" {
                    // β = 4, ℓ = 1: top bits 1000.1 round up to 1001 = 9 > B/2, balanced to 9 - 16 = -7.
                    Expect.equal (Decomposer.Create(4, 1).Decompose(0x88UL <<< 56)) [| -7L |] "0x88 → -7"
                    // β = 2, ℓ = 2: 0110 → level 2 digit 2 (= B/2, kept since bit β-1 of the rest is 0), level 1 digit 1.
                    Expect.equal (Decomposer.Create(2, 2).Decompose(0x6UL <<< 60)) [| 2L; 1L |] "0110 → (2, 1)"
                    Expect.throwsT<ParameterOutOfRangeException> (fun () -> Decomposer.Create(8, 8) |> ignore) "64 bits is too many"
                } ]
          testList
              "negacyclic FFT"
              [ testProperty "FFT product = schoolbook within 2^(11 + β - 1 + log2 N), every SIMD path"
                <| forAll
                    (gen {
                        let! logN = Gen.choose (4, 11)
                        let! beta = Gen.choose (1, 23)
                        let n = 1 <<< logN
                        let! torus = Gen.arrayOfLength n u64
                        let! digits = Gen.arrayOfLength n (Gen.choose (-(1 <<< (beta - 1)), 1 <<< (beta - 1)))
                        return n, beta, torus, Array.map int64 digits
                     })
                    (fun (n, beta, torus, digits) ->
                        let exact = Polynomial.negacyclicProduct (ReadOnlySpan torus) (ReadOnlySpan(Array.map uint64 digits))
                        let bound = Math.Pow(2.0, float (11 + beta - 1) + Math.Log2(float n))
                        SimdPath.supported
                        |> List.forall (fun path ->
                            let fft = FftPlan.ForSize(n).NegacyclicProduct(path, torus, digits)
                            Array.forall2 (fun (a: uint64) (b: uint64) -> abs (float (int64 (a - b))) <= bound) fft exact))
                test "every path this machine supports agrees with the scalar reference to rounding" {
                    Expect.contains SimdPath.supported SimdPath.Scalar "scalar always runs"
                    let n = 2048
                    let rng = AesCtrGenerator.Secret()
                    let torus = Array.init n (fun _ -> rng.NextUInt64())
                    let digits = Array.init n (fun _ -> int64 (rng.NextUInt64() % (1UL <<< 23)) - (1L <<< 22))
                    let plan = FftPlan.ForSize n
                    let scalar = plan.NegacyclicProduct(SimdPath.Scalar, torus, digits)
                    for path in SimdPath.supported do
                        let r = plan.NegacyclicProduct(path, torus, digits)
                        let worst = Array.map2 (fun (a: uint64) (b: uint64) -> abs (float (int64 (a - b)))) r scalar |> Array.max
                        // Each path is within the FFT bound 2^(11 + β - 1 + log2 N) of the exact product (β = 23,
                        // N = 2048), so two paths agree within twice it; 2^40 was hit by a rare draw.
                        Expect.isLessThanOrEqual worst (2.0 * Math.Pow(2.0, 11.0 + 22.0 + 11.0)) $"%A{path} vs scalar"
                }
                testProperty "every path leaves the Fourier form in one order: forward transforms agree with the scalar one"
                <| forAll
                    (gen {
                        let! logN = Gen.choose (4, 12)
                        let n = 1 <<< logN
                        let! digits = Gen.arrayOfLength n (Gen.choose (-(1 <<< 22), 1 <<< 22))
                        return n, Array.map int64 digits
                     })
                    (fun (n, digits) ->
                        let plan = FftPlan.ForSize n
                        let transform path =
                            let fourier = Array.zeroCreate<float> n
                            plan.ForwardInteger(path, digits, 0, fourier, 0)
                            fourier
                        let scalar = transform SimdPath.Scalar
                        // Same butterflies, same twiddles: the paths differ by a few roundings, never by a permutation.
                        let tolerance = 1e-12 * (scalar |> Array.map abs |> Array.max)
                        SimdPath.supported
                        |> List.forall (fun path -> Array.forall2 (fun (a: float) b -> abs (a - b) <= tolerance) (transform path) scalar))
                testProperty "the limb-split product with a binary polynomial is exact"
                <| forAll
                    (gen {
                        let! logN = Gen.choose (4, 11)
                        let n = 1 <<< logN
                        let! a = Gen.arrayOfLength n u64
                        let! bits = Gen.arrayOfLength n (Gen.choose (0, 1))
                        return n, a, Array.map int64 bits
                     })
                    (fun (n, a, bits) ->
                        let plan = FftPlan.ForSize n
                        let exact = Polynomial.negacyclicProduct (ReadOnlySpan a) (ReadOnlySpan(Array.map uint64 bits))
                        let fourier = Array.zeroCreate<float> n
                        plan.ForwardInteger(SimdPath.Scalar, bits, 0, fourier, 0)
                        let result = Array.zeroCreate<uint64> n
                        plan.ExactProductAccumulate(SimdPath.best, ReadOnlySpan a, fourier, 0, Span result, Array.zeroCreate (2 * n), Array.zeroCreate n)
                        result = exact)
                testProperty "monomial products: X^d·X^(2N-d) = 1 and X^N = -1"
                <| forAll (Gen.zip (Gen.choose (0, 63)) (Gen.arrayOfLength 32 u64)) (fun (d, a) ->
                    let once = Array.zeroCreate<uint64> 32
                    let back = Array.zeroCreate<uint64> 32
                    Polynomial.monomialMul (ReadOnlySpan a) d (Span once)
                    Polynomial.monomialMul (ReadOnlySpan once) ((64 - d) % 64) (Span back)
                    let xd = Array.init 32 (fun i -> if d < 32 && i = d then 1UL elif d >= 32 && i = d - 32 then UInt64.MaxValue else 0UL)
                    back = a && once = Polynomial.negacyclicProduct (ReadOnlySpan a) (ReadOnlySpan xd))
                testProperty "the vector CMux difference X^d·a - a equals the scalar one at any offset and degree"
                <| forAll
                    (gen {
                        let! logN = Gen.choose (4, 7)
                        let n = 1 <<< logN
                        let! degree = Gen.choose (0, 2 * n - 1)
                        let! offset = Gen.choose (0, 9)
                        let! a = Gen.arrayOfLength (n + 9) u64
                        return n, degree, offset, a
                     })
                    (fun (n, degree, offset, a) ->
                        let reference = Array.zeroCreate<uint64> n
                        Polynomial.monomialMulMinusSelf (ReadOnlySpan(a, offset, n)) degree (Span reference)
                        [ false; SimdPath.isSupported SimdPath.Vector512 ]
                        |> List.distinct
                        |> List.forall (fun vectorized ->
                            let output = Array.zeroCreate<uint64> (n + 3)
                            Polynomial.monomialMulMinusSelfInto vectorized a offset n degree output 3
                            output[3..] = reference && output[..2] = [| 0UL; 0UL; 0UL |])) ] ]
