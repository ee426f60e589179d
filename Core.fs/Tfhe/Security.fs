namespace FheNet.Tfhe

open System
open FheNet

/// A lattice security curve: the smallest Gaussian noise standard deviation (normalized to q = 2^64) for which an
/// LWE problem with a uniform binary secret of dimension n reaches the curve's security level,
/// log2 σ(n) = Slope·n + Bias, never below σ = 2^(2 − 64) (a few integer units of noise).
type SecurityCurve =
    { /// Where the curve comes from.
      Name: string
      /// The security level the curve guarantees, in bits.
      SecurityBits: int
      /// Slope of log2 σ in the dimension.
      Slope: float
      /// Intercept of log2 σ.
      Bias: float
      /// The smallest dimension the fit covers; smaller keys are refused.
      MinDimension: int }

/// The family of a noise distribution, without its width (what the security curve picks).
[<RequireQualifiedAccess>]
type NoiseFamily =
    /// TUniform(b), the bound chosen from TFHE-rs's TUniform curve.
    | TUniform
    /// Gaussian(σ), σ chosen from TFHE-rs's Gaussian curve.
    | Gaussian

/// Which secret key of a parameter set.
[<RequireQualifiedAccess>]
type SecretKeyKind =
    /// The small LWE key (dimension n); its noise is the keyswitching key's.
    | SmallLwe
    /// The GLWE key (dimension k·N as an LWE key); its noise is the bootstrapping key's.
    | Glwe

/// The verdict on one key of a parameter set.
type KeySecurity =
    { /// Which key.
      Key: SecretKeyKind
      /// LWE dimension of the key (n, or k·N for the GLWE key).
      Dimension: int
      /// The key's noise distribution, as the set gives it.
      Noise: NoiseDistribution
      /// The noise's standard deviation, normalized to q.
      StdDev: float
      /// The smallest standard deviation the curve accepts at this dimension.
      RequiredStdDev: float
      /// False when the dimension is below the curve's domain (no noise makes it secure).
      DimensionInDomain: bool }

    /// log2(StdDev / RequiredStdDev): how many bits of noise the key has to spare (negative: missing).
    member k.MarginBits = Math.Log2(k.StdDev / k.RequiredStdDev)

    /// True when the key meets the curve.
    member k.IsSecure = k.DimensionInDomain && k.StdDev >= k.RequiredStdDev

/// The verdict on a parameter set: both keys checked against one curve.
type SecurityReport =
    { /// The set's name.
      ParameterSet: string
      /// The curve the keys were held to.
      Curve: SecurityCurve
      /// The small LWE key (n, LweNoise).
      SmallKey: KeySecurity
      /// The GLWE key (k·N, GlweNoise).
      GlweKey: KeySecurity }

    /// The keys that fail the curve (empty when the set is secure).
    member r.Failures = [ r.SmallKey; r.GlweKey ] |> List.filter (fun k -> not k.IsSecure)

    /// True when both keys meet the curve.
    member r.IsSecure = r.Failures.IsEmpty

/// The words of a failed security verdict.
module SecurityVerdict =

    /// Each failing key of a report: the noise it has, the noise it needs, and how to fix it.
    let describeFailures (report: SecurityReport) =
        let describe (k: KeySecurity) =
            let keyName =
                match k.Key with
                | SecretKeyKind.SmallLwe -> $"the small LWE key (n = %d{k.Dimension}, LweNoise)"
                | SecretKeyKind.Glwe -> $"the GLWE key (k·N = %d{k.Dimension}, GlweNoise)"
            if not k.DimensionInDomain then
                $"%s{keyName} is below the curve's smallest dimension %d{report.Curve.MinDimension}; "
                + "use a larger dimension"
            else
                let needBound = Math.Ceiling(Math.Log2(k.RequiredStdDev * Math.Sqrt 6.0) + 63.5)
                $"%s{keyName} has %A{k.Noise} (σ = 2^%.2f{Math.Log2 k.StdDev}) but needs σ ≥ 2^%.2f{Math.Log2 k.RequiredStdDev} "
                + $"(short by %.2f{-k.MarginBits} bits); use at least Gaussian(%.6g{k.RequiredStdDev}) or TUniform(%.0f{needBound}), "
                + "or a larger dimension"
        let failures = report.Failures |> List.map describe |> String.concat "; "
        $"Parameter set '%s{report.ParameterSet}' is not %d{report.Curve.SecurityBits}-bit secure ({report.Curve.Name}): "
        + $"%s{failures}."

/// A parameter set fails the security check and is not marked Insecure. The message names the set, each failing key,
/// the noise it has and the noise it needs, and how to fix it.
type InsecureParametersException(report: SecurityReport) =
    inherit
        Exception(
            SecurityVerdict.describeFailures report
            + " Sets built in code only for tests may be marked Insecure = true."
        )

    /// The full verdict, both keys.
    member _.Report = report

/// The 128-bit security check of parameter sets and the minimal secure noise of a dimension.
module Security =

    /// The Gaussian σ never goes below 2^(2 − 64): a few integer units of noise on the 2^64 torus.
    let private log2StdDevFloor = 2.0 - 64.0

    /// Concrete's 128-bit curve (lattice-estimator fit): the curve the security check holds every set to.
    let concrete128 =
        { Name = "Concrete 128-bit curve"
          SecurityBits = 128
          Slope = -0.025696778711484593
          Bias = 2.675931372549016
          MinDimension = 450 }

    /// TFHE-rs's 132-bit curve, from which TFHE-rs picks the noise of its sets (a 4-bit margin over 128).
    let tfhers132 =
        { Name = "TFHE-rs 132-bit curve"
          SecurityBits = 132
          Slope = -0.024891456582633045
          Bias = 2.65734593837534
          MinDimension = 450 }

    /// The smallest normalized Gaussian σ the curve accepts at dimension n (floored at 2^-62).
    let requiredStdDev (curve: SecurityCurve) (n: int) =
        Math.Pow(2.0, max log2StdDevFloor (curve.Slope * float n + curve.Bias))

    /// Standard deviation of a noise distribution, normalized to q = 2^64.
    let stdDev (noise: NoiseDistribution) = Math.Sqrt noise.Variance

    /// TFHE-rs's smallest secure TUniform bound at dimension n: ceil(−0.025167785·n + 64 + 4.100671), at least 3.
    let minimalTUniformBoundLog2 (n: int) =
        Guard.inRange "n" 1 (1 <<< 20) n
        max 3 (int (Math.Ceiling(-0.025167785 * float n + 64.0 + 4.10067100000001)))

    /// TFHE-rs's smallest secure Gaussian σ at dimension n: sqrt(2^(4 − 128) + 2^(5.3147 − 0.049783·n)), the 132-bit
    /// curve with its floor, normalized.
    let minimalGaussianStdDev (n: int) =
        Guard.inRange "n" 1 (1 <<< 20) n
        Math.Sqrt(Math.Pow(2.0, 4.0 - 128.0) + Math.Pow(2.0, 2.0 * tfhers132.Bias + 2.0 * tfhers132.Slope * float n))

    /// The least noise TFHE-rs would use at dimension n in the given family (the noise of its published sets).
    let minimalNoise (family: NoiseFamily) (n: int) =
        match family with
        | NoiseFamily.TUniform -> NoiseDistribution.TUniform(minimalTUniformBoundLog2 n)
        | NoiseFamily.Gaussian -> NoiseDistribution.Gaussian(minimalGaussianStdDev n)

    let private checkKey curve key dimension noise =
        { Key = key
          Dimension = dimension
          Noise = noise
          StdDev = stdDev noise
          RequiredStdDev = requiredStdDev curve dimension
          DimensionInDomain = dimension >= curve.MinDimension }

    /// Checks both keys of a parameter set against a curve.
    let checkAgainst (curve: SecurityCurve) (p: TfheParameters) =
        { ParameterSet = p.Name
          Curve = curve
          SmallKey = checkKey curve SecretKeyKind.SmallLwe p.LweDimension p.LweNoise
          GlweKey = checkKey curve SecretKeyKind.Glwe p.BigLweDimension p.GlweNoise }

    /// Checks both keys of a parameter set against the 128-bit curve.
    let check (p: TfheParameters) = checkAgainst concrete128 p

    /// Raises InsecureParametersException when the set fails the 128-bit check, unless it is marked Insecure.
    /// Key generation calls this before it creates any key. The Insecure mark is a decision of the code that built the
    /// set: a set read from a file or the network is checked by the reader regardless of its mark
    /// (ClientArtifactFormat.read).
    let ensureSecure (p: TfheParameters) =
        if not p.Insecure then
            let report = check p
            if not report.IsSecure then
                raise (InsecureParametersException report)
