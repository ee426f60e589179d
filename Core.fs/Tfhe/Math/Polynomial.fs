namespace FheNet.Tfhe

open System
open System.Runtime.Intrinsics
open System.Runtime.CompilerServices
open System.Runtime.InteropServices

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

    /// monomialMulMinusSelf on arrays (N values from each offset), 8 coefficients at a time when `vectorized`
    /// (AVX-512): two straight loops, one per side of the wrap point, the sign applied as (v xor m) - m.
    let monomialMulMinusSelfInto (vectorized: bool) (input: uint64[]) (inputOffset: int) (n: int) (degree: int) (output: uint64[]) (outputOffset: int) =
        if inputOffset < 0 || inputOffset + n > input.Length then
            raise (DimensionMismatchException("input", "offset + N within the array", inputOffset + n, input.Length))
        if outputOffset < 0 || outputOffset + n > output.Length then
            raise (DimensionMismatchException("output", "offset + N within the array", outputOffset + n, output.Length))
        if degree < 0 || degree >= 2 * n then
            raise (FheNet.ParameterOutOfRangeException("degree", degree, $"in [0, 2N) = [0, %d{2 * n})"))
        if not vectorized then
            monomialMulMinusSelf (ReadOnlySpan(input, inputOffset, n)) degree (Span(output, outputOffset, n))
        else
            let negate = degree >= n
            let d = if negate then degree - n else degree
            let source = &Unsafe.Add(&MemoryMarshal.GetArrayDataReference input, inputOffset)
            let target = &Unsafe.Add(&MemoryMarshal.GetArrayDataReference output, outputOffset)
            // out[j] = ±in[j - d] - in[j] for j ≥ d, and ∓in[j - d + n] - in[j] for j < d.
            let upper = if negate then UInt64.MaxValue else 0UL
            let lower = ~~~upper
            let upperMask, lowerMask = Vector512.Create upper, Vector512.Create lower
            let mutable j = d
            while j + 8 <= n do
                let shifted = Vector512.LoadUnsafe(&source, unativeint (j - d))
                let v = (shifted ^^^ upperMask) - upperMask - Vector512.LoadUnsafe(&source, unativeint j)
                Vector512.StoreUnsafe(v, &target, unativeint j)
                j <- j + 8
            while j < n do
                Unsafe.Add(&target, j) <- ((Unsafe.Add(&source, j - d) ^^^ upper) - upper) - Unsafe.Add(&source, j)
                j <- j + 1
            j <- 0
            while j + 8 <= d do
                let shifted = Vector512.LoadUnsafe(&source, unativeint (j - d + n))
                let v = (shifted ^^^ lowerMask) - lowerMask - Vector512.LoadUnsafe(&source, unativeint j)
                Vector512.StoreUnsafe(v, &target, unativeint j)
                j <- j + 8
            while j < d do
                Unsafe.Add(&target, j) <- ((Unsafe.Add(&source, j - d + n) ^^^ lower) - lower) - Unsafe.Add(&source, j)
                j <- j + 1
