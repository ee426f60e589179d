namespace FheNet.Tfhe

open System

// Entities: plain containers of u64 (or f64 Fourier) data with their dimensions. Layouts follow TFHE-rs.

/// A uniform binary LWE secret key (each entry 0 or 1).
type LweSecretKey =
    { Bits: uint64[] }

    /// n.
    member k.Dimension = k.Bits.Length

/// A uniform binary GLWE secret key: k polynomials of size N, stored one after the other. Flattened it is the
/// "big" LWE key of dimension k·N under which sample-extracted ciphertexts decrypt.
type GlweSecretKey =
    { GlweDimension: int
      PolynomialSize: int
      Bits: uint64[] }

    /// The same bits as an LWE key of dimension k·N.
    member k.AsLweKey = { Bits = k.Bits }

/// An LWE ciphertext [a_0 … a_{n-1}, b] with b = Σ a_i·s_i + Δm + e (wrapping).
type LweCiphertext =
    { Data: uint64[] }

    /// n: the mask length (the key dimension).
    member c.Dimension = c.Data.Length - 1
    /// b.
    member c.Body = c.Data[c.Data.Length - 1]

/// An LWE ciphertext whose mask is regenerated from a seed: 16 bytes + one u64 instead of (n+1)·8 bytes.
type SeededLweCiphertext =
    { Seed: Seed
      Dimension: int
      Body: uint64 }

/// A GLWE ciphertext: k mask polynomials then the body polynomial, each of N coefficients.
type GlweCiphertext =
    { GlweDimension: int
      PolynomialSize: int
      Data: uint64[] }

/// A GGSW ciphertext of a small integer μ: ℓ level matrices (level ℓ first), each of k+1 GLWE rows.
type GgswCiphertext =
    { GlweDimension: int
      PolynomialSize: int
      Decomposer: Decomposer
      Data: uint64[] }

/// The standard bootstrapping key: n GGSW encryptions of the small key's bits under the GLWE key, concatenated.
type LweBootstrapKey =
    { InputDimension: int
      GlweDimension: int
      PolynomialSize: int
      Decomposer: Decomposer
      Data: uint64[] }

/// A bootstrapping key stored as its mask seed and the body polynomial of every GLWE row (n·ℓ·(k+1) bodies).
type SeededLweBootstrapKey =
    { Seed: Seed
      InputDimension: int
      GlweDimension: int
      PolynomialSize: int
      Decomposer: Decomposer
      Bodies: uint64[] }

/// The bootstrapping key in the Fourier domain of `FftPlan` (N doubles per polynomial, the plan's own order):
/// GGSW i, level matrix j (level ℓ first), row r, column c at ((((i·ℓ + j)·(k+1) + r)·(k+1)) + c)·N.
type FourierBootstrapKey =
    { InputDimension: int
      GlweDimension: int
      PolynomialSize: int
      Decomposer: Decomposer
      Data: float[] }

/// The LWE-to-LWE keyswitching key: for input key entry i and level j (level ℓ first), an LWE encryption under the
/// output key of s_in[i]·2^(64 - β·j); entry (i, j) at (i·ℓ + j)·(n_out + 1).
type LweKeyswitchKey =
    { InputDimension: int
      OutputDimension: int
      Decomposer: Decomposer
      Data: uint64[] }

/// A keyswitching key stored as its mask seed and the bodies (n_in·ℓ values).
type SeededLweKeyswitchKey =
    { Seed: Seed
      InputDimension: int
      OutputDimension: int
      Decomposer: Decomposer
      Bodies: uint64[] }
