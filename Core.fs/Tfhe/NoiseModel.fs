namespace FheNet.Tfhe

open System
open FheNet

/// How the noise of one table lookup looks to a simulator, in units of the phase after the modulus switch to 2N
/// ("slots"): the bootstrap reads box index round(phase / BoxSlots), so an error e returns the table entry
/// round(e / BoxSlots) boxes away from the right one, and a wrong value iff |e| > BoxSlots / 2.
type LookupNoise =
    { /// Standard deviation of the phase error at the blind rotation, in slots of the 2N torus.
      PhaseStdDev: float
      /// Slots per plaintext value: N / p.
      BoxSlots: float
      /// log2 of the probability that the lookup returns a wrong value.
      Log2PFail: float }

    /// The probability that the lookup returns a wrong value.
    member l.PFail = Math.Pow(2.0, l.Log2PFail)

    /// The probability that the lookup returns the entry `shift` boxes away from the right one (shift = 0: the right
    /// one), the phase error being centred Gaussian: P(|e − shift·box| ≤ box/2). A simulator can draw from it.
    member l.ShiftProbability(shift: int) =
        if shift = 0 then
            1.0 - l.PFail
        else
            let tail (boxes: float) =
                0.5 * MathNet.Numerics.SpecialFunctions.Erfc(boxes * l.BoxSlots / (l.PhaseStdDev * Math.Sqrt 2.0))
            let m = float (abs shift)
            tail (m - 0.5) - tail (m + 0.5)

/// The TFHE-rs noise model (normalized torus, q = 2^64): variances of fresh encryptions, of the keyswitch, the
/// modulus switch and the programmable bootstrap (FFT error included), and the failure probability of a lookup.
/// The formulas are TFHE-rs 1.7's auto-generated ones (noise_formulas/*.rs), which reproduce its published p_fail.
module NoiseModel =

    /// log2 of the ciphertext modulus.
    let modulusLog2 = 64.0

    /// Bits of the f64 mantissa: the FFT loses the product bits below it.
    let fftMantissaBits = 53.0

    let private invQ2 = Math.Pow(2.0, -2.0 * modulusLog2)

    /// Variance of a fresh encryption under a key with the given noise (the mask adds no noise).
    let freshVariance (noise: NoiseDistribution) = noise.Variance

    /// The FFT's rounding error added to one PBS (TFHE-rs's fitted term, summed over the n CMuxes).
    let fftVariance (n: int) (k: int) (polynomialSize: int) (baseLog: int) (level: int) =
        let lostBits = max 0.0 (modulusLog2 - fftMantissaBits)
        float n
        * 0.00705
        * Math.Pow(2.0, 2.0 * lostBits + 2.0 * float baseLog - 2.0 * modulusLog2)
        * Math.Pow(float level, 1.01827)
        * Math.Pow(float k, 1.22003)
        * Math.Pow(float polynomialSize, 2.22003)
        * Math.Pow(float (k + 1), 1.01827)

    /// Mean square of a balanced base-B digit: (B² + 2)/12.
    let private digitSquare (baseLog: int) = Math.Pow(2.0, 2.0 * float baseLog) / 12.0 + 1.0 / 6.0

    /// Output variance of one CMux of a blind rotation into a GLWE of dimension k, polynomial size N, whose key
    /// noise has variance `glweVariance`: the GGSW noise times the decomposed digits, the decomposition's rounding
    /// error and the FFT error. A PBS adds n of them.
    let cmuxVariance (k: int) (polynomialSize: int) (glweVariance: float) (baseLog: int) (level: int) =
        let kf, bigN, levelF = float k, float polynomialSize, float level
        let truncation = Math.Pow(2.0, -2.0 * float baseLog * levelF)
        levelF * bigN * glweVariance * digitSquare baseLog * (kf + 1.0)
        - invQ2 / 24.0
        + 0.5 * kf * bigN * (invQ2 / 48.0 + truncation / 24.0)
        + truncation / 24.0
        + fftVariance 1 k polynomialSize baseLog level

    /// Output variance of a programmable bootstrap (blind rotation + sample extraction), its accumulator trivial.
    let pbsVariance (p: TfheParameters) =
        float p.LweDimension * cmuxVariance p.GlweDimension p.PolynomialSize p.GlweNoise.Variance p.PbsBaseLog p.PbsLevel

    /// Variance a keyswitch adds per input coefficient, into a key whose noise has variance `lweVariance`: the
    /// keyswitching key's noise times the digits, and the rounding of the mask to the decomposition's precision.
    let keyswitchVariancePerInput (lweVariance: float) (baseLog: int) (level: int) =
        let truncation = Math.Pow(2.0, -2.0 * float baseLog * float level)
        float level * lweVariance * digitSquare baseLog + invQ2 / 48.0 + truncation / 24.0

    /// Variance the keyswitch (big key k·N → small key n) adds.
    let keyswitchVariance (p: TfheParameters) =
        float p.BigLweDimension * keyswitchVariancePerInput p.LweNoise.Variance p.KsBaseLog p.KsLevel

    /// Variance of a keyswitch's output whose input has `inputVariance` (under the big key).
    let keyswitchOutputVariance (p: TfheParameters) (inputVariance: float) =
        Guard.finite "inputVariance" inputVariance
        inputVariance + keyswitchVariance p

    /// Variance the modulus switch from q to 2N adds to a ciphertext of dimension n (binary key).
    let modulusSwitchVarianceOf (kind: ModulusSwitchKind) (n: int) (polynomialSize: int) =
        let n = float n
        let invTwoN2 = Math.Pow(2.0 * float polynomialSize, -2.0)
        match kind with
        | ModulusSwitchKind.Standard -> n * (invQ2 / 48.0 + invTwoN2 / 24.0) - invQ2 / 12.0 + invTwoN2 / 12.0
        | ModulusSwitchKind.CenteredMean -> n * (invQ2 / 24.0 + invTwoN2 / 48.0)

    /// Variance the modulus switch from q to 2N adds before the set's blind rotation.
    let modulusSwitchVariance (p: TfheParameters) =
        modulusSwitchVarianceOf p.ModulusSwitch p.LweDimension p.PolynomialSize

    /// Variance of the phase at the blind rotation when the ciphertext before the lookup has `inputVariance`:
    /// KS-PBS adds the keyswitch and the modulus switch; PBS-KS only the modulus switch.
    let blindRotationVariance (p: TfheParameters) (inputVariance: float) =
        Guard.finite "inputVariance" inputVariance
        match p.Order with
        | PbsOrder.KeyswitchBootstrap -> inputVariance + keyswitchVariance p + modulusSwitchVariance p
        | PbsOrder.BootstrapKeyswitch -> inputVariance + modulusSwitchVariance p

    /// Variance of a ciphertext between two lookups: a linear combination of 2-norm ν of bootstrap outputs (the
    /// PBS output for KS-PBS, PBS then keyswitch for PBS-KS).
    let linearCombinationVariance (p: TfheParameters) (nu: float) =
        Guard.positiveFinite "nu" nu
        match p.Order with
        | PbsOrder.KeyswitchBootstrap -> nu * nu * pbsVariance p
        | PbsOrder.BootstrapKeyswitch -> nu * nu * (pbsVariance p + keyswitchVariance p)

    /// Variance at the blind rotation of a lookup whose input is a 2-norm-ν combination of bootstrap outputs:
    /// V = ν²·Var_PBS + Var_KS + Var_MS for KS-PBS.
    let lookupInputVariance (p: TfheParameters) (nu: float) =
        blindRotationVariance p (linearCombinationVariance p nu)

    let private log2E = 1.0 / Math.Log 2.0

    /// Continued fraction for erfc at large x: erfc(x) = e^(−x²) / (√π · (x + (1/2)/(x + 1/(x + (3/2)/(x + …))))),
    /// evaluated bottom-up; 120 terms are exact to double precision for x ≥ 3.
    let private erfcContinuedFraction (x: float) =
        let mutable t = x
        for j in 120 .. -1 .. 1 do
            t <- x + (float j / 2.0) / t
        t

    /// Where log erfc switches from MathNet's erfc to the continued fraction.
    let private continuedFractionFrom = 3.0

    /// log2 erfc(x), exact for every real x, with no underflow for large x (erfc(30) ≈ 10^-393 has a log2 ≈ −1305).
    let log2Erfc (x: float) =
        Guard.finite "x" x
        if x < continuedFractionFrom then
            Math.Log2(MathNet.Numerics.SpecialFunctions.Erfc x)
        else
            (-x * x - Math.Log(Math.Sqrt Math.PI * erfcContinuedFraction x)) * log2E

    /// log2 of the probability that noise of the given variance at the blind rotation exceeds the decoding bound
    /// 1/(4p) of a plaintext space p (padding bit included): erfc(1/(4p) / √(2V)).
    let log2PFailOfVariance (plaintextModulus: int) (variance: float) =
        Guard.inRange "plaintextModulus" 1 (1 <<< 20) plaintextModulus
        Guard.positiveFinite "variance" variance
        log2Erfc (1.0 / (4.0 * float plaintextModulus) / Math.Sqrt(2.0 * variance))

    /// The largest variance at the blind rotation for which a plaintext space p fails with probability at most
    /// 2^log2PError: (1/(4p))² / (2x²) with erfc(x) = 2^log2PError (x by bisection, rounded up).
    let maxVarianceForLog2PFail (plaintextModulus: int) (log2PError: float) =
        Guard.inRange "plaintextModulus" 1 (1 <<< 20) plaintextModulus
        if not (log2PError < 0.0 && log2PError >= -100_000.0) then
            raise (ParameterOutOfRangeException("log2PError", log2PError, "a log2 probability in [-100000, 0)"))
        let mutable lo, hi = 0.0, 500.0
        for _ in 1..200 do
            let mid = 0.5 * (lo + hi)
            if log2Erfc mid > log2PError then lo <- mid else hi <- mid
        let bound = 1.0 / (4.0 * float plaintextModulus)
        bound * bound / (2.0 * hi * hi)

    /// log2 p_fail of one lookup whose input is a 2-norm-ν combination of bootstrap outputs.
    let log2PFail (p: TfheParameters) (nu: float) =
        log2PFailOfVariance p.PlaintextModulus (lookupInputVariance p nu)

    /// log2 p_fail of one lookup at the set's own MaxNoiseLevel (what TFHE-rs publishes).
    let log2PFailAtMaxNoiseLevel (p: TfheParameters) = log2PFail p (float p.MaxNoiseLevel)

    /// The probability that one lookup fails (may be 0 in double precision below 2^-1074: use log2PFail there).
    let pFail (p: TfheParameters) (nu: float) = Math.Pow(2.0, log2PFail p nu)

    /// The noise of one lookup for a simulator, when the ciphertext before the lookup has `inputVariance`
    /// (e.g. linearCombinationVariance p ν, or freshVariance p.GlweNoise for a fresh big-key encryption).
    let lookupNoise (p: TfheParameters) (inputVariance: float) =
        let v = blindRotationVariance p inputVariance
        { PhaseStdDev = Math.Sqrt v * 2.0 * float p.PolynomialSize
          BoxSlots = float p.PolynomialSize / float p.PlaintextModulus
          Log2PFail = log2PFailOfVariance p.PlaintextModulus v }
