#nowarn "9" // NativePtr in KeyPrefetch and FftPlan.MultiplyRows: the prefetch instruction takes an address

namespace FheNet.Tfhe

open System
open System.Runtime.InteropServices
open System.Runtime.CompilerServices
open Microsoft.FSharp.NativeInterop
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86

/// Which instruction set a kernel runs on. Every path computes the same transform; tests call each explicitly.
[<RequireQualifiedAccess>]
type SimdPath =
    /// Portable scalar code (with fused multiply-add).
    | Scalar
    /// AVX2 + FMA, 4 doubles per vector.
    | Vector256
    /// AVX-512 F/DQ, 8 doubles per vector.
    | Vector512

/// Detection of the SIMD paths this machine runs.
module SimdPath =

    /// Whether `path` can run here (the JIT honours DOTNET_EnableAVX512=0 and friends).
    let isSupported path =
        match path with
        | SimdPath.Scalar -> true
        | SimdPath.Vector256 -> Avx2.IsSupported && Fma.IsSupported
        | SimdPath.Vector512 -> Avx512F.IsSupported && Avx512DQ.IsSupported && Vector512.IsHardwareAccelerated

    /// The widest supported path.
    let best =
        if isSupported SimdPath.Vector512 then SimdPath.Vector512
        elif isSupported SimdPath.Vector256 then SimdPath.Vector256
        else SimdPath.Scalar

    /// The supported paths, widest first.
    let supported = [ SimdPath.Vector512; SimdPath.Vector256; SimdPath.Scalar ] |> List.filter isSupported

/// Twiddle factors to within about half an ulp: the FFT's rounding error is part of the bootstrap noise.
module internal Twiddle =

    let private piLow = 1.2246467991473532e-16 // π - fl(π)

    /// (cos πu, sin πu) for u in [0, 1/4]: the angle as a double-double (fl(π·u) and its rounding error), then a
    /// first-order correction of libm's cos and sin.
    let private octant (u: float) =
        let hi = Math.PI * u
        let lo = Math.FusedMultiplyAdd(Math.PI, u, -hi) + piLow * u
        let c, s = Math.Cos hi, Math.Sin hi
        struct (c - lo * s, s + lo * c)

    /// (cos πt, sin πt) for a dyadic t in [0, 2), reduced exactly to the first octant by symmetry.
    let cosSinPi (t: float) =
        let flip, t = if t >= 1.0 then true, t - 1.0 else false, t
        let struct (c, s) =
            if t > 0.5 then
                let u = 1.0 - t
                let struct (c, s) = if u > 0.25 then (let struct (c, s) = octant (0.5 - u) in struct (s, c)) else octant u
                struct (-c, s)
            elif t > 0.25 then
                let struct (c, s) = octant (0.5 - t)
                struct (s, c)
            else
                octant t
        if flip then struct (-c, -s) else struct (c, s)

    /// cos πt.
    let cosPi t = let struct (c, _) = cosSinPi t in c

    /// sin πt.
    let sinPi t = let struct (_, s) = cosSinPi t in s

/// AVX-512 building blocks of the FFT, inlined by the F# compiler into the kernels.
module internal Butterfly512 =

    /// Re(a·b)
    let inline mulRe (ar: Vector512<float>) (ai: Vector512<float>) (br: Vector512<float>) (bi: Vector512<float>) =
        Avx512F.FusedMultiplySubtract(ar, br, ai * bi)

    /// Im(a·b)
    let inline mulIm (ar: Vector512<float>) (ai: Vector512<float>) (br: Vector512<float>) (bi: Vector512<float>) =
        Avx512F.FusedMultiplyAdd(ar, bi, ai * br)

    /// Re(a·conj b)
    let inline mulConjRe (ar: Vector512<float>) (ai: Vector512<float>) (br: Vector512<float>) (bi: Vector512<float>) =
        Avx512F.FusedMultiplyAdd(ar, br, ai * bi)

    /// Im(a·conj b)
    let inline mulConjIm (ar: Vector512<float>) (ai: Vector512<float>) (br: Vector512<float>) (bi: Vector512<float>) =
        Avx512F.FusedMultiplySubtract(ai, br, ar * bi)

    /// Two forward radix-2 stages (spans s and s/2) on the quadruple (x0, x1, x2, x3) at (j, j + s/2, j + s,
    /// j + 3s/2), with w1 = e^{-2πi j/(2s)} and w2 = e^{-2πi j/s}.
    let inline difQuad x0r x0i x1r x1i x2r x2i x3r x3i (w1r: Vector512<float>) w1i (w2r: Vector512<float>) w2i =
        let y0r, y0i = x0r + x2r, x0i + x2i
        let y1r, y1i = x1r + x3r, x1i + x3i
        let ar, ai = x0r - x2r, x0i - x2i
        let y2r, y2i = mulRe ar ai w1r w1i, mulIm ar ai w1r w1i
        // (x1 - x3)·(-i)·w1: multiplying by -i maps (a, b) to (b, -a).
        let br, bi = x1i - x3i, x3r - x1r
        let y3r, y3i = mulRe br bi w1r w1i, mulIm br bi w1r w1i
        let cr, ci = y0r - y1r, y0i - y1i
        let er, ei = y2r - y3r, y2i - y3i
        struct (y0r + y1r, y0i + y1i, mulRe cr ci w2r w2i, mulIm cr ci w2r w2i, y2r + y3r, y2i + y3i, mulRe er ei w2r w2i, mulIm er ei w2r w2i)

    /// The inverse of difQuad (up to the factor 4): spans s/2 then s with the conjugate twiddles.
    let inline ditQuad z0r z0i z1r z1i z2r z2i z3r z3i (w1r: Vector512<float>) w1i (w2r: Vector512<float>) w2i =
        let vr, vi = mulConjRe z1r z1i w2r w2i, mulConjIm z1r z1i w2r w2i
        let y0r, y0i, y1r, y1i = z0r + vr, z0i + vi, z0r - vr, z0i - vi
        let vr, vi = mulConjRe z3r z3i w2r w2i, mulConjIm z3r z3i w2r w2i
        let y2r, y2i, y3r, y3i = z2r + vr, z2i + vi, z2r - vr, z2i - vi
        let vr, vi = mulConjRe y2r y2i w1r w1i, mulConjIm y2r y2i w1r w1i
        let ur, ui = mulConjRe y3r y3i w1r w1i, mulConjIm y3r y3i w1r w1i
        // ·i maps (a, b) to (-b, a)
        let tr, ti = Vector512.Negate ui, ur
        struct (y0r + vr, y0i + vi, y1r + tr, y1i + ti, y0r - vr, y0i - vi, y1r - tr, y1i - ti)

    /// The 8×8 transpose of the doubles of eight vectors (element l of vector v goes to element v of vector l):
    /// unpacks within 128-bit lanes, then two rounds of two-source permutes. An involution.
    let inline transpose8
        (r0: Vector512<float>) (r1: Vector512<float>) (r2: Vector512<float>) (r3: Vector512<float>)
        (r4: Vector512<float>) (r5: Vector512<float>) (r6: Vector512<float>) (r7: Vector512<float>)
        (evenPairs: Vector512<int64>) (oddPairs: Vector512<int64>) (lowHalves: Vector512<int64>) (highHalves: Vector512<int64>)
        =
        let t0, t1 = Avx512F.UnpackLow(r0, r1), Avx512F.UnpackHigh(r0, r1)
        let t2, t3 = Avx512F.UnpackLow(r2, r3), Avx512F.UnpackHigh(r2, r3)
        let t4, t5 = Avx512F.UnpackLow(r4, r5), Avx512F.UnpackHigh(r4, r5)
        let t6, t7 = Avx512F.UnpackLow(r6, r7), Avx512F.UnpackHigh(r6, r7)
        let u0, u2 = Avx512F.PermuteVar8x64x2(t0, evenPairs, t2), Avx512F.PermuteVar8x64x2(t0, oddPairs, t2)
        let u1, u3 = Avx512F.PermuteVar8x64x2(t1, evenPairs, t3), Avx512F.PermuteVar8x64x2(t1, oddPairs, t3)
        let u4, u6 = Avx512F.PermuteVar8x64x2(t4, evenPairs, t6), Avx512F.PermuteVar8x64x2(t4, oddPairs, t6)
        let u5, u7 = Avx512F.PermuteVar8x64x2(t5, evenPairs, t7), Avx512F.PermuteVar8x64x2(t5, oddPairs, t7)
        struct (Avx512F.PermuteVar8x64x2(u0, lowHalves, u4), Avx512F.PermuteVar8x64x2(u1, lowHalves, u5),
                Avx512F.PermuteVar8x64x2(u2, lowHalves, u6), Avx512F.PermuteVar8x64x2(u3, lowHalves, u7),
                Avx512F.PermuteVar8x64x2(u0, highHalves, u4), Avx512F.PermuteVar8x64x2(u1, highHalves, u5),
                Avx512F.PermuteVar8x64x2(u2, highHalves, u6), Avx512F.PermuteVar8x64x2(u3, highHalves, u7))

    /// Forward radix-2 butterfly (u + v, (u - v)·w) with w = -i: multiplying by -i maps (a, b) to (b, -a), exactly
    /// what the table product with cos = 0, sin = 1 gives.
    let inline difMinusI (ur: Vector512<float>) (ui: Vector512<float>) (vr: Vector512<float>) (vi: Vector512<float>) =
        struct (ur + vr, ui + vi, ui - vi, vr - ur)

    /// Forward radix-2 butterfly (u + v, (u - v)·w) with w = 1.
    let inline difOne (ur: Vector512<float>) (ui: Vector512<float>) (vr: Vector512<float>) (vi: Vector512<float>) =
        struct (ur + vr, ui + vi, ur - vr, ui - vi)

    /// Forward radix-2 butterfly (u + v, (u - v)·w) with a broadcast twiddle w.
    let inline difTwiddle (ur: Vector512<float>) (ui: Vector512<float>) (vr: Vector512<float>) (vi: Vector512<float>) (wr: Vector512<float>) (wi: Vector512<float>) =
        let dr, di = ur - vr, ui - vi
        struct (ur + vr, ui + vi, mulRe dr di wr wi, mulIm dr di wr wi)

    /// Backward radix-2 butterfly (u + v·w, u - v·w) with w = i (the conjugate of -i): (a, b)·i = (-b, a).
    let inline ditPlusI (ur: Vector512<float>) (ui: Vector512<float>) (vr: Vector512<float>) (vi: Vector512<float>) =
        struct (ur - vi, ui + vr, ur + vi, ui - vr)

    /// Backward radix-2 butterfly (u + v, u - v).
    let inline ditOne (ur: Vector512<float>) (ui: Vector512<float>) (vr: Vector512<float>) (vi: Vector512<float>) =
        struct (ur + vr, ui + vi, ur - vr, ui - vi)

    /// Backward radix-2 butterfly (u + v·w, u - v·w) with a broadcast (already conjugated) twiddle w.
    let inline ditTwiddle (ur: Vector512<float>) (ui: Vector512<float>) (vr: Vector512<float>) (vi: Vector512<float>) (wr: Vector512<float>) (wi: Vector512<float>) =
        let tr, ti = mulRe vr vi wr wi, mulIm vr vi wr wi
        struct (ur + tr, ui + ti, ur - tr, ui - ti)

    /// One in-register butterfly of span s < 8: lane l meets lane l xor s (permutation p); t = partner + sign·x.
    let inline across (p: Vector512<int64>) (sign: Vector512<float>) (x: Vector512<float>) =
        Avx512F.FusedMultiplyAdd(sign, x, Avx512F.PermuteVar8x64(x, p))

/// Pinned arrays whose working part starts on a 64-byte boundary: a 512-bit load or store there never straddles
/// two cache lines (a round trip through the FFT is about 13 % faster on aligned buffers).
module internal Aligned =

    /// A pinned array of at least `length` elements and the offset of its first 64-byte-aligned element.
    let allocate<'T when 'T: unmanaged> (length: int) : struct ('T[] * int) =
        let perLine = 64 / sizeof<'T>
        let array = GC.AllocateArray<'T>(length + perLine, pinned = true)
        use start = fixed array
        let misalignment = int (NativePtr.toNativeInt start % 64n)
        struct (array, (if misalignment = 0 then 0 else (64 - misalignment) / sizeof<'T>))

/// Storage for the evaluation keys (tens of MiB streamed once per bootstrap or keyswitch): with 4 KiB pages every
/// 64 KiB GGSW spans 16 pages and the walk misses the TLB, so on Linux the array is advised for transparent huge
/// pages (madvise MADV_HUGEPAGE, honoured when THP is in "madvise" or "always" mode). Best effort: elsewhere, or
/// if the call fails, the array is an ordinary pinned one. Measured on the 4-bit preset: KS-PBS about 0.4 ms faster.
module internal KeyMemory =

    [<DllImport("libc", EntryPoint = "madvise")>]
    extern int private madvise(nativeint address, unativeint length, int advice)

    let private hugePageAdvice = 14 // MADV_HUGEPAGE
    let private hugePage = 2L <<< 20

    /// A pinned array of `length` elements, not cleared: the caller writes every element.
    let allocateUninitialized<'T when 'T: unmanaged> (length: int) : 'T[] =
        let array = GC.AllocateUninitializedArray<'T>(length, pinned = true)
        let bytes = int64 length * int64 sizeof<'T>
        if OperatingSystem.IsLinux() && bytes >= 2L * hugePage then
            use start = fixed array
            let first = NativePtr.toNativeInt start |> int64
            // Only whole huge pages inside the array: advice never reaches a neighbour's memory.
            let alignedStart = (first + hugePage - 1L) / hugePage * hugePage
            let alignedEnd = (first + bytes) / hugePage * hugePage
            try
                madvise (nativeint alignedStart, unativeint (alignedEnd - alignedStart), hugePageAdvice) |> ignore
            with
            | :? DllNotFoundException
            | :? EntryPointNotFoundException -> ()
        array

/// Cache lines of the bootstrapping key to prefetch a few at a time from inside the FFT passes of a CMux, so that
/// the next GGSW streams in from memory while this one's transforms compute. Issued in one burst the prefetches
/// fill the core's miss buffers and stall; spread over the passes they overlap with the arithmetic.
[<Struct; NoEquality; NoComparison>]
type internal KeyPrefetch =
    /// The next line to request.
    val mutable Next: nativeint
    /// The end of the range.
    val Last: nativeint

    /// Prefetches [start, start + bytes), four lines per Step.
    new(start: nativeptr<float>, bytes: int) =
        let first = NativePtr.toNativeInt start
        { Next = first; Last = first + nativeint bytes }

    /// A cursor with nothing to prefetch.
    static member None = KeyPrefetch(NativePtr.nullPtr, 0)

    /// Issues the next four line prefetches (into L2), if any are left: a CMux at k = 1, ℓ = 1, N = 2048 runs 320
    /// steps (4 transforms of 80 loop iterations) and its successor's GGSW is 1,024 lines, so all are requested
    /// within the first 80 % of the CMux. Inlined by F#: a call inside a kernel loop makes the JIT spill every
    /// vector register around it.
    member inline c.Step() =
        if c.Next < c.Last then
            let line = NativePtr.ofNativeInt<byte> c.Next
            Sse.Prefetch1(NativePtr.toVoidPtr line)
            Sse.Prefetch1(NativePtr.toVoidPtr (NativePtr.add line 64))
            Sse.Prefetch1(NativePtr.toVoidPtr (NativePtr.add line 128))
            Sse.Prefetch1(NativePtr.toVoidPtr (NativePtr.add line 192))
            c.Next <- c.Next + 256n

/// The negacyclic FFT of polynomials of size N over f64 (TFHE-rs's FFT64 scheme): fold the N real coefficients to
/// N/2 complex ones z_j = (p_j + i·p_{j+N/2})·e^{iπj/N}, then a complex FFT of size N/2. In the Fourier domain a
/// polynomial is N doubles, the N/2 real parts then the N/2 imaginary parts, in bit-reversed order (when N/2 is a
/// power of 4 from 64 up, with every aligned 64-point block transposed 8×8): the forward transform is a radix-2
/// decimation in frequency without reordering and the backward one a decimation in time that reads that order.
/// Only pointwise products happen in between, so the order is invisible to callers; every path uses the same one,
/// and keys converted with one plan must be used with a plan of the same size.
/// Paths: scalar and AVX2 run one radix-2 stage per pass; AVX-512 runs two stages per pass (radix 2²), the last six
/// stages on blocks of 64 points held in registers (spans 32, 16, 8 between vectors, an 8×8 transpose, then spans 4,
/// 2, 1 between the transposed vectors), and fuses the twist (and, for the decomposed input of an external product,
/// the digits) into its first pass and the untwist and torus conversion into its last: three passes over the data per
/// 1024-point transform. Twiddles are accurate to about half an ulp and every complex
/// product uses fused multiply-adds, since the FFT's rounding error is part of the bootstrap noise (the PBS noise
/// tests check the total against TFHE-rs's model, whose FFT term is fitted to tfhe-fft).
[<Sealed; AllowNullLiteral>]
type FftPlan(polynomialSize: int) =
    do
        if polynomialSize < 16 || polynomialSize > (1 <<< 20) || not (Numerics.BitOperations.IsPow2 polynomialSize) then
            raise (
                FheNet.ParameterOutOfRangeException(
                    "polynomialSize",
                    polynomialSize,
                    "a power of two between 16 and 2^20"
                )
            )

    let half = polynomialSize / 2
    // Stage twiddles: span s (pairs i, i+s in blocks of 2s) uses e^{-2πi j/(2s)}, j < s, stored at index s + j.
    let twiddleRe = Array.init half (fun i -> if i = 0 then 0.0 else let s = 1 <<< Numerics.BitOperations.Log2(uint32 i) in Twiddle.cosPi(float (i - s) / float s))
    let twiddleIm = Array.init half (fun i -> if i = 0 then 0.0 else let s = 1 <<< Numerics.BitOperations.Log2(uint32 i) in -Twiddle.sinPi(float (i - s) / float s))
    let twistRe = Array.init half (fun j -> Twiddle.cosPi(float j / float polynomialSize))
    let twistIm = Array.init half (fun j -> Twiddle.sinPi(float j / float polynomialSize))
    // The backward transform's untwist conj(w_j) with the 1/(N/2) normalisation folded in.
    let untwistRe = Array.init half (fun j -> twistRe[j] / float half)
    let untwistIm = Array.init half (fun j -> -twistIm[j] / float half)

    // Lanes of an in-register butterfly of span s: the partner lane (l xor s), the sign (+1 for the lower lane of
    // a pair, -1 for the upper) and the twiddle (1 on lower lanes, e^{-2πi j/(2s)} on upper lane j mod s).
    let laneTwiddle width s conj =
        let re = Array.init width (fun l -> if l &&& s = 0 then 1.0 else Twiddle.cosPi(float (l &&& (s - 1)) / float s))
        let im =
            Array.init width (fun l ->
                if l &&& s = 0 then 0.0
                else (if conj then 1.0 else -1.0) * Twiddle.sinPi(float (l &&& (s - 1)) / float s))
        re, im
    let laneSign width s = Array.init width (fun l -> if l &&& s = 0 then 1.0 else -1.0)
    let v512 (a: float[]) = Vector512.Create<float>(ReadOnlySpan a)
    let v256 (a: float[]) = Vector256.Create<float>(ReadOnlySpan a)
    let perm512 s = Vector512.Create<int64>(ReadOnlySpan(Array.init 8 (fun l -> int64 (l ^^^ s))))
    let fwd512 =
        [| for s in [ 4; 2; 1 ] ->
               let re, im = laneTwiddle 8 s false
               struct (perm512 s, v512 (laneSign 8 s), v512 re, v512 im) |]
    let bwd512 =
        [| for s in [ 1; 2; 4 ] ->
               let re, im = laneTwiddle 8 s true
               struct (perm512 s, v512 (laneSign 8 s), v512 re, v512 im) |]
    let fwd256 =
        [| for s in [ 2; 1 ] ->
               let re, im = laneTwiddle 4 s false
               struct (v256 (laneSign 4 s), v256 re, v256 im) |]
    let bwd256 =
        [| for s in [ 1; 2 ] ->
               let re, im = laneTwiddle 4 s true
               struct (v256 (laneSign 4 s), v256 re, v256 im) |]

    // The 64-point blocks of the AVX-512 path end (begin) with an 8×8 transpose, so that the spans 4, 2, 1 run
    // between vectors with broadcast twiddles instead of permutes inside them.
    let i64x8 (f: int -> int) = Vector512.Create<int64>(ReadOnlySpan(Array.init 8 (fun l -> int64 (f l))))
    let evenPairs = i64x8 (fun l -> (if l &&& 2 = 0 then 0 else 8) + (l / 4) * 4 + (l &&& 1))
    let oddPairs = i64x8 (fun l -> (if l &&& 2 = 0 then 0 else 8) + (l / 4) * 4 + 2 + (l &&& 1))
    let lowHalves = i64x8 (fun l -> if l < 4 then l else 4 + l)
    let highHalves = i64x8 (fun l -> if l < 4 then 4 + l else 8 + l)
    // e^{-2πi j/8} for j = 1, 3 (j = 0 is 1, j = 2 is -i), and their conjugates for the backward transform.
    let eighthRe = [| for j in [ 1; 3 ] -> Vector512.Create(Twiddle.cosPi(float j / 4.0)) |]
    let eighthIm = [| for j in [ 1; 3 ] -> Vector512.Create(-Twiddle.sinPi(float j / 4.0)) |]
    let eighthConjIm = [| for j in [ 1; 3 ] -> Vector512.Create(Twiddle.sinPi(float j / 4.0)) |]

    static let two64 = 18446744073709551616.0
    static let ld (r: byref<float>) (i: int) = Vector512.LoadUnsafe(&r, unativeint i)
    static let st (v: Vector512<float>) (r: byref<float>) (i: int) = Vector512.StoreUnsafe(v, &r, unativeint i)
    static let magic = 6755399441055744.0 // 2^52 + 2^51: adding it puts a small integer in the low mantissa bits

    // ---------------------------------------------------------------- scalar kernels

    let difScalar (d: float[]) (off: int) (smallestSpan: int) =
        let im = off + half
        let mutable s = half / 2
        while s >= smallestSpan do
            let mutable b = 0
            while b < half do
                for j in 0 .. s - 1 do
                    let i0 = b + j
                    let i1 = i0 + s
                    let ur, ui, vr, vi = d[off + i0], d[im + i0], d[off + i1], d[im + i1]
                    d[off + i0] <- ur + vr
                    d[im + i0] <- ui + vi
                    let dr, di = ur - vr, ui - vi
                    let wr, wi = twiddleRe[s + j], twiddleIm[s + j]
                    d[off + i1] <- Math.FusedMultiplyAdd(dr, wr, -(di * wi))
                    d[im + i1] <- Math.FusedMultiplyAdd(dr, wi, di * wr)
                b <- b + 2 * s
            s <- s / 2

    let ditScalar (d: float[]) (off: int) (firstSpan: int) =
        let im = off + half
        let mutable s = firstSpan
        while s < half do
            let mutable b = 0
            while b < half do
                for j in 0 .. s - 1 do
                    let i0 = b + j
                    let i1 = i0 + s
                    let wr, wi = twiddleRe[s + j], -twiddleIm[s + j]
                    let xr, xi = d[off + i1], d[im + i1]
                    let vr = Math.FusedMultiplyAdd(xr, wr, -(xi * wi))
                    let vi = Math.FusedMultiplyAdd(xr, wi, xi * wr)
                    let ur, ui = d[off + i0], d[im + i0]
                    d[off + i0] <- ur + vr
                    d[im + i0] <- ui + vi
                    d[off + i1] <- ur - vr
                    d[im + i1] <- ui - vi
                b <- b + 2 * s
            s <- s * 2

    // ---------------------------------------------------------------- AVX-512 kernels

    // ---------------------------------------------------------------- AVX2 kernels

    let difV256 (d: float[]) (off: int) =
        let im = off + half
        let mutable s = half / 2
        while s >= 4 do
            let mutable b = 0
            while b < half do
                let mutable j = 0
                while j < s do
                    let i0 = b + j
                    let i1 = i0 + s
                    let ur = Vector256.LoadUnsafe(&d[off + i0])
                    let ui = Vector256.LoadUnsafe(&d[im + i0])
                    let vr = Vector256.LoadUnsafe(&d[off + i1])
                    let vi = Vector256.LoadUnsafe(&d[im + i1])
                    let wr = Vector256.LoadUnsafe(&twiddleRe[s + j])
                    let wi = Vector256.LoadUnsafe(&twiddleIm[s + j])
                    Vector256.StoreUnsafe(ur + vr, &d[off + i0])
                    Vector256.StoreUnsafe(ui + vi, &d[im + i0])
                    let dr = ur - vr
                    let di = ui - vi
                    Vector256.StoreUnsafe(Fma.MultiplySubtract(dr, wr, di * wi), &d[off + i1])
                    Vector256.StoreUnsafe(Fma.MultiplyAdd(dr, wi, di * wr), &d[im + i1])
                    j <- j + 4
                b <- b + 2 * s
            s <- s / 2
        let struct (s2, w2r, w2i) = fwd256[0]
        let struct (s1, _, _) = fwd256[1]
        let mutable i = 0
        while i < half do
            let mutable xr = Vector256.LoadUnsafe(&d[off + i])
            let mutable xi = Vector256.LoadUnsafe(&d[im + i])
            let tr = Fma.MultiplyAdd(s2, xr, Avx2.Permute4x64(xr, 0x4Euy))
            let ti = Fma.MultiplyAdd(s2, xi, Avx2.Permute4x64(xi, 0x4Euy))
            xr <- Fma.MultiplySubtract(tr, w2r, ti * w2i)
            xi <- Fma.MultiplyAdd(tr, w2i, ti * w2r)
            Vector256.StoreUnsafe(Fma.MultiplyAdd(s1, xr, Avx2.Permute4x64(xr, 0xB1uy)), &d[off + i])
            Vector256.StoreUnsafe(Fma.MultiplyAdd(s1, xi, Avx2.Permute4x64(xi, 0xB1uy)), &d[im + i])
            i <- i + 4

    let ditV256 (d: float[]) (off: int) =
        let im = off + half
        let struct (s1, _, _) = bwd256[0]
        let struct (s2, w2r, w2i) = bwd256[1]
        let mutable i = 0
        while i < half do
            let mutable xr = Vector256.LoadUnsafe(&d[off + i])
            let mutable xi = Vector256.LoadUnsafe(&d[im + i])
            xr <- Fma.MultiplyAdd(s1, xr, Avx2.Permute4x64(xr, 0xB1uy))
            xi <- Fma.MultiplyAdd(s1, xi, Avx2.Permute4x64(xi, 0xB1uy))
            let tr = Fma.MultiplySubtract(xr, w2r, xi * w2i)
            let ti = Fma.MultiplyAdd(xr, w2i, xi * w2r)
            Vector256.StoreUnsafe(Fma.MultiplyAdd(s2, tr, Avx2.Permute4x64(tr, 0x4Euy)), &d[off + i])
            Vector256.StoreUnsafe(Fma.MultiplyAdd(s2, ti, Avx2.Permute4x64(ti, 0x4Euy)), &d[im + i])
            i <- i + 4
        let mutable s = 4
        while s < half do
            let mutable b = 0
            while b < half do
                let mutable j = 0
                while j < s do
                    let i0 = b + j
                    let i1 = i0 + s
                    let wr = Vector256.LoadUnsafe(&twiddleRe[s + j])
                    let wi = Vector256.LoadUnsafe(&twiddleIm[s + j])
                    let xr = Vector256.LoadUnsafe(&d[off + i1])
                    let xi = Vector256.LoadUnsafe(&d[im + i1])
                    let vr = Fma.MultiplyAdd(xr, wr, xi * wi)
                    let vi = Fma.MultiplySubtract(xi, wr, xr * wi)
                    let ur = Vector256.LoadUnsafe(&d[off + i0])
                    let ui = Vector256.LoadUnsafe(&d[im + i0])
                    Vector256.StoreUnsafe(ur + vr, &d[off + i0])
                    Vector256.StoreUnsafe(ui + vi, &d[im + i0])
                    Vector256.StoreUnsafe(ur - vr, &d[off + i1])
                    Vector256.StoreUnsafe(ui - vi, &d[im + i1])
                    j <- j + 4
                b <- b + 2 * s
            s <- s * 2

    let checkPath path =
        if not (SimdPath.isSupported path) then
            raise (PlatformNotSupportedException $"The %A{path} FFT path is not supported on this machine.")

    /// A torus coefficient as a signed real in [-1/2, 1/2).
    static let torusToReal (x: uint64) = float (int64 x) * (1.0 / two64)

    // Radix-2 stages fused in pairs (radix 2²): one pass over the data does the stages of spans s and s/2 on the
    // quadruples (j, j + s/2, j + s, j + 3s/2); the last pass does span 8 (when there is one) and the three
    // in-register spans 4, 2, 1 on blocks of 16. The backward transform runs the same passes in reverse.
    // Steps: s ≥ 64 or s = 16: the fused spans s and s/2; s = 32: blocks of 64 points (spans 32 … 1) in registers;
    // s = 8: blocks of 16 (spans 8 … 1); s = 4: the in-register spans only.
    let schedule512 =
        let rec go s =
            if s >= 64 || s = 16 then s :: go (s / 4)
            else [ s ]
        go (half / 2) |> Array.ofList
    // The first DIF step (last DIT step) fuses with the twist when it is a pair of spans.
    let firstStepIsPair = schedule512[0] >= 64 || schedule512[0] = 16
    // With a 64-point block step the AVX-512 order has every aligned 64-point block transposed 8×8 (as 8 vectors of
    // 8); the other paths apply the same permutation after their last forward stage and before their first
    // backward one, so that every path shares one Fourier order (keys converted on one path work on all).
    let blocksTransposed = Array.contains 32 schedule512
    let transposeBlocks (d: float[]) (off: int) =
        for part in [ off; off + half ] do
            for b in 0..64 .. half - 1 do
                for v in 0..7 do
                    for l in v + 1 .. 7 do
                        let i, j = part + b + 8 * v + l, part + b + 8 * l + v
                        let t = d[i]
                        d[i] <- d[j]
                        d[j] <- t

    member private p.DifV512(d: float[], off: int, firstStep: int, prefetch: byref<KeyPrefetch>) =
        let struct (p4, s4, w4r, w4i) = fwd512[0]
        let struct (p2, s2, w2r, w2i) = fwd512[1]
        let struct (p1, s1, _, _) = fwd512[2]
        let inline inRegister (xr: Vector512<float>) (xi: Vector512<float>) =
            let tr, ti = Butterfly512.across p4 s4 xr, Butterfly512.across p4 s4 xi
            let ar, ai = Butterfly512.mulRe tr ti w4r w4i, Butterfly512.mulIm tr ti w4r w4i
            let tr, ti = Butterfly512.across p2 s2 ar, Butterfly512.across p2 s2 ai
            let ar, ai = Butterfly512.mulRe tr ti w2r w2i, Butterfly512.mulIm tr ti w2r w2i
            struct (Butterfly512.across p1 s1 ar, Butterfly512.across p1 s1 ai)
        let base0 = &MemoryMarshal.GetArrayDataReference d
        let tre = &MemoryMarshal.GetArrayDataReference twiddleRe
        let tim = &MemoryMarshal.GetArrayDataReference twiddleIm
        let re = off
        let im = off + half
        for step in firstStep .. schedule512.Length - 1 do
            let s = schedule512[step]
            if s >= 64 || s = 16 then
                let q = s / 2
                let mutable b = 0
                while b < half do
                    let mutable j = 0
                    while j < q do
                        let i0 = b + j
                        let i1, i2, i3 = i0 + q, i0 + s, i0 + s + q
                        let struct (z0r, z0i, z1r, z1i, z2r, z2i, z3r, z3i) =
                            Butterfly512.difQuad
                                (ld &base0 (re + i0)) (ld &base0 (im + i0)) (ld &base0 (re + i1)) (ld &base0 (im + i1))
                                (ld &base0 (re + i2)) (ld &base0 (im + i2)) (ld &base0 (re + i3)) (ld &base0 (im + i3))
                                (ld &tre (s + j)) (ld &tim (s + j)) (ld &tre (q + j)) (ld &tim (q + j))
                        st z0r &base0 (re + i0)
                        st z0i &base0 (im + i0)
                        st z1r &base0 (re + i1)
                        st z1i &base0 (im + i1)
                        st z2r &base0 (re + i2)
                        st z2i &base0 (im + i2)
                        st z3r &base0 (re + i3)
                        st z3i &base0 (im + i3)
                        prefetch.Step()
                        j <- j + 8
                    b <- b + 2 * s
            elif s = 32 then
                // Blocks of 64 points, 8 vectors: spans 32, 16, 8 between vectors, an 8×8 transpose, then 4, 2, 1
                // between the transposed vectors (the block is stored transposed).
                let inline bf (ur: Vector512<float>) (ui: Vector512<float>) (vr: Vector512<float>) (vi: Vector512<float>) (w: int) =
                    let wr, wi = Vector512.LoadUnsafe(&twiddleRe[w]), Vector512.LoadUnsafe(&twiddleIm[w])
                    let dr, di = ur - vr, ui - vi
                    struct (ur + vr, ui + vi, Butterfly512.mulRe dr di wr wi, Butterfly512.mulIm dr di wr wi)
                let mutable b = 0
                while b < half do
                    let struct (a0r, a0i, a4r, a4i) = bf (Vector512.LoadUnsafe(&d[re + b])) (Vector512.LoadUnsafe(&d[im + b])) (Vector512.LoadUnsafe(&d[re + b + 32])) (Vector512.LoadUnsafe(&d[im + b + 32])) 32
                    let struct (a1r, a1i, a5r, a5i) = bf (Vector512.LoadUnsafe(&d[re + b + 8])) (Vector512.LoadUnsafe(&d[im + b + 8])) (Vector512.LoadUnsafe(&d[re + b + 40])) (Vector512.LoadUnsafe(&d[im + b + 40])) 40
                    let struct (a2r, a2i, a6r, a6i) = bf (Vector512.LoadUnsafe(&d[re + b + 16])) (Vector512.LoadUnsafe(&d[im + b + 16])) (Vector512.LoadUnsafe(&d[re + b + 48])) (Vector512.LoadUnsafe(&d[im + b + 48])) 48
                    let struct (a3r, a3i, a7r, a7i) = bf (Vector512.LoadUnsafe(&d[re + b + 24])) (Vector512.LoadUnsafe(&d[im + b + 24])) (Vector512.LoadUnsafe(&d[re + b + 56])) (Vector512.LoadUnsafe(&d[im + b + 56])) 56
                    let struct (c0r, c0i, c2r, c2i) = bf a0r a0i a2r a2i 16
                    let struct (c1r, c1i, c3r, c3i) = bf a1r a1i a3r a3i 24
                    let struct (c4r, c4i, c6r, c6i) = bf a4r a4i a6r a6i 16
                    let struct (c5r, c5i, c7r, c7i) = bf a5r a5i a7r a7i 24
                    let struct (e0r, e0i, e1r, e1i) = bf c0r c0i c1r c1i 8
                    let struct (e2r, e2i, e3r, e3i) = bf c2r c2i c3r c3i 8
                    let struct (e4r, e4i, e5r, e5i) = bf c4r c4i c5r c5i 8
                    let struct (e6r, e6i, e7r, e7i) = bf c6r c6i c7r c7i 8
                    // Transposed, vector l holds lane l of every e: the spans 4, 2, 1 pair whole vectors.
                    let struct (t0r, t1r, t2r, t3r, t4r, t5r, t6r, t7r) =
                        Butterfly512.transpose8 e0r e1r e2r e3r e4r e5r e6r e7r evenPairs oddPairs lowHalves highHalves
                    let struct (t0i, t1i, t2i, t3i, t4i, t5i, t6i, t7i) =
                        Butterfly512.transpose8 e0i e1i e2i e3i e4i e5i e6i e7i evenPairs oddPairs lowHalves highHalves
                    let struct (t0r, t0i, t4r, t4i) = Butterfly512.difOne t0r t0i t4r t4i
                    let struct (t1r, t1i, t5r, t5i) = Butterfly512.difTwiddle t1r t1i t5r t5i eighthRe[0] eighthIm[0]
                    let struct (t2r, t2i, t6r, t6i) = Butterfly512.difMinusI t2r t2i t6r t6i
                    let struct (t3r, t3i, t7r, t7i) = Butterfly512.difTwiddle t3r t3i t7r t7i eighthRe[1] eighthIm[1]
                    let struct (t0r, t0i, t2r, t2i) = Butterfly512.difOne t0r t0i t2r t2i
                    let struct (t1r, t1i, t3r, t3i) = Butterfly512.difMinusI t1r t1i t3r t3i
                    let struct (t4r, t4i, t6r, t6i) = Butterfly512.difOne t4r t4i t6r t6i
                    let struct (t5r, t5i, t7r, t7i) = Butterfly512.difMinusI t5r t5i t7r t7i
                    let inline last (ur: Vector512<float>) ui vr vi (at: int) =
                        let struct (xr, xi, yr, yi) = Butterfly512.difOne ur ui vr vi
                        Vector512.StoreUnsafe(xr, &d[re + b + at])
                        Vector512.StoreUnsafe(xi, &d[im + b + at])
                        Vector512.StoreUnsafe(yr, &d[re + b + at + 8])
                        Vector512.StoreUnsafe(yi, &d[im + b + at + 8])
                    last t0r t0i t1r t1i 0
                    last t2r t2i t3r t3i 16
                    last t4r t4i t5r t5i 32
                    last t6r t6i t7r t7i 48
                    prefetch.Step()
                    b <- b + 64
            elif s = 8 then
                let w8r = ld &tre 8
                let w8i = ld &tim 8
                let mutable b = 0
                while b < half do
                    let ar = ld &base0 (re + b)
                    let ai = ld &base0 (im + b)
                    let br = ld &base0 (re + b + 8)
                    let bi = ld &base0 (im + b + 8)
                    let dr, di = ar - br, ai - bi
                    let struct (xr, xi) = inRegister (ar + br) (ai + bi)
                    let struct (yr, yi) = inRegister (Butterfly512.mulRe dr di w8r w8i) (Butterfly512.mulIm dr di w8r w8i)
                    st xr &base0 (re + b)
                    st xi &base0 (im + b)
                    st yr &base0 (re + b + 8)
                    st yi &base0 (im + b + 8)
                    prefetch.Step()
                    b <- b + 16
            else
                let mutable b = 0
                while b < half do
                    let struct (xr, xi) = inRegister (ld &base0 (re + b)) (ld &base0 (im + b))
                    st xr &base0 (re + b)
                    st xi &base0 (im + b)
                    prefetch.Step()
                    b <- b + 8

    member private p.DitV512(d: float[], off: int, lastStep: int, prefetch: byref<KeyPrefetch>) =
        let struct (p1, s1, _, _) = bwd512[0]
        let struct (p2, s2, w2r, w2i) = bwd512[1]
        let struct (p4, s4, w4r, w4i) = bwd512[2]
        let inline inRegister (xr: Vector512<float>) (xi: Vector512<float>) =
            let ar, ai = Butterfly512.across p1 s1 xr, Butterfly512.across p1 s1 xi
            let tr, ti = Butterfly512.mulRe ar ai w2r w2i, Butterfly512.mulIm ar ai w2r w2i
            let ar, ai = Butterfly512.across p2 s2 tr, Butterfly512.across p2 s2 ti
            let tr, ti = Butterfly512.mulRe ar ai w4r w4i, Butterfly512.mulIm ar ai w4r w4i
            struct (Butterfly512.across p4 s4 tr, Butterfly512.across p4 s4 ti)
        let base0 = &MemoryMarshal.GetArrayDataReference d
        let tre = &MemoryMarshal.GetArrayDataReference twiddleRe
        let tim = &MemoryMarshal.GetArrayDataReference twiddleIm
        let re = off
        let im = off + half
        for k in schedule512.Length - 1 .. -1 .. lastStep do
            let s = schedule512[k]
            if s >= 64 || s = 16 then
                let q = s / 2
                let mutable b = 0
                while b < half do
                    let mutable j = 0
                    while j < q do
                        let i0 = b + j
                        let i1, i2, i3 = i0 + q, i0 + s, i0 + s + q
                        let struct (x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i) =
                            Butterfly512.ditQuad
                                (ld &base0 (re + i0)) (ld &base0 (im + i0)) (ld &base0 (re + i1)) (ld &base0 (im + i1))
                                (ld &base0 (re + i2)) (ld &base0 (im + i2)) (ld &base0 (re + i3)) (ld &base0 (im + i3))
                                (ld &tre (s + j)) (ld &tim (s + j)) (ld &tre (q + j)) (ld &tim (q + j))
                        st x0r &base0 (re + i0)
                        st x0i &base0 (im + i0)
                        st x1r &base0 (re + i1)
                        st x1i &base0 (im + i1)
                        st x2r &base0 (re + i2)
                        st x2i &base0 (im + i2)
                        st x3r &base0 (re + i3)
                        st x3i &base0 (im + i3)
                        prefetch.Step()
                        j <- j + 8
                    b <- b + 2 * s
            elif s = 32 then
                let inline bf (ur: Vector512<float>) (ui: Vector512<float>) (xr: Vector512<float>) (xi: Vector512<float>) (w: int) =
                    let wr, wi = Vector512.LoadUnsafe(&twiddleRe[w]), Vector512.LoadUnsafe(&twiddleIm[w])
                    let vr, vi = Butterfly512.mulConjRe xr xi wr wi, Butterfly512.mulConjIm xr xi wr wi
                    struct (ur + vr, ui + vi, ur - vr, ui - vi)
                let mutable b = 0
                while b < half do
                    let inline load (at: int) = struct (Vector512.LoadUnsafe(&d[re + b + at]), Vector512.LoadUnsafe(&d[im + b + at]))
                    let struct (t0r, t0i) = load 0
                    let struct (t1r, t1i) = load 8
                    let struct (t2r, t2i) = load 16
                    let struct (t3r, t3i) = load 24
                    let struct (t4r, t4i) = load 32
                    let struct (t5r, t5i) = load 40
                    let struct (t6r, t6i) = load 48
                    let struct (t7r, t7i) = load 56
                    // The block is stored transposed: the spans 1, 2, 4 pair whole vectors, then the transpose back.
                    let struct (t0r, t0i, t1r, t1i) = Butterfly512.ditOne t0r t0i t1r t1i
                    let struct (t2r, t2i, t3r, t3i) = Butterfly512.ditOne t2r t2i t3r t3i
                    let struct (t4r, t4i, t5r, t5i) = Butterfly512.ditOne t4r t4i t5r t5i
                    let struct (t6r, t6i, t7r, t7i) = Butterfly512.ditOne t6r t6i t7r t7i
                    let struct (t0r, t0i, t2r, t2i) = Butterfly512.ditOne t0r t0i t2r t2i
                    let struct (t1r, t1i, t3r, t3i) = Butterfly512.ditPlusI t1r t1i t3r t3i
                    let struct (t4r, t4i, t6r, t6i) = Butterfly512.ditOne t4r t4i t6r t6i
                    let struct (t5r, t5i, t7r, t7i) = Butterfly512.ditPlusI t5r t5i t7r t7i
                    let struct (t0r, t0i, t4r, t4i) = Butterfly512.ditOne t0r t0i t4r t4i
                    let struct (t1r, t1i, t5r, t5i) = Butterfly512.ditTwiddle t1r t1i t5r t5i eighthRe[0] eighthConjIm[0]
                    let struct (t2r, t2i, t6r, t6i) = Butterfly512.ditPlusI t2r t2i t6r t6i
                    let struct (t3r, t3i, t7r, t7i) = Butterfly512.ditTwiddle t3r t3i t7r t7i eighthRe[1] eighthConjIm[1]
                    let struct (e0r, e1r, e2r, e3r, e4r, e5r, e6r, e7r) =
                        Butterfly512.transpose8 t0r t1r t2r t3r t4r t5r t6r t7r evenPairs oddPairs lowHalves highHalves
                    let struct (e0i, e1i, e2i, e3i, e4i, e5i, e6i, e7i) =
                        Butterfly512.transpose8 t0i t1i t2i t3i t4i t5i t6i t7i evenPairs oddPairs lowHalves highHalves
                    let struct (c0r, c0i, c1r, c1i) = bf e0r e0i e1r e1i 8
                    let struct (c2r, c2i, c3r, c3i) = bf e2r e2i e3r e3i 8
                    let struct (c4r, c4i, c5r, c5i) = bf e4r e4i e5r e5i 8
                    let struct (c6r, c6i, c7r, c7i) = bf e6r e6i e7r e7i 8
                    let struct (a0r, a0i, a2r, a2i) = bf c0r c0i c2r c2i 16
                    let struct (a1r, a1i, a3r, a3i) = bf c1r c1i c3r c3i 24
                    let struct (a4r, a4i, a6r, a6i) = bf c4r c4i c6r c6i 16
                    let struct (a5r, a5i, a7r, a7i) = bf c5r c5i c7r c7i 24
                    let inline finish (ur: Vector512<float>) ui vr vi (at: int) (w: int) =
                        let struct (xr, xi, yr, yi) = bf ur ui vr vi w
                        Vector512.StoreUnsafe(xr, &d[re + b + at])
                        Vector512.StoreUnsafe(xi, &d[im + b + at])
                        Vector512.StoreUnsafe(yr, &d[re + b + at + 32])
                        Vector512.StoreUnsafe(yi, &d[im + b + at + 32])
                    finish a0r a0i a4r a4i 0 32
                    finish a1r a1i a5r a5i 8 40
                    finish a2r a2i a6r a6i 16 48
                    finish a3r a3i a7r a7i 24 56
                    prefetch.Step()
                    b <- b + 64
            elif s = 8 then
                let w8r = ld &tre 8
                let w8i = ld &tim 8
                let mutable b = 0
                while b < half do
                    let struct (ar, ai) = inRegister (ld &base0 (re + b)) (ld &base0 (im + b))
                    let struct (br, bi) = inRegister (ld &base0 (re + b + 8)) (ld &base0 (im + b + 8))
                    let vr, vi = Butterfly512.mulConjRe br bi w8r w8i, Butterfly512.mulConjIm br bi w8r w8i
                    st (ar + vr) &base0 (re + b)
                    st (ai + vi) &base0 (im + b)
                    st (ar - vr) &base0 (re + b + 8)
                    st (ai - vi) &base0 (im + b + 8)
                    prefetch.Step()
                    b <- b + 16
            else
                let mutable b = 0
                while b < half do
                    let struct (xr, xi) = inRegister (ld &base0 (re + b)) (ld &base0 (im + b))
                    st xr &base0 (re + b)
                    st xi &base0 (im + b)
                    prefetch.Step()
                    b <- b + 8

    member private p.Dif(path: SimdPath, d: float[], off: int) =
        match path with
        | SimdPath.Vector512 ->
            let mutable none = KeyPrefetch.None
            p.DifV512(d, off, 0, &none)
        | SimdPath.Vector256 ->
            difV256 d off
            if blocksTransposed then transposeBlocks d off
        | SimdPath.Scalar ->
            difScalar d off 1
            if blocksTransposed then transposeBlocks d off

    member private p.Dit(path: SimdPath, d: float[], off: int) =
        match path with
        | SimdPath.Vector512 ->
            let mutable none = KeyPrefetch.None
            p.DitV512(d, off, 0, &none)
        | SimdPath.Vector256 ->
            if blocksTransposed then transposeBlocks d off
            ditV256 d off
        | SimdPath.Scalar ->
            if blocksTransposed then transposeBlocks d off
            ditScalar d off 1

    /// N.
    member _.PolynomialSize = polynomialSize

    /// Forward transform of a polynomial of small signed integers (decomposition digits, exact in f64):
    /// `fourier[offset .. offset + N)` receives the N doubles of its Fourier form.
    member p.ForwardInteger(path: SimdPath, coefficients: int64[], coefficientOffset: int, fourier: float[], offset: int) =
        checkPath path
        let im = offset + half
        let c = coefficientOffset
        match path with
        | SimdPath.Vector512 ->
            let mutable j = 0
            while j < half do
                let a = Avx512DQ.ConvertToVector512Double(Vector512.LoadUnsafe(&coefficients[c + j]))
                let b = Avx512DQ.ConvertToVector512Double(Vector512.LoadUnsafe(&coefficients[c + half + j]))
                let wr = Vector512.LoadUnsafe(&twistRe[j])
                let wi = Vector512.LoadUnsafe(&twistIm[j])
                Vector512.StoreUnsafe(Avx512F.FusedMultiplySubtract(a, wr, b * wi), &fourier[offset + j])
                Vector512.StoreUnsafe(Avx512F.FusedMultiplyAdd(a, wi, b * wr), &fourier[im + j])
                j <- j + 8
        | SimdPath.Vector256 ->
            let magicBits = Vector256.Create(BitConverter.DoubleToInt64Bits magic)
            let magicV = Vector256.Create magic
            let toDouble (v: Vector256<int64>) = (v + magicBits).AsDouble() - magicV
            let mutable j = 0
            while j < half do
                let a = toDouble (Vector256.LoadUnsafe(&coefficients[c + j]))
                let b = toDouble (Vector256.LoadUnsafe(&coefficients[c + half + j]))
                let wr = Vector256.LoadUnsafe(&twistRe[j])
                let wi = Vector256.LoadUnsafe(&twistIm[j])
                Vector256.StoreUnsafe(Fma.MultiplySubtract(a, wr, b * wi), &fourier[offset + j])
                Vector256.StoreUnsafe(Fma.MultiplyAdd(a, wi, b * wr), &fourier[im + j])
                j <- j + 4
        | SimdPath.Scalar ->
            for j in 0 .. half - 1 do
                let a, b = float coefficients[c + j], float coefficients[c + half + j]
                fourier[offset + j] <- Math.FusedMultiplyAdd(a, twistRe[j], -(b * twistIm[j]))
                fourier[im + j] <- Math.FusedMultiplyAdd(a, twistIm[j], b * twistRe[j])
        p.Dif(path, fourier, offset)

    /// One decomposition level on AVX-512: the digits of `input[inputOffset .. + N)`, the twist and the first two
    /// FFT stages in one pass over the data, then the remaining passes. With one level the balanced, rounded state
    /// of Decomposer.InitState is the digit itself (NextDigit returns it unchanged), so only that is computed.
    member private p.ForwardOneLevel(decomposer: Decomposer, input: uint64[], inputOffset: int, fourier: float[], firstOffset: int, prefetch: byref<KeyPrefetch>) =
        let fRef = &MemoryMarshal.GetArrayDataReference fourier
        let struct (halfUnit, shift, boundary, plusHalf) = decomposer.RoundingConstants512
        let twistRe, twistIm = twistRe, twistIm
        let inline digit (m: int) =
            let state = Decomposer.InitState512(Vector512.LoadUnsafe(&input[inputOffset + m]), halfUnit, shift, boundary, plusHalf)
            Avx512DQ.ConvertToVector512Double(state.AsInt64())
        let inline twisted (m: int) =
            let a = digit m
            let b = digit (half + m)
            let wr = Vector512.LoadUnsafe(&twistRe[m])
            let wi = Vector512.LoadUnsafe(&twistIm[m])
            struct (Avx512F.FusedMultiplySubtract(a, wr, b * wi), Avx512F.FusedMultiplyAdd(a, wi, b * wr))
        let s = schedule512[0]
        let q = s / 2
        let re, im = firstOffset, firstOffset + half
        let mutable j = 0
        while j < q do
            let struct (x0r, x0i) = twisted j
            let struct (x1r, x1i) = twisted (j + q)
            let struct (x2r, x2i) = twisted (j + s)
            let struct (x3r, x3i) = twisted (j + s + q)
            let struct (z0r, z0i, z1r, z1i, z2r, z2i, z3r, z3i) =
                Butterfly512.difQuad
                    x0r x0i x1r x1i x2r x2i x3r x3i
                    (Vector512.LoadUnsafe(&twiddleRe[s + j])) (Vector512.LoadUnsafe(&twiddleIm[s + j]))
                    (Vector512.LoadUnsafe(&twiddleRe[q + j])) (Vector512.LoadUnsafe(&twiddleIm[q + j]))
            st z0r &fRef (re + j)
            st z0i &fRef (im + j)
            st z1r &fRef (re + j + q)
            st z1i &fRef (im + j + q)
            st z2r &fRef (re + j + s)
            st z2i &fRef (im + j + s)
            st z3r &fRef (re + j + s + q)
            st z3i &fRef (im + j + s + q)
            prefetch.Step()
            j <- j + 8
        p.DifV512(fourier, firstOffset, 1, &prefetch)

    /// Decomposes the torus polynomial `input[inputOffset .. + N)` and transforms each of its ℓ digit polynomials:
    /// level i (ℓ first) goes to `fourier[firstOffset + i·levelStride ..]`. The same as DecomposePolynomial
    /// then ForwardInteger per level; on AVX-512 the digits go straight from the decomposer into the twist, never
    /// stored. `digits` (ℓ·N) is the scratch of the other paths.
    member p.ForwardDecomposed
        (path: SimdPath, decomposer: Decomposer, input: uint64[], inputOffset: int, fourier: float[], firstOffset: int, levelStride: int, digits: int64[])
        =
        let mutable none = KeyPrefetch.None
        p.ForwardDecomposed(path, decomposer, input, inputOffset, fourier, firstOffset, levelStride, digits, &none)

    /// ForwardDecomposed, stepping `prefetch` on the way (AVX-512 path).
    member internal p.ForwardDecomposed
        (path: SimdPath, decomposer: Decomposer, input: uint64[], inputOffset: int, fourier: float[], firstOffset: int, levelStride: int, digits: int64[], prefetch: byref<KeyPrefetch>)
        =
        checkPath path
        match path with
        | SimdPath.Vector512 when decomposer.Level = 1 && firstStepIsPair ->
            if inputOffset < 0 || inputOffset + polynomialSize > input.Length then
                raise (DimensionMismatchException("input", "offset + N within the array", inputOffset + polynomialSize, input.Length))
            p.ForwardOneLevel(decomposer, input, inputOffset, fourier, firstOffset, &prefetch)
        | SimdPath.Vector512 ->
            let level = decomposer.Level
            let fRef = &MemoryMarshal.GetArrayDataReference fourier
            let mutable j = 0
            while j < half do
                let mutable low = decomposer.InitState512(Vector512.LoadUnsafe(&input[inputOffset + j]))
                let mutable high = decomposer.InitState512(Vector512.LoadUnsafe(&input[inputOffset + half + j]))
                let wr = Vector512.LoadUnsafe(&twistRe[j])
                let wi = Vector512.LoadUnsafe(&twistIm[j])
                for i in 0 .. level - 1 do
                    let a = Avx512DQ.ConvertToVector512Double(decomposer.NextDigit512(&low))
                    let b = Avx512DQ.ConvertToVector512Double(decomposer.NextDigit512(&high))
                    let o = firstOffset + i * levelStride + j
                    Vector512.StoreUnsafe(Avx512F.FusedMultiplySubtract(a, wr, b * wi), &fRef, unativeint o)
                    Vector512.StoreUnsafe(Avx512F.FusedMultiplyAdd(a, wi, b * wr), &fRef, unativeint (o + half))
                j <- j + 8
            for i in 0 .. level - 1 do
                p.DifV512(fourier, firstOffset + i * levelStride, 0, &prefetch)
        | SimdPath.Vector256 ->
            // As on AVX-512, four lanes at a time: the digits go from the decomposer into the twist.
            let level = decomposer.Level
            let fRef = &MemoryMarshal.GetArrayDataReference fourier
            let magicBits = Vector256.Create(BitConverter.DoubleToInt64Bits magic)
            let magicV = Vector256.Create magic
            let toDouble (v: Vector256<int64>) = (v + magicBits).AsDouble() - magicV
            let mutable j = 0
            while j < half do
                let mutable low = decomposer.InitState256(Vector256.LoadUnsafe(&input[inputOffset + j]))
                let mutable high = decomposer.InitState256(Vector256.LoadUnsafe(&input[inputOffset + half + j]))
                let wr = Vector256.LoadUnsafe(&twistRe[j])
                let wi = Vector256.LoadUnsafe(&twistIm[j])
                for i in 0 .. level - 1 do
                    let a = toDouble (decomposer.NextDigit256(&low))
                    let b = toDouble (decomposer.NextDigit256(&high))
                    let o = firstOffset + i * levelStride + j
                    Vector256.StoreUnsafe(Fma.MultiplySubtract(a, wr, b * wi), &fRef, unativeint o)
                    Vector256.StoreUnsafe(Fma.MultiplyAdd(a, wi, b * wr), &fRef, unativeint (o + half))
                j <- j + 4
            for i in 0 .. level - 1 do
                p.Dif(path, fourier, firstOffset + i * levelStride)
        | _ ->
            decomposer.DecomposePolynomial(ReadOnlySpan(input, inputOffset, polynomialSize), digits)
            for i in 0 .. decomposer.Level - 1 do
                p.ForwardInteger(path, digits, i * polynomialSize, fourier, firstOffset + i * levelStride)

    /// ForwardDecomposed of acc·X^degree - acc (the CMux difference of a blind rotation, degree in [0, 2N)) where
    /// acc is `acc[accOffset .. + N)`. The difference goes through `difference[differenceOffset .. + N)`: two straight vector
    /// loops there cost less than forming it lane by lane inside the decomposing pass, whose chunks straddling the
    /// wrap point need a branch on every load.
    member p.ForwardDecomposedRotation
        (path: SimdPath, decomposer: Decomposer, acc: uint64[], accOffset: int, degree: int, fourier: float[], firstOffset: int, levelStride: int, digits: int64[], difference: uint64[], differenceOffset: int)
        =
        let mutable none = KeyPrefetch.None
        p.ForwardDecomposedRotation(path, decomposer, acc, accOffset, degree, fourier, firstOffset, levelStride, digits, difference, differenceOffset, &none)

    /// ForwardDecomposedRotation, stepping `prefetch` on the way (AVX-512 path).
    member internal p.ForwardDecomposedRotation
        (path: SimdPath, decomposer: Decomposer, acc: uint64[], accOffset: int, degree: int, fourier: float[], firstOffset: int, levelStride: int, digits: int64[], difference: uint64[], differenceOffset: int, prefetch: byref<KeyPrefetch>)
        =
        checkPath path
        Polynomial.monomialMulMinusSelfInto (path = SimdPath.Vector512) acc accOffset polynomialSize degree difference differenceOffset
        p.ForwardDecomposed(path, decomposer, difference, differenceOffset, fourier, firstOffset, levelStride, digits, &prefetch)

    /// Forward transform of a torus polynomial (each coefficient read as a real in [-1/2, 1/2)); used once per key
    /// conversion, so the twist is scalar and only the FFT follows `path`.
    member p.ForwardTorus(path: SimdPath, coefficients: ReadOnlySpan<uint64>, fourier: float[], offset: int) =
        checkPath path
        if coefficients.Length <> polynomialSize then
            raise (DimensionMismatchException("coefficients", "the polynomial size", polynomialSize, coefficients.Length))
        let im = offset + half
        for j in 0 .. half - 1 do
            let a, b = torusToReal coefficients[j], torusToReal coefficients[j + half]
            fourier[offset + j] <- Math.FusedMultiplyAdd(a, twistRe[j], -(b * twistIm[j]))
            fourier[im + j] <- Math.FusedMultiplyAdd(a, twistIm[j], b * twistRe[j])
        p.Dif(path, fourier, offset)

    /// Backward transform of `fourier[offset .. offset + N)` (overwritten) to a real polynomial whose coefficients
    /// are reduced modulo 1 and added, as torus elements, to `output[outputOffset .. outputOffset + N)`.
    member p.BackwardAddTorus(path: SimdPath, fourier: float[], offset: int, output: uint64[], outputOffset: int) =
        let mutable none = KeyPrefetch.None
        p.BackwardAddTorus(path, fourier, offset, output, outputOffset, &none)

    /// BackwardAddTorus, stepping `prefetch` on the way (AVX-512 path).
    member internal p.BackwardAddTorus(path: SimdPath, fourier: float[], offset: int, output: uint64[], outputOffset: int, prefetch: byref<KeyPrefetch>) =
        checkPath path
        let im = offset + half
        let o = outputOffset
        match path with
        | SimdPath.Vector512 when firstStepIsPair ->
            // The last two FFT stages, the untwist and the conversion to the torus in one pass over the data.
            p.DitV512(fourier, offset, 1, &prefetch)
            let scale = Vector512.Create two64
            let fRef = &MemoryMarshal.GetArrayDataReference fourier
            let inline finish (m: int) (zr: Vector512<float>) (zi: Vector512<float>) =
                let wr = Vector512.LoadUnsafe(&untwistRe[m])
                let wi = Vector512.LoadUnsafe(&untwistIm[m])
                let xr = Avx512F.FusedMultiplySubtract(zr, wr, zi * wi)
                let xi = Avx512F.FusedMultiplyAdd(zr, wi, zi * wr)
                let ir = Avx512DQ.ConvertToVector512Int64((xr - Avx512F.RoundScale(xr, 0uy)) * scale).AsUInt64()
                let ii = Avx512DQ.ConvertToVector512Int64((xi - Avx512F.RoundScale(xi, 0uy)) * scale).AsUInt64()
                Vector512.StoreUnsafe(Vector512.LoadUnsafe(&output[o + m]) + ir, &output[o + m])
                Vector512.StoreUnsafe(Vector512.LoadUnsafe(&output[o + half + m]) + ii, &output[o + half + m])
            let s = schedule512[0]
            let q = s / 2
            let mutable j = 0
            while j < q do
                let struct (x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i) =
                    Butterfly512.ditQuad
                        (ld &fRef (offset + j)) (ld &fRef (im + j)) (ld &fRef (offset + j + q)) (ld &fRef (im + j + q))
                        (ld &fRef (offset + j + s)) (ld &fRef (im + j + s)) (ld &fRef (offset + j + s + q)) (ld &fRef (im + j + s + q))
                        (Vector512.LoadUnsafe(&twiddleRe[s + j])) (Vector512.LoadUnsafe(&twiddleIm[s + j]))
                        (Vector512.LoadUnsafe(&twiddleRe[q + j])) (Vector512.LoadUnsafe(&twiddleIm[q + j]))
                finish j x0r x0i
                finish (j + q) x1r x1i
                finish (j + s) x2r x2i
                finish (j + s + q) x3r x3i
                prefetch.Step()
                j <- j + 8
        | SimdPath.Vector512 ->
            p.DitV512(fourier, offset, 0, &prefetch)
            let scale = Vector512.Create two64
            let mutable j = 0
            while j < half do
                let zr = Vector512.LoadUnsafe(&fourier[offset + j])
                let zi = Vector512.LoadUnsafe(&fourier[im + j])
                let wr = Vector512.LoadUnsafe(&untwistRe[j])
                let wi = Vector512.LoadUnsafe(&untwistIm[j])
                let xr = Avx512F.FusedMultiplySubtract(zr, wr, zi * wi)
                let xi = Avx512F.FusedMultiplyAdd(zr, wi, zi * wr)
                // fract·2^64 rounds to nearest; exactly +2^63 converts to the integer indefinite 2^63, the same torus element.
                let ir = Avx512DQ.ConvertToVector512Int64((xr - Avx512F.RoundScale(xr, 0uy)) * scale).AsUInt64()
                let ii = Avx512DQ.ConvertToVector512Int64((xi - Avx512F.RoundScale(xi, 0uy)) * scale).AsUInt64()
                Vector512.StoreUnsafe(Vector512.LoadUnsafe(&output[o + j]) + ir, &output[o + j])
                Vector512.StoreUnsafe(Vector512.LoadUnsafe(&output[o + half + j]) + ii, &output[o + half + j])
                j <- j + 8
        | SimdPath.Vector256 ->
            p.Dit(path, fourier, offset)
            // AVX2 has no f64 → i64 conversion: split fract·2^64 into two 32-bit halves, each exact via the magic constant.
            let two32 = Vector256.Create 4294967296.0
            let magicBits = Vector256.Create(BitConverter.DoubleToInt64Bits magic)
            let magicV = Vector256.Create magic
            let toInt (x: Vector256<float>) = (x + magicV).AsInt64() - magicBits
            let toTorus (x: Vector256<float>) =
                let f = (x - Avx.RoundToNearestInteger x) * two32
                let hi = Avx.RoundToNearestInteger f
                let lo = (f - hi) * two32
                (Avx2.ShiftLeftLogical(toInt hi, 32uy) + toInt lo).AsUInt64()
            let mutable j = 0
            while j < half do
                let zr = Vector256.LoadUnsafe(&fourier[offset + j])
                let zi = Vector256.LoadUnsafe(&fourier[im + j])
                let wr = Vector256.LoadUnsafe(&untwistRe[j])
                let wi = Vector256.LoadUnsafe(&untwistIm[j])
                let xr = Fma.MultiplySubtract(zr, wr, zi * wi)
                let xi = Fma.MultiplyAdd(zr, wi, zi * wr)
                Vector256.StoreUnsafe(Vector256.LoadUnsafe(&output[o + j]) + toTorus xr, &output[o + j])
                Vector256.StoreUnsafe(Vector256.LoadUnsafe(&output[o + half + j]) + toTorus xi, &output[o + half + j])
                j <- j + 4
        | SimdPath.Scalar ->
            p.Dit(path, fourier, offset)
            for j in 0 .. half - 1 do
                let zr, zi = fourier[offset + j], fourier[im + j]
                let xr = Math.FusedMultiplyAdd(zr, untwistRe[j], -(zi * untwistIm[j]))
                let xi = Math.FusedMultiplyAdd(zr, untwistIm[j], zi * untwistRe[j])
                output[o + j] <- output[o + j] + Torus.ofReal xr
                output[o + half + j] <- output[o + half + j] + Torus.ofReal xi

    /// acc += a ⊙ b, pointwise complex multiply-accumulate of two Fourier polynomials (N doubles each).
    static member MultiplyAccumulate
        (path: SimdPath, acc: float[], accOffset: int, a: float[], aOffset: int, b: float[], bOffset: int, polynomialSize: int)
        =
        let half = polynomialSize / 2
        match path with
        | SimdPath.Vector512 ->
            let mutable j = 0
            while j < half do
                let ar = Vector512.LoadUnsafe(&a[aOffset + j])
                let ai = Vector512.LoadUnsafe(&a[aOffset + half + j])
                let br = Vector512.LoadUnsafe(&b[bOffset + j])
                let bi = Vector512.LoadUnsafe(&b[bOffset + half + j])
                let cr = Vector512.LoadUnsafe(&acc[accOffset + j])
                let ci = Vector512.LoadUnsafe(&acc[accOffset + half + j])
                Vector512.StoreUnsafe(Avx512F.FusedMultiplyAdd(ar, br, Avx512F.FusedMultiplyAddNegated(ai, bi, cr)), &acc[accOffset + j])
                Vector512.StoreUnsafe(Avx512F.FusedMultiplyAdd(ar, bi, Avx512F.FusedMultiplyAdd(ai, br, ci)), &acc[accOffset + half + j])
                j <- j + 8
        | SimdPath.Vector256 ->
            let mutable j = 0
            while j < half do
                let ar = Vector256.LoadUnsafe(&a[aOffset + j])
                let ai = Vector256.LoadUnsafe(&a[aOffset + half + j])
                let br = Vector256.LoadUnsafe(&b[bOffset + j])
                let bi = Vector256.LoadUnsafe(&b[bOffset + half + j])
                let cr = Vector256.LoadUnsafe(&acc[accOffset + j])
                let ci = Vector256.LoadUnsafe(&acc[accOffset + half + j])
                Vector256.StoreUnsafe(Fma.MultiplyAdd(ar, br, Fma.MultiplyAddNegated(ai, bi, cr)), &acc[accOffset + j])
                Vector256.StoreUnsafe(Fma.MultiplyAdd(ar, bi, Fma.MultiplyAdd(ai, br, ci)), &acc[accOffset + half + j])
                j <- j + 4
        | SimdPath.Scalar ->
            for j in 0 .. half - 1 do
                let ar, ai = a[aOffset + j], a[aOffset + half + j]
                let br, bi = b[bOffset + j], b[bOffset + half + j]
                acc[accOffset + j] <- Math.FusedMultiplyAdd(ar, br, Math.FusedMultiplyAdd(-ai, bi, acc[accOffset + j]))
                acc[accOffset + half + j] <- Math.FusedMultiplyAdd(ar, bi, Math.FusedMultiplyAdd(ai, br, acc[accOffset + half + j]))

    /// sums[c] = Σ_row inputs[row] ⊙ matrix[row][c] for c ≤ columns - 1: the Fourier-domain part of an external
    /// product, `rows` decomposed polynomials (from inputsOffset) against a GGSW's rows (matrix entry (row, c) at
    /// matrixOffset + (row·columns + c)·N), sum c at sumsOffset + c·N. One pass over the points writes every sum
    /// (no clearing, no re-reads).
    static member MultiplyRows
        (path: SimdPath, sums: float[], sumsOffset: int, inputs: float[], inputsOffset: int, rows: int, matrix: float[], matrixOffset: int, columns: int, polynomialSize: int)
        =
        if sumsOffset < 0 || sumsOffset + columns * polynomialSize > sums.Length then
            raise (DimensionMismatchException("sums", "offset + columns·N within the array", sumsOffset + columns * polynomialSize, sums.Length))
        if inputsOffset < 0 || inputsOffset + rows * polynomialSize > inputs.Length then
            raise (DimensionMismatchException("inputs", "offset + rows·N within the array", inputsOffset + rows * polynomialSize, inputs.Length))
        if matrixOffset < 0 || matrixOffset + rows * columns * polynomialSize > matrix.Length then
            raise (DimensionMismatchException("matrix", "offset + rows·columns·N within the array", matrixOffset + rows * columns * polynomialSize, matrix.Length))
        let n = polynomialSize
        let half = n / 2
        match path with
        | SimdPath.Vector512 when columns = 2 ->
            // k = 1 (every TUniform preset from 4 bits up): both sums in registers, one pass over the points.
            let inRef = &Unsafe.Add(&MemoryMarshal.GetArrayDataReference inputs, inputsOffset)
            let mRef = &MemoryMarshal.GetArrayDataReference matrix
            let sRef = &Unsafe.Add(&MemoryMarshal.GetArrayDataReference sums, sumsOffset)
            let mutable j = 0
            while j < half do
                let mutable s0r = Vector512<float>.Zero
                let mutable s0i = Vector512<float>.Zero
                let mutable s1r = Vector512<float>.Zero
                let mutable s1i = Vector512<float>.Zero
                let mutable input = j
                let mutable g = matrixOffset + j
                for _ in 1..rows do
                    let ar = ld &inRef (input)
                    let ai = ld &inRef (input + half)
                    let b0r = ld &mRef (g)
                    let b0i = ld &mRef (g + half)
                    let b1r = ld &mRef (g + n)
                    let b1i = ld &mRef (g + n + half)
                    s0r <- Avx512F.FusedMultiplyAdd(ar, b0r, Avx512F.FusedMultiplyAddNegated(ai, b0i, s0r))
                    s0i <- Avx512F.FusedMultiplyAdd(ar, b0i, Avx512F.FusedMultiplyAdd(ai, b0r, s0i))
                    s1r <- Avx512F.FusedMultiplyAdd(ar, b1r, Avx512F.FusedMultiplyAddNegated(ai, b1i, s1r))
                    s1i <- Avx512F.FusedMultiplyAdd(ar, b1i, Avx512F.FusedMultiplyAdd(ai, b1r, s1i))
                    input <- input + n
                    g <- g + 2 * n
                st s0r &sRef (j)
                st s0i &sRef (half + j)
                st s1r &sRef (n + j)
                st s1i &sRef (n + half + j)
                j <- j + 8
        | SimdPath.Vector512 ->
            // k > 1: one multiply-accumulate pass per (row, column), each also prefetching its polynomial of the
            // next GGSW (a blind rotation's KeyPrefetch, paced for k = 1, covers only the start of these larger ones).
            use matrixPtr = fixed matrix
            let prefetchDistance = rows * columns * n
            let canPrefetch = Sse.IsSupported && matrixOffset + 2 * prefetchDistance <= matrix.Length
            Array.Clear(sums, sumsOffset, columns * n)
            for c in 0 .. columns - 1 do
                for row in 0 .. rows - 1 do
                    let g = matrixOffset + (row * columns + c) * n
                    FftPlan.MultiplyAccumulate(path, sums, sumsOffset + c * n, inputs, inputsOffset + row * n, matrix, g, n)
                    if canPrefetch then
                        let mutable line = 0
                        while line < n do
                            Sse.Prefetch1(NativePtr.toVoidPtr (NativePtr.add matrixPtr (g + prefetchDistance + line)))
                            line <- line + 8
        | _ ->
            Array.Clear(sums, sumsOffset, columns * n)
            for c in 0 .. columns - 1 do
                for row in 0 .. rows - 1 do
                    FftPlan.MultiplyAccumulate(path, sums, sumsOffset + c * n, inputs, inputsOffset + row * n, matrix, matrixOffset + (row * columns + c) * n, n)

    /// The negacyclic product of a torus polynomial and a polynomial of small signed integers through the FFT, as
    /// the external product computes it (one forward per operand, one pointwise product, one backward).
    member p.NegacyclicProduct(path: SimdPath, torus: uint64[], integers: int64[]) =
        if integers.Length <> polynomialSize then
            raise (DimensionMismatchException("integers", "the polynomial size", polynomialSize, integers.Length))
        let ft = Array.zeroCreate<float> polynomialSize
        let fi = Array.zeroCreate<float> polynomialSize
        let acc = Array.zeroCreate<float> polynomialSize
        p.ForwardTorus(path, ReadOnlySpan torus, ft, 0)
        p.ForwardInteger(path, integers, 0, fi, 0)
        FftPlan.MultiplyAccumulate(path, acc, 0, ft, 0, fi, 0, polynomialSize)
        let result = Array.zeroCreate<uint64> polynomialSize
        p.BackwardAddTorus(path, acc, 0, result, 0)
        result

    /// The exact negacyclic product of a torus polynomial `a` by a polynomial `small` of tiny integers (a binary
    /// key), added to `result`. `a` is cut into four 16-bit limbs so that every partial product stays an integer below
    /// 2^(16 + log2 N + 1), far inside f64's exact range, and is rounded back exactly (requires Σ|small_i| ≤ 2^20).
    /// `smallFourier` is `small` already through ForwardInteger; `scratch` holds 2N doubles and N int64.
    member p.ExactProductAccumulate
        (path: SimdPath, a: ReadOnlySpan<uint64>, smallFourier: float[], smallOffset: int, result: Span<uint64>, scratch: float[], limb: int64[])
        =
        for l in 0..3 do
            for c in 0 .. polynomialSize - 1 do
                limb[c] <- int64 ((a[c] >>> (16 * l)) &&& 0xFFFFUL)
            p.ForwardInteger(path, limb, 0, scratch, 0)
            Array.Clear(scratch, polynomialSize, polynomialSize)
            FftPlan.MultiplyAccumulate(path, scratch, polynomialSize, scratch, 0, smallFourier, smallOffset, polynomialSize)
            p.Dit(path, scratch, polynomialSize)
            let im = polynomialSize + half
            for j in 0 .. half - 1 do
                let zr, zi = scratch[polynomialSize + j], scratch[im + j]
                let xr = zr * untwistRe[j] - zi * untwistIm[j]
                let xi = zr * untwistIm[j] + zi * untwistRe[j]
                result[j] <- result[j] + (uint64 (int64 (Math.Round xr)) <<< (16 * l))
                result[j + half] <- result[j + half] + (uint64 (int64 (Math.Round xi)) <<< (16 * l))

    /// One plan per polynomial size, shared (a plan is immutable).
    static member ForSize(polynomialSize: int) = FftPlanCache.Get polynomialSize

and [<AbstractClass; Sealed>] private FftPlanCache private () =
    static let plans = Collections.Concurrent.ConcurrentDictionary<int, FftPlan>()
    static member Get(size: int) = plans.GetOrAdd(size, fun s -> FftPlan s)
