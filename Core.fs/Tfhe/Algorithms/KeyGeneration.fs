namespace FheNet.Tfhe

open System

/// Bootstrapping-key generation (TFHE-rs `lwe_bootstrap_key_generation.rs`). Keys are generated seeded — every mask
/// from one AES-CTR stream started at a fresh seed — and expanded by replaying that stream, so a compressed key and
/// its expansion are the same key.
module BootstrapKeyGeneration =

    /// GGSW encryptions of each bit of `inputKey` under `glweKey`, stored as seed + bodies.
    let generateSeeded
        (inputKey: LweSecretKey)
        (glweKey: GlweSecretKey)
        (decomposer: Decomposer)
        (distribution: NoiseDistribution)
        (noise: AesCtrGenerator)
        : SeededLweBootstrapKey =
        let k, n = glweKey.GlweDimension, glweKey.PolynomialSize
        let seed = Seed.Fresh()
        let masks = AesCtrGenerator seed
        let prepared = GlweEncryption.prepare glweKey
        let rows = decomposer.Level * (k + 1)
        let ggsw = Array.zeroCreate<uint64> (rows * (k + 1) * n)
        let bodies = Array.zeroCreate<uint64> (inputKey.Dimension * rows * n)
        for i in 0 .. inputKey.Dimension - 1 do
            GlweEncryption.encryptGgswInto prepared decomposer masks noise distribution (int64 inputKey.Bits[i]) (Span ggsw)
            for row in 0 .. rows - 1 do
                Array.blit ggsw ((row * (k + 1) + k) * n) bodies ((i * rows + row) * n) n
        { Seed = seed
          InputDimension = inputKey.Dimension
          GlweDimension = k
          PolynomialSize = n
          Decomposer = decomposer
          Bodies = bodies }

    /// The full key: masks regenerated from the seed in generation order, bodies copied.
    let expand (seeded: SeededLweBootstrapKey) : LweBootstrapKey =
        let k, n = seeded.GlweDimension, seeded.PolynomialSize
        let rows = seeded.InputDimension * seeded.Decomposer.Level * (k + 1)
        let data = Array.zeroCreate<uint64> (rows * (k + 1) * n)
        let masks = AesCtrGenerator seeded.Seed
        for row in 0 .. rows - 1 do
            let start = row * (k + 1) * n
            masks.Fill(Span(data, start, k * n))
            Array.blit seeded.Bodies (row * n) data (start + k * n) n
        { InputDimension = seeded.InputDimension
          GlweDimension = k
          PolynomialSize = n
          Decomposer = seeded.Decomposer
          Data = data }

/// Keyswitching-key generation (TFHE-rs `lwe_keyswitch_key_generation.rs`), seeded like the bootstrapping key.
module KeyswitchKeyGeneration =

    /// For each input key bit s_i and level j (ℓ first): an LWE encryption of s_i·2^(64 - β·j) under `outputKey`.
    let generateSeeded
        (inputKey: LweSecretKey)
        (outputKey: LweSecretKey)
        (decomposer: Decomposer)
        (distribution: NoiseDistribution)
        (noise: AesCtrGenerator)
        : SeededLweKeyswitchKey =
        let seed = Seed.Fresh()
        let masks = AesCtrGenerator seed
        let level = decomposer.Level
        let scratch = Array.zeroCreate<uint64> (outputKey.Dimension + 1)
        let bodies = Array.zeroCreate<uint64> (inputKey.Dimension * level)
        for i in 0 .. inputKey.Dimension - 1 do
            for j in 0 .. level - 1 do
                let plaintext = inputKey.Bits[i] <<< (64 - decomposer.BaseLog * (level - j))
                LweEncryption.encryptInto outputKey masks noise distribution plaintext (Span scratch)
                bodies[i * level + j] <- scratch[outputKey.Dimension]
        { Seed = seed
          InputDimension = inputKey.Dimension
          OutputDimension = outputKey.Dimension
          Decomposer = decomposer
          Bodies = bodies }

    /// The full key: masks regenerated from the seed, bodies copied.
    let expand (seeded: SeededLweKeyswitchKey) : LweKeyswitchKey =
        let size = seeded.OutputDimension + 1
        let count = seeded.InputDimension * seeded.Decomposer.Level
        let data = KeyMemory.allocateUninitialized<uint64> (count * size)
        let masks = AesCtrGenerator seeded.Seed
        for e in 0 .. count - 1 do
            masks.Fill(Span(data, e * size, seeded.OutputDimension))
            data[e * size + seeded.OutputDimension] <- seeded.Bodies[e]
        { InputDimension = seeded.InputDimension
          OutputDimension = seeded.OutputDimension
          Decomposer = seeded.Decomposer
          Data = data }
