namespace FheNet.Numerics

open System
open System.Numerics.Tensors
open System.Runtime.InteropServices
open System.Runtime.Intrinsics
open System.Threading.Tasks
open FheNet

/// A dense row-major float32 matrix. Vectors are 1 × n or n × 1 matrices; a scalar is 1 × 1.
/// The array is shared, not copied: treat a tensor handed to another function as read-only.
type Tensor =
    { Rows: int
      Cols: int
      Data: float32[] }

    /// Number of elements.
    member t.Length = t.Data.Length

    /// The element at (row, col).
    member t.Item
        with get (row: int, col: int) = t.Data[row * t.Cols + col]

/// Construction and SIMD kernels. Every kernel has a simple reference next to it, tested one against the other.
/// Results never depend on the thread count: parallel kernels split the output, and every output element is
/// computed by the same sequence of operations whatever the split.
module Tensor =

    /// A tensor over an existing array (not copied).
    let ofArray (rows: int) (cols: int) (data: float32[]) =
        if rows < 0 || cols < 0 || rows * cols <> data.Length then
            raise (InvalidShapeException("data", $"has %d{data.Length} values, expected %d{rows} × %d{cols}"))
        { Rows = rows; Cols = cols; Data = data }

    /// A zero tensor.
    let zeros rows cols = ofArray rows cols (Array.zeroCreate (rows * cols))

    /// A tensor whose (i, j) element is f i j.
    let init rows cols (f: int -> int -> float32) =
        ofArray rows cols (Array.init (rows * cols) (fun k -> f (k / cols) (k % cols)))

    /// A tensor from rows of equal length.
    let ofRows (rows: float32[][]) =
        Guard.nonEmpty "rows" rows.Length
        let cols = rows[0].Length
        rows
        |> Array.iteri (fun i r ->
            if r.Length <> cols then
                raise (InvalidShapeException($"rows[%d{i}]", $"has %d{r.Length} values but row 0 has %d{cols}")))
        ofArray rows.Length cols (Array.concat rows)

    /// A 1 × 1 tensor.
    let scalar (v: float32) = ofArray 1 1 [| v |]

    /// Row i as a new array.
    let row (t: Tensor) i = Array.sub t.Data (i * t.Cols) t.Cols

    /// The rows listed in <c>indices</c>, in that order.
    let gatherRows (t: Tensor) (indices: ReadOnlySpan<int>) =
        let data = Array.zeroCreate (indices.Length * t.Cols)
        for r in 0 .. indices.Length - 1 do
            Array.blit t.Data (indices[r] * t.Cols) data (r * t.Cols) t.Cols
        ofArray indices.Length t.Cols data

    /// The transpose written into <c>out</c> (t.Length values), blocked for cache locality.
    let transposeInto (t: Tensor) (out: float32[]) =
        Guard.sameLength "out" t.Length out.Length
        let src = t.Data
        let rows, cols = t.Rows, t.Cols
        let block = 32
        let mutable i0 = 0
        while i0 < rows do
            let i1 = min (i0 + block) rows
            let mutable j0 = 0
            while j0 < cols do
                let j1 = min (j0 + block) cols
                for i in i0 .. i1 - 1 do
                    for j in j0 .. j1 - 1 do
                        out[j * rows + i] <- src[i * cols + j]
                j0 <- j1
            i0 <- i1
        ofArray cols rows out

    /// The transpose.
    let transpose (t: Tensor) = transposeInto t (Array.zeroCreate t.Length)

    /// Reference product: plain triple loop, each element summed over k in increasing order.
    let matmulReference (a: Tensor) (b: Tensor) =
        if a.Cols <> b.Rows then
            raise (InvalidShapeException("b", $"has %d{b.Rows} rows but a has %d{a.Cols} columns"))
        init a.Rows b.Cols (fun i j ->
            let mutable s = 0.0f
            for k in 0 .. a.Cols - 1 do
                s <- s + a[i, k] * b[k, j]
            s)

    /// Work (multiply-adds) below which a product runs on the calling thread only.
    let private parallelThreshold = 1 <<< 17

    /// Rows of the output per task: a fixed size, so the split does not depend on the thread count.
    let private rowsPerTask = 8

    /// C[rows lo..hi) = A·B, register-blocked: a tile of 4 rows × 16 columns of C lives in eight 256-bit registers
    /// while k runs, fed by two loads of B and four broadcasts of A per step. Edge rows and columns use a scalar loop.
    /// Every C[i,j] is a fused multiply-add chain over k in increasing order, identical in the tile and edge paths,
    /// so the rows computed on any thread are the same bits.
    let private matmulRows (a: Tensor) (b: Tensor) (c: float32[]) (lo: int) (hi: int) =
        let n, kk = b.Cols, a.Cols
        let ad, bd = a.Data, b.Data
        let width = Vector256<float32>.Count
        let tileCols = 2 * width
        let vectorCols = if Vector256.IsHardwareAccelerated then n / tileCols * tileCols else 0
        let scalarCell i j =
            let mutable s = 0.0f
            for k in 0 .. kk - 1 do
                s <- MathF.FusedMultiplyAdd(ad[i * kk + k], bd[k * n + j], s)
            c[i * n + j] <- s
        let mutable i = lo
        while i + 4 <= hi do
            let mutable j = 0
            while j < vectorCols do
                let mutable c00 = Vector256<float32>.Zero
                let mutable c01 = Vector256<float32>.Zero
                let mutable c10 = Vector256<float32>.Zero
                let mutable c11 = Vector256<float32>.Zero
                let mutable c20 = Vector256<float32>.Zero
                let mutable c21 = Vector256<float32>.Zero
                let mutable c30 = Vector256<float32>.Zero
                let mutable c31 = Vector256<float32>.Zero
                for k in 0 .. kk - 1 do
                    let b0 = Vector256.Create<float32>(values = ReadOnlySpan<float32>(bd, k * n + j, width))
                    let b1 = Vector256.Create<float32>(values = ReadOnlySpan<float32>(bd, k * n + j + width, width))
                    let a0 = Vector256.Create(ad[i * kk + k])
                    let a1 = Vector256.Create(ad[(i + 1) * kk + k])
                    let a2 = Vector256.Create(ad[(i + 2) * kk + k])
                    let a3 = Vector256.Create(ad[(i + 3) * kk + k])
                    c00 <- Vector256.FusedMultiplyAdd(a0, b0, c00)
                    c01 <- Vector256.FusedMultiplyAdd(a0, b1, c01)
                    c10 <- Vector256.FusedMultiplyAdd(a1, b0, c10)
                    c11 <- Vector256.FusedMultiplyAdd(a1, b1, c11)
                    c20 <- Vector256.FusedMultiplyAdd(a2, b0, c20)
                    c21 <- Vector256.FusedMultiplyAdd(a2, b1, c21)
                    c30 <- Vector256.FusedMultiplyAdd(a3, b0, c30)
                    c31 <- Vector256.FusedMultiplyAdd(a3, b1, c31)
                c00.CopyTo(Span<float32>(c, i * n + j, width))
                c01.CopyTo(Span<float32>(c, i * n + j + width, width))
                c10.CopyTo(Span<float32>(c, (i + 1) * n + j, width))
                c11.CopyTo(Span<float32>(c, (i + 1) * n + j + width, width))
                c20.CopyTo(Span<float32>(c, (i + 2) * n + j, width))
                c21.CopyTo(Span<float32>(c, (i + 2) * n + j + width, width))
                c30.CopyTo(Span<float32>(c, (i + 3) * n + j, width))
                c31.CopyTo(Span<float32>(c, (i + 3) * n + j + width, width))
                j <- j + tileCols
            for r in i .. i + 3 do
                for col in vectorCols .. n - 1 do
                    scalarCell r col
            i <- i + 4
        while i < hi do
            for col in 0 .. n - 1 do
                scalarCell i col
            i <- i + 1

    /// The product A·B written into <c>c</c> (a.Rows × b.Cols values, every one overwritten), on up to
    /// <c>threads</c> threads; bit-identical whatever the thread count.
    let matmulInto (threads: int) (a: Tensor) (b: Tensor) (c: float32[]) =
        if a.Cols <> b.Rows then
            raise (InvalidShapeException("b", $"has %d{b.Rows} rows but a has %d{a.Cols} columns"))
        Guard.sameLength "c" (a.Rows * b.Cols) c.Length
        let work = int64 a.Rows * int64 a.Cols * int64 b.Cols
        if threads <= 1 || work < int64 parallelThreshold then
            matmulRows a b c 0 a.Rows
        else
            let tasks = (a.Rows + rowsPerTask - 1) / rowsPerTask
            Parallel.For(
                0,
                tasks,
                ParallelOptions(MaxDegreeOfParallelism = threads),
                fun t -> matmulRows a b c (t * rowsPerTask) (min a.Rows ((t + 1) * rowsPerTask))
            )
            |> ignore
        ofArray a.Rows b.Cols c

    /// The product A·B on up to <c>threads</c> threads; bit-identical whatever the thread count.
    let matmul (threads: int) (a: Tensor) (b: Tensor) = matmulInto threads a b (Array.zeroCreate (a.Rows * b.Cols))

    /// A·Bᵀ for B given row-major (n × k, one row per output column), through the tiled product.
    let matmulNT (threads: int) (a: Tensor) (b: Tensor) =
        if a.Cols <> b.Cols then
            raise (InvalidShapeException("b", $"has %d{b.Cols} columns but a has %d{a.Cols}; A·Bᵀ needs equal widths"))
        matmul threads a (transpose b)

    /// Aᵀ·B (a is m × n, b is m × k, the result n × k), through the tiled product.
    let matmulTN (threads: int) (a: Tensor) (b: Tensor) =
        if a.Rows <> b.Rows then
            raise (InvalidShapeException("b", $"has %d{b.Rows} rows but a has %d{a.Rows}; Aᵀ·B needs equal heights"))
        matmul threads (transpose a) b

    /// Element-wise map into a new tensor of the same shape.
    let map (f: float32 -> float32) (t: Tensor) = ofArray t.Rows t.Cols (Array.map f t.Data)

    /// Sum of each column (a 1 × cols tensor), rows added in increasing order.
    let sumRows (t: Tensor) =
        let out = Array.zeroCreate t.Cols
        for i in 0 .. t.Rows - 1 do
            let r = ReadOnlySpan<float32>(t.Data, i * t.Cols, t.Cols)
            TensorPrimitives.Add(r, ReadOnlySpan<float32> out, Span<float32> out)
        ofArray 1 t.Cols out

/// A small seeded generator for training (initialisation, shuffling, splits): xoshiro256** seeded by SplitMix64.
/// Not for secrets: keys and noise use a CSPRNG elsewhere.
type TrainingRng(seed: uint64) =
    let mutable s0 = 0UL
    let mutable s1 = 0UL
    let mutable s2 = 0UL
    let mutable s3 = 0UL

    do
        let mutable z = seed
        let next () =
            z <- z + 0x9E3779B97F4A7C15UL
            let mutable x = z
            x <- (x ^^^ (x >>> 30)) * 0xBF58476D1CE4E5B9UL
            x <- (x ^^^ (x >>> 27)) * 0x94D049BB133111EBUL
            x ^^^ (x >>> 31)
        s0 <- next ()
        s1 <- next ()
        s2 <- next ()
        s3 <- next ()

    let rotl (x: uint64) k = (x <<< k) ||| (x >>> (64 - k))

    /// The next 64 random bits.
    member _.NextUInt64() =
        let result = rotl (s1 * 5UL) 7 * 9UL
        let t = s1 <<< 17
        s2 <- s2 ^^^ s0
        s3 <- s3 ^^^ s1
        s1 <- s1 ^^^ s2
        s0 <- s0 ^^^ s3
        s2 <- s2 ^^^ t
        s3 <- rotl s3 45
        result

    /// Uniform in [0, 1) with 53 random bits.
    member r.NextDouble() = float (r.NextUInt64() >>> 11) * (1.0 / 9007199254740992.0)

    /// Uniform integer in [0, n).
    member r.NextInt(n: int) = int (r.NextDouble() * float n)

    /// Standard normal (Box–Muller).
    member r.NextGaussian() =
        let u1 = 1.0 - r.NextDouble()
        let u2 = r.NextDouble()
        sqrt (-2.0 * log u1) * cos (2.0 * Math.PI * u2)

    /// A uniformly random permutation of 0..n-1 (Fisher–Yates).
    member r.Permutation(n: int) =
        let p = Array.init n id
        for i in n - 1 .. -1 .. 1 do
            let j = r.NextInt(i + 1)
            let t = p[i]
            p[i] <- p[j]
            p[j] <- t
        p
