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

    /// The transpose, blocked for cache locality.
    let transpose (t: Tensor) =
        let out = Array.zeroCreate t.Data.Length
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

    /// C[rows lo..hi) = A·B. For each (i, k) adds a[i,k]·B[k,:] to C[i,:] (a SIMD multiply-add over the row, from
    /// System.Numerics.Tensors), skipping a[i,k] = 0: quantized activations and ReLU gradients are mostly zeros.
    /// Each C[i,j] is accumulated over k in increasing order, so rows computed on any thread are identical.
    let private matmulRows (a: Tensor) (b: Tensor) (c: float32[]) (lo: int) (hi: int) =
        let n = b.Cols
        let kBlock = 256
        let mutable k0 = 0
        while k0 < a.Cols do
            let k1 = min (k0 + kBlock) a.Cols
            for i in lo .. hi - 1 do
                let cRow = Span<float32>(c, i * n, n)
                let aOffset = i * a.Cols
                for k in k0 .. k1 - 1 do
                    let aik = a.Data[aOffset + k]
                    if aik <> 0.0f then
                        TensorPrimitives.MultiplyAdd(ReadOnlySpan<float32>(b.Data, k * n, n), aik, cRow, cRow)
            k0 <- k1

    /// The product A·B on up to <c>threads</c> threads; bit-identical whatever the thread count.
    let matmul (threads: int) (a: Tensor) (b: Tensor) =
        if a.Cols <> b.Rows then
            raise (InvalidShapeException("b", $"has %d{b.Rows} rows but a has %d{a.Cols} columns"))
        let c = Array.zeroCreate (a.Rows * b.Cols)
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

    /// Σₜ a[aOffset + t]·b[bOffset + t] for t < length: 256-bit lanes accumulated in a fixed order, then the lanes
    /// summed, then the scalar tail; the result depends only on the two rows' values.
    let private dot (a: float32[]) (aOffset: int) (b: float32[]) (bOffset: int) (length: int) =
        let mutable total = 0.0f
        let mutable t = 0
        if Vector256.IsHardwareAccelerated && length >= Vector256<float32>.Count then
            let width = Vector256<float32>.Count
            let whole = length / width * width
            let av = MemoryMarshal.Cast<float32, Vector256<float32>>(ReadOnlySpan<float32>(a, aOffset, whole))
            let bv = MemoryMarshal.Cast<float32, Vector256<float32>>(ReadOnlySpan<float32>(b, bOffset, whole))
            let mutable acc = Vector256<float32>.Zero
            for v in 0 .. av.Length - 1 do
                acc <- Vector256.FusedMultiplyAdd(av[v], bv[v], acc)
            total <- Vector256.Sum acc
            t <- whole
        while t < length do
            total <- total + a[aOffset + t] * b[bOffset + t]
            t <- t + 1
        total

    /// A·Bᵀ for B given row-major (n × k, one row per output column): dot products of contiguous rows, no transpose.
    /// Bit-identical whatever the thread count.
    let matmulNT (threads: int) (a: Tensor) (b: Tensor) =
        if a.Cols <> b.Cols then
            raise (InvalidShapeException("b", $"has %d{b.Cols} columns but a has %d{a.Cols}; A·Bᵀ needs equal widths"))
        let m, n, k = a.Rows, b.Rows, a.Cols
        let c = Array.zeroCreate (m * n)
        let rowsOf lo hi =
            for i in lo .. hi - 1 do
                for j in 0 .. n - 1 do
                    c[i * n + j] <- dot a.Data (i * k) b.Data (j * k) k
        if threads <= 1 || int64 m * int64 n * int64 k < int64 parallelThreshold then
            rowsOf 0 m
        else
            let tasks = (m + rowsPerTask - 1) / rowsPerTask
            Parallel.For(0, tasks, ParallelOptions(MaxDegreeOfParallelism = threads), fun t ->
                rowsOf (t * rowsPerTask) (min m ((t + 1) * rowsPerTask)))
            |> ignore
        ofArray m n c

    /// Aᵀ·B (a is m × n, b is m × k, the result n × k) without transposing: for each row r of both, adds
    /// a[r, i]·B[r, :] to row i of the result (skipping zeros), rows r in increasing order. Bit-identical whatever
    /// the thread count (threads split the result's rows).
    let matmulTN (threads: int) (a: Tensor) (b: Tensor) =
        if a.Rows <> b.Rows then
            raise (InvalidShapeException("b", $"has %d{b.Rows} rows but a has %d{a.Rows}; Aᵀ·B needs equal heights"))
        let m, n, k = a.Rows, a.Cols, b.Cols
        let c = Array.zeroCreate (n * k)
        let rowsOf lo hi =
            for r in 0 .. m - 1 do
                let bRow = ReadOnlySpan<float32>(b.Data, r * k, k)
                for i in lo .. hi - 1 do
                    let v = a.Data[r * n + i]
                    if v <> 0.0f then
                        let cRow = Span<float32>(c, i * k, k)
                        TensorPrimitives.MultiplyAdd(bRow, v, cRow, cRow)
        if threads <= 1 || int64 m * int64 n * int64 k < int64 parallelThreshold then
            rowsOf 0 n
        else
            let tasks = (n + rowsPerTask - 1) / rowsPerTask
            Parallel.For(0, tasks, ParallelOptions(MaxDegreeOfParallelism = threads), fun t ->
                rowsOf (t * rowsPerTask) (min n ((t + 1) * rowsPerTask)))
            |> ignore
        ofArray n k c

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
