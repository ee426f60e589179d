namespace FheNet.Tfhe

open System

/// Generation of uniform binary secret keys.
module SecretKeys =

    /// n uniform bits from a secret generator.
    let generateLwe (dimension: int) (rng: AesCtrGenerator) : LweSecretKey =
        FheNet.Guard.inRange "dimension" 1 (1 <<< 24) dimension
        { Bits = Array.init dimension (fun _ -> rng.NextUInt64() &&& 1UL) }

    /// k polynomials of N uniform bits.
    let generateGlwe (glweDimension: int) (polynomialSize: int) (rng: AesCtrGenerator) : GlweSecretKey =
        FheNet.Guard.inRange "glweDimension" 1 64 glweDimension
        { GlweDimension = glweDimension
          PolynomialSize = polynomialSize
          Bits = Array.init (glweDimension * polynomialSize) (fun _ -> rng.NextUInt64() &&& 1UL) }

/// LWE encryption and decryption (TFHE-rs `lwe_encryption.rs`): masks from a seedable generator, noise from a
/// secret one.
module LweEncryption =

    /// Σ a_i·s_i (wrapping).
    let maskDotKey (key: LweSecretKey) (data: ReadOnlySpan<uint64>) =
        let bits = key.Bits
        let mutable sum = 0UL
        for i in 0 .. bits.Length - 1 do
            sum <- sum + data[i] * bits[i]
        sum

    let private checkDimension (key: LweSecretKey) (ciphertextDimension: int) =
        if ciphertextDimension <> key.Dimension then
            raise (DimensionMismatchException("ciphertext", "the LWE dimension of the ciphertext", key.Dimension, ciphertextDimension))

    /// The phase b - Σ a_i·s_i = Δm + e.
    let phase (key: LweSecretKey) (ciphertext: LweCiphertext) =
        checkDimension key ciphertext.Dimension
        ciphertext.Body - maskDotKey key (ReadOnlySpan ciphertext.Data)

    /// Encrypts a plaintext (an already encoded torus value) into `destination` (n + 1 values).
    let encryptInto
        (key: LweSecretKey)
        (masks: AesCtrGenerator)
        (noise: AesCtrGenerator)
        (distribution: NoiseDistribution)
        (plaintext: uint64)
        (destination: Span<uint64>)
        =
        let n = key.Dimension
        masks.Fill(destination.Slice(0, n))
        destination[n] <- maskDotKey key (Span.op_Implicit destination) + plaintext + Noise.sample distribution noise

    /// A fresh LWE encryption of a plaintext.
    let encrypt (key: LweSecretKey) masks noise distribution plaintext : LweCiphertext =
        let data = Array.zeroCreate<uint64> (key.Dimension + 1)
        encryptInto key masks noise distribution plaintext (Span data)
        { Data = data }

    /// An encryption whose mask comes from a fresh seed: only the seed and the body are kept.
    let encryptSeeded (key: LweSecretKey) (noise: AesCtrGenerator) distribution plaintext : SeededLweCiphertext =
        let seed = Seed.Fresh()
        let full = encrypt key (AesCtrGenerator seed) noise distribution plaintext
        { Seed = seed; Dimension = key.Dimension; Body = full.Body }

    /// Regenerates the mask of a seeded ciphertext.
    let expand (seeded: SeededLweCiphertext) : LweCiphertext =
        let data = Array.zeroCreate<uint64> (seeded.Dimension + 1)
        AesCtrGenerator(seeded.Seed).Fill(Span(data, 0, seeded.Dimension))
        data[seeded.Dimension] <- seeded.Body
        { Data = data }

    /// The noiseless ciphertext (0, …, 0, plaintext), which decrypts under every key of that dimension.
    let trivial (dimension: int) (plaintext: uint64) : LweCiphertext =
        let data = Array.zeroCreate<uint64> (dimension + 1)
        data[dimension] <- plaintext
        { Data = data }

/// GLWE and GGSW encryption (TFHE-rs `glwe_encryption.rs`, `ggsw_encryption.rs`). Mask·key products are exact.
module GlweEncryption =

    /// A GLWE key prepared for exact products: each key polynomial in the Fourier domain of its plan.
    type PreparedKey =
        { Key: GlweSecretKey
          Plan: FftPlan
          Fourier: float[]
          Scratch: float[]
          Limb: int64[] }

    /// Transforms the key polynomials once, for many encryptions.
    let prepare (key: GlweSecretKey) : PreparedKey =
        let n = key.PolynomialSize
        let plan = FftPlan.ForSize n
        let fourier = Array.zeroCreate<float> (key.GlweDimension * n)
        let asInt = Array.map int64 key.Bits
        for j in 0 .. key.GlweDimension - 1 do
            plan.ForwardInteger(SimdPath.best, asInt, j * n, fourier, j * n)
        { Key = key
          Plan = plan
          Fourier = fourier
          Scratch = Array.zeroCreate (2 * n)
          Limb = Array.zeroCreate n }

    /// Encrypts a plaintext polynomial into `destination` ((k+1)·N values): masks from `masks`, then
    /// B = Σ A_j·S_j + plaintext + E.
    let encryptInto
        (prepared: PreparedKey)
        (masks: AesCtrGenerator)
        (noise: AesCtrGenerator)
        (distribution: NoiseDistribution)
        (plaintext: ReadOnlySpan<uint64>)
        (destination: Span<uint64>)
        =
        let k, n = prepared.Key.GlweDimension, prepared.Key.PolynomialSize
        masks.Fill(destination.Slice(0, k * n))
        let body = destination.Slice(k * n, n)
        for c in 0 .. n - 1 do
            body[c] <- plaintext[c] + Noise.sample distribution noise
        for j in 0 .. k - 1 do
            prepared.Plan.ExactProductAccumulate(
                SimdPath.best,
                Span.op_Implicit (destination.Slice(j * n, n)),
                prepared.Fourier,
                j * n,
                body,
                prepared.Scratch,
                prepared.Limb
            )

    /// A GLWE encryption of a plaintext polynomial.
    let encrypt (key: GlweSecretKey) masks noise distribution (plaintext: uint64[]) : GlweCiphertext =
        if plaintext.Length <> key.PolynomialSize then
            raise (DimensionMismatchException("plaintext", "the polynomial size", key.PolynomialSize, plaintext.Length))
        let data = Array.zeroCreate<uint64> ((key.GlweDimension + 1) * key.PolynomialSize)
        encryptInto (prepare key) masks noise distribution (ReadOnlySpan plaintext) (Span data)
        { GlweDimension = key.GlweDimension
          PolynomialSize = key.PolynomialSize
          Data = data }

    /// The phase polynomial B - Σ A_j·S_j (exact).
    let phase (key: GlweSecretKey) (ciphertext: GlweCiphertext) =
        if ciphertext.PolynomialSize <> key.PolynomialSize then
            raise (DimensionMismatchException("ciphertext", "the polynomial size", key.PolynomialSize, ciphertext.PolynomialSize))
        if ciphertext.GlweDimension <> key.GlweDimension then
            raise (DimensionMismatchException("ciphertext", "the GLWE dimension", key.GlweDimension, ciphertext.GlweDimension))
        let k, n = key.GlweDimension, key.PolynomialSize
        let prepared = prepare key
        let product = Array.zeroCreate<uint64> n
        for j in 0 .. k - 1 do
            prepared.Plan.ExactProductAccumulate(
                SimdPath.best,
                ReadOnlySpan(ciphertext.Data, j * n, n),
                prepared.Fourier,
                j * n,
                Span product,
                prepared.Scratch,
                prepared.Limb
            )
        Array.init n (fun c -> ciphertext.Data[k * n + c] - product[c])

    /// Encrypts μ·(gadget) as a GGSW into `destination` (ℓ·(k+1)·(k+1)·N values). For level j (stored ℓ first) the
    /// factor is f_j = -μ·2^(64 - β·j); row r < k is an encryption of zero whose body gains f_j·S_r, the last row an
    /// encryption of zero whose constant body coefficient gains -f_j (TFHE-rs's layout and sign convention).
    let encryptGgswInto
        (prepared: PreparedKey)
        (decomposer: Decomposer)
        (masks: AesCtrGenerator)
        (noise: AesCtrGenerator)
        (distribution: NoiseDistribution)
        (mu: int64)
        (destination: Span<uint64>)
        =
        let k, n = prepared.Key.GlweDimension, prepared.Key.PolynomialSize
        let rowSize = (k + 1) * n
        let zero = Array.zeroCreate<uint64> n
        for i in 0 .. decomposer.Level - 1 do
            let level = decomposer.Level - i
            let factor = uint64 (-mu) <<< (64 - decomposer.BaseLog * level)
            for r in 0..k do
                let row = destination.Slice((i * (k + 1) + r) * rowSize, rowSize)
                encryptInto prepared masks noise distribution (ReadOnlySpan zero) row
                let body = row.Slice(k * n, n)
                if r < k then
                    let keyPoly = prepared.Key.Bits
                    for c in 0 .. n - 1 do
                        body[c] <- body[c] + factor * keyPoly[r * n + c]
                else
                    body[0] <- body[0] - factor

    /// A GGSW encryption of the integer μ.
    let encryptGgsw (key: GlweSecretKey) (decomposer: Decomposer) masks noise distribution (mu: int64) : GgswCiphertext =
        let k, n = key.GlweDimension, key.PolynomialSize
        let data = Array.zeroCreate<uint64> (decomposer.Level * (k + 1) * (k + 1) * n)
        encryptGgswInto (prepare key) decomposer masks noise distribution mu (Span data)
        { GlweDimension = k
          PolynomialSize = n
          Decomposer = decomposer
          Data = data }
