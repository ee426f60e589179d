#nowarn "9" // NativePtr: the key's address for the prefetch cursor

namespace FheNet.Tfhe

open System
open Microsoft.FSharp.NativeInterop

/// Conversion of GGSW-based keys to the Fourier domain (TFHE-rs `fft64/crypto/bootstrap.rs::fill_with_forward_fourier`):
/// every polynomial as a torus polynomial through the plan's forward transform, layout kept.
module FourierConversion =

    let private convert path (polynomialSize: int) (data: uint64[]) =
        let plan = FftPlan.ForSize polynomialSize
        let fourier = KeyMemory.allocateUninitialized<float> data.Length
        for p in 0 .. data.Length / polynomialSize - 1 do
            plan.ForwardTorus(path, ReadOnlySpan(data, p * polynomialSize, polynomialSize), fourier, p * polynomialSize)
        fourier

    /// The Fourier bootstrapping key.
    let bootstrapKey (path: SimdPath) (key: LweBootstrapKey) : FourierBootstrapKey =
        { InputDimension = key.InputDimension
          GlweDimension = key.GlweDimension
          PolynomialSize = key.PolynomialSize
          Decomposer = key.Decomposer
          Data = convert path key.PolynomialSize key.Data }

    /// The Fourier bootstrapping key straight from a seeded one, one GLWE row at a time: the same key as
    /// `bootstrapKey path (BootstrapKeyGeneration.expand seeded)` without ever holding the expanded key in memory.
    let ofSeeded (path: SimdPath) (seeded: SeededLweBootstrapKey) : FourierBootstrapKey =
        let k, n = seeded.GlweDimension, seeded.PolynomialSize
        let plan = FftPlan.ForSize n
        let rows = seeded.InputDimension * seeded.Decomposer.Level * (k + 1)
        let rowSize = (k + 1) * n
        let fourier = KeyMemory.allocateUninitialized<float> (int64 rows * int64 rowSize |> int)
        let row = Array.zeroCreate<uint64> rowSize
        let masks = AesCtrGenerator seeded.Seed
        for r in 0 .. rows - 1 do
            masks.Fill(Span(row, 0, k * n))
            Array.blit seeded.Bodies (r * n) row (k * n) n
            for c in 0..k do
                plan.ForwardTorus(path, ReadOnlySpan(row, c * n, n), fourier, r * rowSize + c * n)
        { InputDimension = seeded.InputDimension
          GlweDimension = k
          PolynomialSize = n
          Decomposer = seeded.Decomposer
          Data = fourier }

    /// One GGSW in the Fourier domain, as a bootstrapping key of input dimension 1 (index 0).
    let ggsw (path: SimdPath) (ggsw: GgswCiphertext) : FourierBootstrapKey =
        { InputDimension = 1
          GlweDimension = ggsw.GlweDimension
          PolynomialSize = ggsw.PolynomialSize
          Decomposer = ggsw.Decomposer
          Data = convert path ggsw.PolynomialSize ggsw.Data }

/// Buffers of one bootstrap, reused from call to call so the blind-rotation loop allocates nothing.
/// One per thread. The Fourier buffers, the difference and the accumulator start on 64-byte boundaries (see Aligned).
[<Sealed>]
type BootstrapScratch(glweDimension: int, polynomialSize: int, level: int) =
    let glweSize = (glweDimension + 1) * polynomialSize
    let struct (fourier, fourierStart) = Aligned.allocate<float> ((level + 1) * glweSize)
    let struct (difference, differenceStart) = Aligned.allocate<uint64> glweSize
    let struct (accumulator, accumulatorStart) = Aligned.allocate<uint64> glweSize
    /// The digits of one polynomial, ℓ·N.
    member val Digits = Array.zeroCreate<int64> (level * polynomialSize)
    /// The Fourier buffer: the decomposed input (ℓ·(k+1)·N from FourierDigitsOffset), then the k+1 Fourier
    /// accumulators of an external product ((k+1)·N from FourierSumOffset).
    member _.Fourier = fourier
    /// Where the decomposed input starts in Fourier.
    member _.FourierDigitsOffset = fourierStart
    /// Where the k+1 Fourier accumulators start in Fourier.
    member _.FourierSumOffset = fourierStart + level * glweSize
    /// The CMux difference ACC·X^a - ACC, from DifferenceOffset ((k+1)·N values).
    member _.Difference = difference
    /// Where the difference starts.
    member _.DifferenceOffset = differenceStart
    /// The blind-rotation accumulator, from AccumulatorOffset ((k+1)·N values).
    member _.Accumulator = accumulator
    /// Where the accumulator starts.
    member _.AccumulatorOffset = accumulatorStart
    /// The accumulator's (k+1)·N values.
    member _.AccumulatorSpan = Span(accumulator, accumulatorStart, glweSize)

/// The external product, the CMux, the blind rotation, sample extraction and the modulus switch
/// (TFHE-rs `fft64/crypto/ggsw.rs`, `bootstrap.rs`, `glwe_sample_extraction.rs`, `modulus_switch.rs`).
module Bootstrap =

    /// The Fourier-domain half of an external product: the decomposed input (already in scratch.Fourier from
    /// FourierDigitsOffset) against GGSW `index`, the k+1 sums transformed back and added to `output` from
    /// outputOffset.
    let private multiplyAndAdd
        (path: SimdPath) (key: FourierBootstrapKey) (index: int) (output: uint64[]) (outputOffset: int) (scratch: BootstrapScratch) (prefetch: byref<KeyPrefetch>)
        =
        let k, n = key.GlweDimension, key.PolynomialSize
        let level = key.Decomposer.Level
        let plan = FftPlan.ForSize n
        let fourier, sum = scratch.Fourier, scratch.FourierSumOffset
        FftPlan.MultiplyRows(
            path, fourier, sum, fourier, scratch.FourierDigitsOffset, level * (k + 1), key.Data, index * level * (k + 1) * (k + 1) * n, k + 1, n)
        for c in 0..k do
            plan.BackwardAddTorus(path, fourier, sum + c * n, output, outputOffset + c * n, &prefetch)

    /// output += GGSW_index ⊡ input, where GGSW_index is GGSW number `index` of a Fourier key, and input/output are
    /// GLWE ciphertexts ((k+1)·N values). Decompose every input polynomial, transform each digit polynomial,
    /// multiply-accumulate against the GGSW rows in the Fourier domain, transform the k+1 sums back.
    let externalProductAdd
        (path: SimdPath)
        (key: FourierBootstrapKey)
        (index: int)
        (input: uint64[])
        (output: uint64[])
        (scratch: BootstrapScratch)
        =
        let k, n = key.GlweDimension, key.PolynomialSize
        let plan = FftPlan.ForSize n
        let mutable none = KeyPrefetch.None
        for r in 0..k do
            plan.ForwardDecomposed(
                path, key.Decomposer, input, r * n, scratch.Fourier, scratch.FourierDigitsOffset + r * n, (k + 1) * n, scratch.Digits, &none)
        multiplyAndAdd path key index output 0 scratch &none

    /// The size of one Fourier GGSW of `key`, in doubles.
    let private ggswSize (key: FourierBootstrapKey) =
        key.Decomposer.Level * (key.GlweDimension + 1) * (key.GlweDimension + 1) * key.PolynomialSize

    /// The CMux of the blind rotation on `acc[accOffset ..]`: acc += GGSW_index ⊡ (acc·X^degree - acc), the
    /// difference formed in scratch.Difference (the same result as externalProductAdd on that difference).
    /// `prefetch` walks the key lines the next CMux will read, a few per FFT loop iteration.
    let private cmuxRotationPrefetching
        (path: SimdPath) (key: FourierBootstrapKey) (index: int) (acc: uint64[]) (accOffset: int) (degree: int) (scratch: BootstrapScratch) (prefetch: byref<KeyPrefetch>)
        =
        let k, n = key.GlweDimension, key.PolynomialSize
        let plan = FftPlan.ForSize n
        for r in 0..k do
            plan.ForwardDecomposedRotation(
                path, key.Decomposer, acc, accOffset + r * n, degree, scratch.Fourier, scratch.FourierDigitsOffset + r * n, (k + 1) * n, scratch.Digits,
                scratch.Difference, scratch.DifferenceOffset + r * n, &prefetch)
        multiplyAndAdd path key index acc accOffset scratch &prefetch

    /// The CMux of the blind rotation: acc += GGSW_index ⊡ (acc·X^degree - acc).
    let cmuxRotation (path: SimdPath) (key: FourierBootstrapKey) (index: int) (acc: uint64[]) (degree: int) (scratch: BootstrapScratch) =
        let mutable none = KeyPrefetch.None
        cmuxRotationPrefetching path key index acc 0 degree scratch &none

    /// ct0 ← ct0 + GGSW(b) ⊡ (ct1 - ct0): ct1 when b = 1, ct0 when b = 0 (plus noise).
    let cmux (path: SimdPath) (key: FourierBootstrapKey) (index: int) (ct0: uint64[]) (ct1: uint64[]) (scratch: BootstrapScratch) =
        let diff = scratch.Difference
        for i in 0 .. ct0.Length - 1 do
            diff[i] <- ct1[i] - ct0[i]
        externalProductAdd path key index diff ct0 scratch

    /// log2(2N).
    let inline private log2TwoN (polynomialSize: int) = Numerics.BitOperations.Log2(uint32 polynomialSize) + 1

    /// Switches an LWE ciphertext (n + 1 values) to the modulus 2N: every value rounded to the nearest multiple of
    /// q/2N. CenteredMean first adds to the body half the sum of the mask rounding errors (their mean contribution
    /// for a uniform binary key) minus half a slot (TFHE-rs `lwe_ciphertext_centered_binary_modulus_switch`).
    let modulusSwitch (kind: ModulusSwitchKind) (polynomialSize: int) (input: ReadOnlySpan<uint64>) (switched: Span<int>) =
        let bits = log2TwoN polynomialSize
        let shift = 64 - bits
        let n = input.Length - 1
        let mutable errorSum = 0L
        for i in 0 .. n - 1 do
            let r = Torus.roundToBits bits input[i]
            switched[i] <- int r
            errorSum <- errorSum + int64 ((r <<< shift) - input[i])
        let body =
            match kind with
            | ModulusSwitchKind.Standard -> input[n]
            | ModulusSwitchKind.CenteredMean -> input[n] + uint64 (errorSum / 2L) - (1UL <<< (shift - 1))
        switched[n] <- int (Torus.roundToBits bits body)

    /// Rotates the test polynomial by the switched ciphertext: ACC = LUT·X^(-b̃), then for every i with ã_i ≠ 0 a
    /// CMux between ACC and ACC·X^(ã_i) selected by GGSW(s_i). The result, in `scratch.AccumulatorSpan`, is
    /// LUT·X^(-(b̃ - Σ ã_i·s_i)).
    let blindRotate (path: SimdPath) (key: FourierBootstrapKey) (lut: uint64[]) (switched: ReadOnlySpan<int>) (scratch: BootstrapScratch) =
        let k, n = key.GlweDimension, key.PolynomialSize
        let acc, start = scratch.Accumulator, scratch.AccumulatorOffset
        let b = switched[key.InputDimension]
        let back = (2 * n - b) % (2 * n)
        for r in 0..k do
            Polynomial.monomialMul (ReadOnlySpan(lut, r * n, n)) back (Span(acc, start + r * n, n))
        let size = ggswSize key
        use keyPointer = fixed key.Data
        for i in 0 .. key.InputDimension - 1 do
            let a = switched[i]
            if a <> 0 then
                // The key streams from memory once per bootstrap: request GGSW i + 1 while CMux i computes.
                let mutable prefetch =
                    if path = SimdPath.Vector512 && i + 1 < key.InputDimension then
                        KeyPrefetch(NativePtr.add keyPointer ((i + 1) * size), 8 * size)
                    else
                        KeyPrefetch.None
                cmuxRotationPrefetching path key i acc start a scratch &prefetch

    /// The LWE encryption (under the flattened GLWE key, dimension k·N) of coefficient 0 of a GLWE ciphertext:
    /// mask j becomes [a_0, -a_{N-1}, …, -a_1], the body is B[0].
    let sampleExtractInto (glweDimension: int) (polynomialSize: int) (glwe: ReadOnlySpan<uint64>) (output: Span<uint64>) =
        let n = polynomialSize
        for j in 0 .. glweDimension - 1 do
            output[j * n] <- glwe[j * n]
            for i in 1 .. n - 1 do
                output[j * n + i] <- 0UL - glwe[j * n + n - i]
        output[glweDimension * n] <- glwe[glweDimension * n]

    /// Programmable bootstrap of an LWE ciphertext under the small key (n + 1 values) into `output` (k·N + 1
    /// values): modulus switch, blind rotation of the test polynomial `lut` ((k+1)·N values), sample extraction.
    let programmableBootstrapInto
        (path: SimdPath)
        (key: FourierBootstrapKey)
        (modulusSwitchKind: ModulusSwitchKind)
        (lut: uint64[])
        (input: ReadOnlySpan<uint64>)
        (output: Span<uint64>)
        (switched: int[])
        (scratch: BootstrapScratch)
        =
        modulusSwitch modulusSwitchKind key.PolynomialSize input (Span switched)
        blindRotate path key lut (ReadOnlySpan switched) scratch
        sampleExtractInto key.GlweDimension key.PolynomialSize (Span.op_Implicit scratch.AccumulatorSpan) output

/// Test polynomials (TFHE-rs `fill_accumulator_with_encoding`).
module LookupTablePolynomial =

    /// The trivial GLWE ((k+1)·N values, zero masks) whose body holds f(i)·Δ_out on box i (box size N/p), negated
    /// on the first half box and rotated left by half a box, so that a phase m·(N/p) ± noise lands inside box m.
    /// Outputs are encoded with `EncodeWrapping` (negative values as two's complement modulo 2·p_out).
    let build (glweDimension: int) (polynomialSize: int) (inputModulus: int) (output: Encoding) (table: int64[]) =
        let n = polynomialSize
        let box = n / inputModulus
        let half = box / 2
        let body = Array.zeroCreate<uint64> n
        for i in 0 .. inputModulus - 1 do
            let v = output.EncodeWrapping table[i]
            for c in i * box .. (i + 1) * box - 1 do
                body[c] <- v
        for c in 0 .. half - 1 do
            body[c] <- 0UL - body[c]
        let result = Array.zeroCreate<uint64> ((glweDimension + 1) * n)
        for c in 0 .. n - 1 do
            result[glweDimension * n + c] <- body[(c + half) % n]
        result
