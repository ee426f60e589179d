namespace FheNet.Tfhe

open System

/// Samplers of the encryption noise (values on the 2^64 torus, wrapping). Their exact variances are
/// `NoiseDistribution.Variance`: (2^(2b+1)+1)/6 integer units² for TUniform(b), σ² (normalized) for a Gaussian.
module Noise =

    /// One sample of TUniform(b): b + 2 random bits r give (r >> 1) + (r & 1) - 2^b, so every integer of
    /// [-2^b, 2^b] has probability 2^-(b+1) except the two ends, which have 2^-(b+2).
    let sampleTUniform (boundLog2: int) (rng: AesCtrGenerator) =
        let r = rng.NextUInt64() >>> (64 - (boundLog2 + 2))
        (r >>> 1) + (r &&& 1UL) - (1UL <<< boundLog2)

    /// One sample of a centred Gaussian with standard deviation σ (a fraction of q), by Box–Muller in f64 on the
    /// real torus, rounded to the 2^64 grid.
    let sampleGaussian (stdDev: float) (rng: AesCtrGenerator) =
        let u1 = rng.NextOpenUnit()
        let u2 = rng.NextOpenUnit()
        let z = sqrt (-2.0 * log u1) * Math.Cos(2.0 * Math.PI * u2)
        Torus.ofReal (z * stdDev)

    /// One noise sample from a distribution.
    let sample (distribution: NoiseDistribution) (rng: AesCtrGenerator) =
        match distribution with
        | NoiseDistribution.TUniform b -> sampleTUniform b rng
        | NoiseDistribution.Gaussian s -> sampleGaussian s rng

    /// Checks that a distribution's parameter is usable; raises naming the field otherwise.
    let validate (paramName: string) (distribution: NoiseDistribution) =
        match distribution with
        | NoiseDistribution.TUniform b -> FheNet.Guard.inRange paramName 0 61 b
        | NoiseDistribution.Gaussian s -> FheNet.Guard.positiveFinite paramName s
