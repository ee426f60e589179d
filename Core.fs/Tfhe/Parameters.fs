namespace FheNet.Tfhe

/// The distribution of encryption noise, normalized to the torus (q = 2^64).
[<RequireQualifiedAccess>]
type NoiseDistribution =
    /// TUniform(b): integers in [-2^b, 2^b] (in units of the 2^64 torus), the ends with half the probability.
    | TUniform of boundLog2: int
    /// A centred Gaussian with standard deviation σ as a fraction of q.
    | Gaussian of stdDev: float

    /// The variance, normalized to q = 2^64: σ², or (2^(2b+1) + 1)/6 integer units squared for TUniform(b).
    member d.Variance =
        match d with
        | Gaussian sigma -> sigma * sigma
        | TUniform b -> (System.Math.Pow(2.0, float (2 * b + 1)) + 1.0) / 6.0 * System.Math.Pow(2.0, -128.0)

/// Where ciphertexts live between bootstraps and which operation comes first.
[<RequireQualifiedAccess>]
type PbsOrder =
    /// Ciphertexts under the big key (k·N); keyswitch to n, then bootstrap (TFHE-rs's default "KS_PBS").
    | KeyswitchBootstrap
    /// Ciphertexts under the small key (n); bootstrap, then keyswitch back ("PBS_KS").
    | BootstrapKeyswitch

/// How the LWE ciphertext is switched to the 2N modulus before blind rotation.
[<RequireQualifiedAccess>]
type ModulusSwitchKind =
    /// Round every coefficient to the nearest multiple of q/2N.
    | Standard
    /// Standard rounding plus a body correction that removes the mean of the mask-rounding error (TFHE-rs ≥ 1.4).
    | CenteredMean

/// A complete TFHE parameter set for one message precision: the lattice dimensions, the noise, the two gadget
/// decompositions, the plaintext space and what the set promises (the 2-norm it tolerates and its failure rate).
type TfheParameters =
    { /// A short name, unique among the presets.
      Name: string
      /// n: dimension of the small LWE key (the bootstrapping input).
      LweDimension: int
      /// k: number of GLWE mask polynomials.
      GlweDimension: int
      /// N: polynomial size (a power of two).
      PolynomialSize: int
      /// Noise of encryptions under the small LWE key (keyswitching key, small-key ciphertexts).
      LweNoise: NoiseDistribution
      /// Noise of encryptions under the GLWE key (bootstrapping key, big-key ciphertexts).
      GlweNoise: NoiseDistribution
      /// log2 of the bootstrapping gadget base, and its number of levels.
      PbsBaseLog: int
      PbsLevel: int
      /// log2 of the keyswitching gadget base, and its number of levels.
      KsBaseLog: int
      KsLevel: int
      /// Message and carry moduli; the plaintext space is their product, plus one padding bit.
      MessageModulus: int
      CarryModulus: int
      /// ν: the largest 2-norm of an integer linear combination of fresh bootstrap outputs that the set tolerates.
      MaxNoiseLevel: int
      /// The failure probability the set is published with (log2), for checking the noise model against.
      PublishedLog2PFail: float
      Order: PbsOrder
      ModulusSwitch: ModulusSwitchKind
      /// Marks a set built on purpose below 128-bit security (small or weak sets for tests and failure-rate
      /// measurements). Key generation refuses a set that fails the security check unless this is true.
      Insecure: bool }

    /// The plaintext space p = message modulus × carry modulus.
    member p.PlaintextModulus = p.MessageModulus * p.CarryModulus

    /// Bits of plaintext, padding bit excluded.
    member p.PrecisionBits = System.Numerics.BitOperations.Log2(uint32 p.PlaintextModulus)

    /// Dimension of the big LWE key (the flattened GLWE key): k·N.
    member p.BigLweDimension = p.GlweDimension * p.PolynomialSize

/// The TFHE-rs parameter sets with failure probability ≤ 2^-128 (values from TFHE-rs 1.7.0's parameter files).
module Presets =

    /// ν = floor((p - 1) / (message - 1)): the 2-norm TFHE-rs's sets are tuned for; 1 when there is no carry space.
    let private maxNoiseLevel message carry =
        if carry = 1 then 1 else (message * carry - 1) / (message - 1)

    let private make name message carry n k bigN lweNoise glweNoise (pbsBase, pbsLevel) (ksBase, ksLevel) pfail order ms =
        { Name = name
          LweDimension = n
          GlweDimension = k
          PolynomialSize = bigN
          LweNoise = lweNoise
          GlweNoise = glweNoise
          PbsBaseLog = pbsBase
          PbsLevel = pbsLevel
          KsBaseLog = ksBase
          KsLevel = ksLevel
          MessageModulus = message
          CarryModulus = carry
          MaxNoiseLevel = maxNoiseLevel message carry
          PublishedLog2PFail = pfail
          Order = order
          ModulusSwitch = ms
          Insecure = false }

    let private tuniform name message carry n k bigN lweBound glweBound pbs ks pfail =
        make
            $"TUNIFORM_2M128_%s{name}"
            message
            carry
            n
            k
            bigN
            (NoiseDistribution.TUniform lweBound)
            (NoiseDistribution.TUniform glweBound)
            pbs
            ks
            pfail
            PbsOrder.KeyswitchBootstrap
            ModulusSwitchKind.CenteredMean

    let private gaussian name message carry n k bigN (sigmaLwe: float) (sigmaGlwe: float) pbs ks pfail =
        make
            $"GAUSSIAN_2M128_%s{name}"
            message
            carry
            n
            k
            bigN
            (NoiseDistribution.Gaussian sigmaLwe)
            (NoiseDistribution.Gaussian sigmaGlwe)
            pbs
            ks
            pfail
            PbsOrder.KeyswitchBootstrap
            ModulusSwitchKind.CenteredMean

    /// 2-bit plaintext (message 2, carry 2): TFHE-rs's PARAM_MESSAGE_1_CARRY_1_KS_PBS_TUNIFORM_2M128.
    let tuniformM1C1 = tuniform "M1C1" 2 2 879 4 512 46 17 (23, 1) (5, 3) (-144.322)
    /// 4-bit plaintext: TFHE-rs's default, PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128.
    let tuniformM2C2 = tuniform "M2C2" 4 4 918 1 2048 45 17 (23, 1) (4, 4) (-129.581)
    /// 6-bit plaintext: PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128.
    let tuniformM3C3 = tuniform "M3C3" 8 8 1077 1 8192 41 3 (15, 2) (4, 5) (-128.992)
    /// 8-bit plaintext: PARAM_MESSAGE_4_CARRY_4_KS_PBS_TUNIFORM_2M128 (bootstrapping key of several GiB).
    let tuniformM4C4 = tuniform "M4C4" 16 16 1117 1 65536 40 3 (11, 3) (3, 7) (-141.559)

    /// The four TUniform KS-PBS sets, by plaintext precision 2, 4, 6 and 8 bits.
    let tuniform2M128 = [ tuniformM1C1; tuniformM2C2; tuniformM3C3; tuniformM4C4 ]

    /// All 36 Gaussian KS-PBS sets with message + carry ≤ 8 bits.
    let gaussian2M128 =
        [ gaussian "M1C0" 2 1 747 6 256 1.5944604865450687e-05 1.9524392655548086e-11 (17, 1) (4, 3) (-128.603)
          gaussian "M1C1" 2 2 837 4 512 3.3747142481837397e-06 2.845267479601915e-15 (23, 1) (5, 3) (-128.186)
          gaussian "M1C2" 2 4 885 2 1024 1.4742441118914234e-06 2.845267479601915e-15 (23, 1) (5, 3) (-128.536)
          gaussian "M1C3" 2 8 904 1 2048 1.0621869847945622e-06 2.845267479601915e-15 (23, 1) (3, 6) (-128.103)
          gaussian "M1C4" 2 16 930 1 4096 6.782362904013915e-07 2.168404344971009e-19 (15, 2) (3, 6) (-128.607)
          gaussian "M1C5" 2 32 1011 1 8192 1.6766481861068427e-07 2.168404344971009e-19 (15, 2) (3, 7) (-128.068)
          gaussian "M1C6" 2 64 1060 1 16384 7.199150706330062e-08 2.168404344971009e-19 (11, 3) (2, 11) (-128.147)
          gaussian "M1C7" 2 128 1104 1 65536 3.369659065698222e-08 2.168404344971009e-19 (9, 4) (3, 7) (-128.787)
          gaussian "M2C0" 4 1 846 3 512 2.889344520786227e-06 1.9524392655548086e-11 (17, 1) (5, 3) (-128.285)
          gaussian "M2C1" 4 2 884 2 1024 1.4999005934396873e-06 2.845267479601915e-15 (23, 1) (5, 3) (-128.607)
          gaussian "M2C2" 4 4 866 1 2048 2.046151696979124e-06 2.845267479601915e-15 (23, 1) (3, 5) (-128.597)
          gaussian "M2C3" 4 8 930 1 4096 6.782362904013915e-07 2.168404344971009e-19 (15, 2) (3, 6) (-128.639)
          gaussian "M2C4" 4 16 1007 1 8192 1.796446316728823e-07 2.168404344971009e-19 (15, 2) (3, 7) (-128.338)
          gaussian "M2C5" 4 32 1055 1 16384 7.84777675974155e-08 2.168404344971009e-19 (11, 3) (2, 11) (-128.045)
          gaussian "M2C6" 4 64 1108 1 65536 3.144949396867639e-08 2.168404344971009e-19 (11, 3) (3, 7) (-129.137)
          gaussian "M3C0" 8 1 884 2 1024 1.4999005934396873e-06 2.845267479601915e-15 (23, 1) (5, 3) (-128.664)
          gaussian "M3C1" 8 2 863 1 2048 2.154850045818961e-06 2.845267479601915e-15 (23, 1) (3, 5) (-128.389)
          gaussian "M3C2" 8 4 928 1 4096 7.020485941329387e-07 2.168404344971009e-19 (23, 1) (2, 9) (-128.041)
          gaussian "M3C3" 8 8 1006 1 8192 1.8277101294215978e-07 2.168404344971009e-19 (15, 2) (3, 7) (-128.115)
          gaussian "M3C4" 8 16 1070 1 16384 6.058296361594748e-08 2.168404344971009e-19 (15, 2) (2, 11) (-128.022)
          gaussian "M3C5" 8 32 1099 1 65536 3.673257191405497e-08 2.168404344971009e-19 (11, 3) (3, 7) (-128.155)
          gaussian "M4C0" 16 1 863 1 2048 2.154850045818961e-06 2.845267479601915e-15 (23, 1) (3, 5) (-128.636)
          gaussian "M4C1" 16 2 935 1 4096 6.221794297398788e-07 2.168404344971009e-19 (23, 1) (3, 6) (-128.261)
          gaussian "M4C2" 16 4 1006 1 8192 1.8277101294215978e-07 2.168404344971009e-19 (15, 2) (3, 7) (-128.146)
          gaussian "M4C3" 16 8 1057 1 16384 7.581593413770833e-08 2.168404344971009e-19 (15, 2) (2, 11) (-128.11)
          gaussian "M4C4" 16 16 1098 1 65536 3.73718341270979e-08 2.168404344971009e-19 (11, 3) (3, 7) (-128.731)
          gaussian "M5C0" 32 1 931 1 4096 6.666347503085657e-07 2.168404344971009e-19 (23, 1) (3, 6) (-128.453)
          gaussian "M5C1" 32 2 1006 1 8192 1.8277101294215978e-07 2.168404344971009e-19 (15, 2) (3, 7) (-128.152)
          gaussian "M5C2" 32 4 1055 1 16384 7.84777675974155e-08 2.168404344971009e-19 (15, 2) (2, 11) (-128.037)
          gaussian "M5C3" 32 8 1113 1 65536 2.8850164020946995e-08 2.168404344971009e-19 (15, 2) (3, 7) (-129.155)
          gaussian "M6C0" 64 1 1006 1 8192 1.8277101294215978e-07 2.168404344971009e-19 (15, 2) (3, 7) (-128.153)
          gaussian "M6C1" 64 2 1055 1 16384 7.84777675974155e-08 2.168404344971009e-19 (15, 2) (2, 11) (-128.12)
          gaussian "M6C2" 64 4 1101 1 65536 3.5486665054375844e-08 2.168404344971009e-19 (15, 2) (3, 7) (-129.438)
          gaussian "M7C0" 128 1 1055 1 16384 7.84777675974155e-08 2.168404344971009e-19 (15, 2) (2, 11) (-128.14)
          gaussian "M7C1" 128 2 1099 1 65536 3.673257191405497e-08 2.168404344971009e-19 (15, 2) (3, 7) (-130.375)
          gaussian "M8C0" 256 1 1098 1 65536 3.73718341270979e-08 2.168404344971009e-19 (15, 2) (3, 7) (-129.169) ]

    /// Every published 128-bit preset, TUniform first.
    let all = tuniform2M128 @ gaussian2M128

    /// INSECURE (k·N = 512, n = 128), for quick functional tests only: 2-bit plaintext (message 2, carry 2, ν = 3),
    /// KS-PBS with centered-mean modulus switch. The noise model gives p_fail ≈ 2^-1079 at ν = 3: the PBS output
    /// noise (2^-27.2) comes from the bootstrapping key's noise, the lookup's from the modulus switch (2^-18.6).
    let testFast =
        { make
              "TEST_FAST_INSECURE_M1C1"
              2
              2
              128
              1
              512
              (NoiseDistribution.TUniform 42)
              (NoiseDistribution.TUniform 32)
              (12, 2)
              (5, 3)
              (-1078.974)
              PbsOrder.KeyswitchBootstrap
              ModulusSwitchKind.CenteredMean with
            Insecure = true }

    /// INSECURE (n = 64, k·N = 256), for measuring failure rates: 2-bit plaintext (message 4, no carry, ν = 1), the
    /// keyswitching key's Gaussian noise chosen so that the model predicts p_fail = 0.0100 per KS-PBS, for a fresh
    /// input as for a bootstrap output (the keyswitch noise, 2^-10.74, dwarfs every other term). 10,000 lookups
    /// show about 100 failures.
    let weakForFailureRate =
        { make
              "WEAK_PFAIL_1E-2_INSECURE_M2C0"
              4
              1
              64
              1
              256
              (NoiseDistribution.Gaussian 1.879e-4)
              (NoiseDistribution.TUniform 20)
              (15, 2)
              (4, 3)
              (-6.644)
              PbsOrder.KeyswitchBootstrap
              ModulusSwitchKind.CenteredMean with
            Insecure = true }

    /// The presets below 128-bit security, for tests (Insecure = true); not part of `all`.
    let testing = [ testFast; weakForFailureRate ]

    /// The preset with the given name (published or testing); raises with the list of names when there is none.
    let byName (name: string) =
        match all @ testing |> List.tryFind (fun p -> p.Name = name) with
        | Some p -> p
        | None ->
            let names = all @ testing |> List.map _.Name |> String.concat ", "
            raise (System.ArgumentException($"No TFHE parameter preset named '%s{name}'. Known presets: %s{names}.", "name"))
