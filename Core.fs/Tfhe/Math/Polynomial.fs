namespace FheNet.Tfhe

open System

/// Exact operations on polynomials of Z_q[X]/(X^N + 1), q = 2^64, stored as coefficient spans (wrapping u64).
/// These are the reference the FFT path is tested against, and the monomial products the blind rotation uses.
module Polynomial =

    /// The exact negacyclic product a·b mod (X^N + 1), by schoolbook multiplication in O(N²).
    let negacyclicProduct (a: ReadOnlySpan<uint64>) (b: ReadOnlySpan<uint64>) =
        let n = a.Length
        if b.Length <> n then
            raise (DimensionMismatchException("b", "the polynomial size", n, b.Length))
        let result = Array.zeroCreate<uint64> n
        for i in 0 .. n - 1 do
            let ai = a[i]
            if ai <> 0UL then
                for j in 0 .. n - 1 do
                    let k = i + j
                    if k < n then result[k] <- result[k] + ai * b[j]
                    else result[k - n] <- result[k - n] - ai * b[j]
        result

    /// output = input · X^degree mod (X^N + 1), for degree in [0, 2N) (X^N = -1).
    let monomialMul (input: ReadOnlySpan<uint64>) (degree: int) (output: Span<uint64>) =
        let n = input.Length
        let negate = degree >= n
        let d = if negate then degree - n else degree
        // Coefficient i moves to i + d; those past N wrap round with a sign flip.
        for i in 0 .. n - d - 1 do
            output[i + d] <- if negate then 0UL - input[i] else input[i]
        for i in n - d .. n - 1 do
            output[i + d - n] <- if negate then input[i] else 0UL - input[i]

    /// output = input · X^degree − input, for degree in [0, 2N): the CMux difference of the blind rotation.
    let monomialMulMinusSelf (input: ReadOnlySpan<uint64>) (degree: int) (output: Span<uint64>) =
        let n = input.Length
        let negate = degree >= n
        let d = if negate then degree - n else degree
        for i in 0 .. n - d - 1 do
            output[i + d] <- (if negate then 0UL - input[i] else input[i]) - input[i + d]
        for i in n - d .. n - 1 do
            output[i + d - n] <- (if negate then input[i] else 0UL - input[i]) - input[i + d - n]
