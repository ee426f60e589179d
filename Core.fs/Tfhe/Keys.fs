namespace FheNet.Tfhe

open System

/// Checks and derived values of a parameter set for the engine.
module Parameters =

    /// The message encoding of a set: p = message × carry, one padding bit.
    let encoding (parameters: TfheParameters) = Encoding.WithPadding parameters.PlaintextModulus

    /// Raises a typed error naming the first field the engine cannot run with.
    let validate (p: TfheParameters) =
        FheNet.Guard.inRange "LweDimension" 1 (1 <<< 16) p.LweDimension
        FheNet.Guard.inRange "GlweDimension" 1 16 p.GlweDimension
        if p.PolynomialSize < 16 || p.PolynomialSize > (1 <<< 20) || not (Numerics.BitOperations.IsPow2 p.PolynomialSize) then
            raise (FheNet.ParameterOutOfRangeException("PolynomialSize", p.PolynomialSize, "a power of two between 16 and 2^20"))
        Decomposer.Create(p.PbsBaseLog, p.PbsLevel) |> ignore
        Decomposer.Create(p.KsBaseLog, p.KsLevel) |> ignore
        encoding p |> ignore
        if p.PlaintextModulus > p.PolynomialSize then
            raise (FheNet.ParameterOutOfRangeException("MessageModulus * CarryModulus", p.PlaintextModulus, $"at most the polynomial size %d{p.PolynomialSize}"))
        Noise.validate "LweNoise" p.LweNoise
        Noise.validate "GlweNoise" p.GlweNoise

/// The secret side: the small LWE key (the bootstrapping input) and the GLWE key (whose flattening, the big key, is
/// the bootstrapping output key). Never leaves the client.
type ClientKey =
    { Parameters: TfheParameters
      SmallKey: LweSecretKey
      GlweKey: GlweSecretKey }

    /// The big LWE key (dimension k·N), the flattened GLWE key.
    member c.BigKey = c.GlweKey.AsLweKey

    /// The key ciphertexts live under between bootstraps, and its noise: big for KS-PBS, small for PBS-KS.
    member c.CiphertextKey =
        match c.Parameters.Order with
        | PbsOrder.KeyswitchBootstrap -> c.BigKey, c.Parameters.GlweNoise
        | PbsOrder.BootstrapKeyswitch -> c.SmallKey, c.Parameters.LweNoise

/// The evaluation key: the Fourier bootstrapping key and the keyswitching key (big key → small key).
type ServerKey =
    { Parameters: TfheParameters
      Bootstrap: FourierBootstrapKey
      Keyswitch: LweKeyswitchKey }

    /// Bytes of key material held (8 per u64 or f64).
    member s.SizeBytes = 8L * (int64 s.Bootstrap.Data.Length + int64 s.Keyswitch.Data.Length)

/// The evaluation key as seeds and bodies, for storage and transfer; `CompressedServerKey.decompress` expands it.
type CompressedServerKey =
    { Parameters: TfheParameters
      Bootstrap: SeededLweBootstrapKey
      Keyswitch: SeededLweKeyswitchKey }

    /// Bytes of key material held (bodies, plus two 16-byte seeds).
    member s.SizeBytes = 8L * (int64 s.Bootstrap.Bodies.Length + int64 s.Keyswitch.Bodies.Length) + 32L

/// Client-key generation.
module ClientKey =

    /// Fresh uniform binary keys for a parameter set, from the OS-seeded CSPRNG. Refuses a set that fails the
    /// 128-bit security check unless it is marked Insecure.
    let generate (parameters: TfheParameters) : ClientKey =
        Parameters.validate parameters
        Security.ensureSecure parameters
        let rng = AesCtrGenerator.Secret()
        { Parameters = parameters
          SmallKey = SecretKeys.generateLwe parameters.LweDimension rng
          GlweKey = SecretKeys.generateGlwe parameters.GlweDimension parameters.PolynomialSize rng }

    /// Overwrites the key's bits with zeros, so that a key no longer needed does not linger in memory. Best effort:
    /// copies the runtime made (a compacting GC moves arrays; the serialized key file, buffers of readers) are not
    /// reached; the key is unusable afterwards.
    let wipe (key: ClientKey) =
        Array.Clear key.SmallKey.Bits
        Array.Clear key.GlweKey.Bits

/// Compressed evaluation keys.
module CompressedServerKey =

    /// The seeded bootstrapping key (small key bits under the GLWE key, GLWE noise) and the seeded keyswitching key
    /// (big key bits under the small key, LWE noise).
    let generate (clientKey: ClientKey) : CompressedServerKey =
        let p = clientKey.Parameters
        let noise = AesCtrGenerator.Secret()
        { Parameters = p
          Bootstrap =
            BootstrapKeyGeneration.generateSeeded
                clientKey.SmallKey
                clientKey.GlweKey
                (Decomposer.Create(p.PbsBaseLog, p.PbsLevel))
                p.GlweNoise
                noise
          Keyswitch =
            KeyswitchKeyGeneration.generateSeeded
                clientKey.BigKey
                clientKey.SmallKey
                (Decomposer.Create(p.KsBaseLog, p.KsLevel))
                p.LweNoise
                noise }

    /// Expands the seeds and converts the bootstrapping key to the Fourier domain.
    let decompress (key: CompressedServerKey) : ServerKey =
        { Parameters = key.Parameters
          Bootstrap = FourierConversion.ofSeeded SimdPath.best key.Bootstrap
          Keyswitch = KeyswitchKeyGeneration.expand key.Keyswitch }

/// Evaluation-key generation.
module ServerKey =

    /// The evaluation key of a client key (generated compressed, then expanded).
    let ofClientKey (clientKey: ClientKey) : ServerKey =
        CompressedServerKey.decompress (CompressedServerKey.generate clientKey)
