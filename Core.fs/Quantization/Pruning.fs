namespace FheNet.Quantization

open System
open System.Buffers
open System.Numerics.Tensors
open System.Runtime.Intrinsics
open FheNet

/// The accumulator bound cannot hold even one weight times one input plus the bias.
type AccumulatorTooSmallException(accumulatorBits: int, smallestThatWorks: int) =
    inherit
        ArgumentOutOfRangeException(
            "accumulatorBits",
            accumulatorBits,
            $"An accumulator of %d{accumulatorBits} bits cannot hold a single weight × input product plus the bias. "
            + $"Use accumulatorBits >= %d{smallestThatWorks}, or fewer weight or activation bits."
        )

    /// The smallest accumulator width that admits a fan-in of one.
    member _.SmallestThatWorks = smallestThatWorks

/// Inclusive range of centred integer codes (code - zeroPoint) that enter an accumulator.
[<Struct>]
type CodeRange =
    { Min: int
      Max: int }

    /// The centred codes of a quantizer: [qmin - zp, qmax - zp].
    static member OfQuantizer(q: Quantizer) =
        { Min = q.QMin - q.ZeroPoint
          Max = q.QMax - q.ZeroPoint }

/// Accumulator bounds and the pruning that enforces them.
///
/// An accumulator is a signed integer of n bits: [-2^(n-1), 2^(n-1) - 1]. A neuron computes Σ wᵢ·xᵢ + b with
/// weights in [wmin, wmax], inputs in [xmin, xmax] and |b| <= B. Every product lies in [tmin, tmax], the smallest and
/// largest of the four corner products (both ranges hold 0, so tmin <= 0 <= tmax). With k terms the accumulator
/// lies in [k·tmin - B, k·tmax + B], so no input overflows it exactly when
///     k <= min( floor((2^(n-1) - 1 - B) / tmax), floor((2^(n-1) - B) / -tmin) ).
/// This accounts for the bias and for the asymmetry of two's-complement and unsigned codes, which Concrete ML's
/// floor((2^n - 1) / (2^w - 1) / (2^a - 1)) does not.
module Pruning =

    let private accumulatorLimits (bits: int) =
        let half = 1L <<< (bits - 1)
        -half, half - 1L

    let private productRange (weights: CodeRange) (inputs: CodeRange) =
        let corners =
            [| int64 weights.Min * int64 inputs.Min
               int64 weights.Min * int64 inputs.Max
               int64 weights.Max * int64 inputs.Min
               int64 weights.Max * int64 inputs.Max |]
        Array.min corners, Array.max corners

    /// The largest fan-in that never overflows, or a negative value when even the bias alone overflows.
    let private fanInLimit (weights: CodeRange) (inputs: CodeRange) (accumulatorBits: int) (biasBound: int64) =
        let lo, hi = accumulatorLimits accumulatorBits
        let tmin, tmax = productRange weights inputs
        let byTop = if tmax = 0L then Int64.MaxValue else (hi - biasBound) / tmax
        let byBottom = if tmin = 0L then Int64.MaxValue else (-lo - biasBound) / -tmin
        if biasBound > hi then -1L else min byTop byBottom

    /// The largest fan-in k such that no input in range, no weights in range and no bias with |b| <= biasBound can
    /// overflow a signed accumulator of <c>accumulatorBits</c> bits (see the module's formula). Raises
    /// <see cref="T:FheNet.Quantization.AccumulatorTooSmallException"/> when k would be 0, naming the smallest width that
    /// works. The result is capped at Int32.MaxValue (no practical fan-in reaches it).
    let maxFanIn (weights: CodeRange) (inputs: CodeRange) (accumulatorBits: int) (biasBound: int64) : int =
        Guard.inRange "accumulatorBits" 2 62 accumulatorBits
        if biasBound < 0L then
            raise (ParameterOutOfRangeException("biasBound", biasBound, "a non-negative bound on |bias|"))
        let k = fanInLimit weights inputs accumulatorBits biasBound
        if k < 1L then
            let smallest =
                seq { accumulatorBits + 1 .. 62 }
                |> Seq.tryFind (fun n -> fanInLimit weights inputs n biasBound >= 1L)
                |> Option.defaultValue 63
            raise (AccumulatorTooSmallException(accumulatorBits, smallest))
        int (min k (int64 Int32.MaxValue))

    /// The exact range [min, max] that Σ wᵢ·xᵢ + bias takes over every input with codes in <c>inputs</c>.
    let accumulatorRange (weights: ReadOnlySpan<int>) (bias: int64) (inputs: CodeRange) : struct (int64 * int64) =
        let mutable lo = bias
        let mutable hi = bias
        for w in weights do
            let a = int64 w * int64 inputs.Min
            let b = int64 w * int64 inputs.Max
            lo <- lo + min a b
            hi <- hi + max a b
        struct (lo, hi)

    /// True when no input with codes in <c>inputs</c> can overflow the signed accumulator.
    let fits (weights: ReadOnlySpan<int>) (bias: int64) (inputs: CodeRange) (accumulatorBits: int) =
        let struct (lo, hi) = accumulatorRange weights bias inputs
        let minAcc, maxAcc = accumulatorLimits accumulatorBits
        lo >= minAcc && hi <= maxAcc

    /// Indices 0..n-1 ordered by decreasing |value|; ties keep the lower index first, so masks are deterministic.
    let private byMagnitude (n: int) (magnitude: int -> float) =
        Array.init n id |> Array.sortWith (fun i j -> compare (magnitude j, i) (magnitude i, j))

    /// For a row-major weight matrix with <c>fanIn</c> columns, the mask that keeps the k largest-magnitude weights of
    /// every output neuron (row). k >= fanIn keeps everything.
    let topKMask (k: int) (fanIn: int) (weights: float32[]) : bool[] =
        Guard.inRange "fanIn" 1 Int32.MaxValue fanIn
        Guard.inRange "k" 0 Int32.MaxValue k
        if weights.Length % fanIn <> 0 then
            raise (InvalidShapeException("weights", $"has %d{weights.Length} values, not a multiple of fanIn = %d{fanIn}"))
        let mask = Array.zeroCreate weights.Length
        for row in 0 .. weights.Length / fanIn - 1 do
            let offset = row * fanIn
            let order = byMagnitude fanIn (fun i -> abs (float weights[offset + i]))
            for i in 0 .. min k fanIn - 1 do
                mask[offset + order[i]] <- true
        mask

    /// The accumulator's limits, after checking that the bias alone fits them.
    let private budgetLimits (bias: int64) (accumulatorBits: int) =
        Guard.inRange "accumulatorBits" 2 62 accumulatorBits
        let minAcc, maxAcc = accumulatorLimits accumulatorBits
        if bias < minAcc || bias > maxAcc then
            let bitLength = 64 - int (Int64.LeadingZeroCount(abs bias))
            raise (AccumulatorTooSmallException(accumulatorBits, bitLength + 1))
        minAcc, maxAcc

    /// The per-neuron budget: keeps the largest-magnitude integer weights of one neuron, dropping the smallest until
    /// the exact accumulator range (bias included) fits <c>accumulatorBits</c>. Keeps more weights than
    /// <see cref="M:FheNet.Quantization.PruningModule.maxFanIn"/> whenever the weights are not all at full scale.
    let budgetMask (weights: int[]) (bias: int64) (inputs: CodeRange) (accumulatorBits: int) : bool[] =
        let minAcc, maxAcc = budgetLimits bias accumulatorBits
        let mask = Array.create weights.Length true
        let struct (lo0, hi0) = accumulatorRange (ReadOnlySpan weights) bias inputs
        if lo0 >= minAcc && hi0 <= maxAcc then mask else
        // Decreasing |w|, ties by increasing index (the order of byMagnitude), by a counting sort over magnitudes:
        // this runs for every neuron at every training step.
        let order =
            let mutable largest = 0L
            for w in weights do
                largest <- max largest (abs (int64 w))
            if largest < 65536L then
                let next = Array.zeroCreate (int largest + 2)
                for w in weights do
                    next[int largest - abs w + 1] <- next[int largest - abs w + 1] + 1
                for m in 1 .. next.Length - 1 do
                    next[m] <- next[m] + next[m - 1]
                let sorted = Array.zeroCreate weights.Length
                for i in 0 .. weights.Length - 1 do
                    let bucket = int largest - abs weights[i]
                    sorted[next[bucket]] <- i
                    next[bucket] <- next[bucket] + 1
                sorted
            else
                let keys = Array.init weights.Length (fun i -> (-(abs (int64 weights[i])) <<< 32) ||| int64 i)
                Array.sortInPlace keys
                keys |> Array.map (fun key -> int (key &&& 0xFFFFFFFFL))
        let mutable lo = lo0
        let mutable hi = hi0
        let mutable dropped = weights.Length - 1
        while (lo < minAcc || hi > maxAcc) && dropped >= 0 do
            let i = order[dropped]
            mask[i] <- false
            let a = int64 weights[i] * int64 inputs.Min
            let b = int64 weights[i] * int64 inputs.Max
            lo <- lo - min a b
            hi <- hi - max a b
            dropped <- dropped - 1
        mask

    /// <c>budgetMask</c> of codes held as float32 (exact integers below 2^24, as training keeps them), written to
    /// <c>mask</c> as 1 (kept) or 0 (pruned), without allocating; the same mask. The drop order (increasing
    /// magnitude, then decreasing index) makes the mask a threshold: a magnitude m and an index t keep every code
    /// with |code| > m and those with |code| = m below index t. Counts of codes per magnitude and sign give each
    /// magnitude class's share of the accumulator range in O(1), which finds m; a walk down class m alone finds t.
    /// Returns m, or 0 when every weight is kept. The inputs' range must hold 0 (every centred code range does):
    /// then each weight's share of the range holds 0, and dropping weights only ever narrows the range.
    let budgetMaskInto
        (codes: ReadOnlySpan<float32>)
        (bias: int64)
        (inputs: CodeRange)
        (accumulatorBits: int)
        (mask: Span<float32>)
        : int =
        Guard.sameLength "mask" codes.Length mask.Length
        if inputs.Min > 0 || inputs.Max < 0 then
            raise (ParameterOutOfRangeException("inputs", $"[%d{inputs.Min}, %d{inputs.Max}]", "a code range that holds 0"))
        let minAcc, maxAcc = budgetLimits bias accumulatorBits
        let inline fitsIn lo hi = lo >= minAcc && hi <= maxAcc
        let largest = if codes.IsEmpty then 0 else int (abs (TensorPrimitives.MaxMagnitude codes))
        let counts = ArrayPool<int>.Shared.Rent(2 * largest + 2)
        try
            // counts[m]: codes equal to m; counts[largest + 1 + m]: codes equal to -m.
            let negatives = largest + 1
            Array.Clear(counts, 0, 2 * largest + 2)
            for c in codes do
                let k = int c
                if k > 0 then counts[k] <- counts[k] + 1
                elif k < 0 then counts[negatives - k] <- counts[negatives - k] + 1
            let xmin, xmax = int64 inputs.Min, int64 inputs.Max
            // The share of magnitude class m: a code k > 0 spans [k·xmin, k·xmax], a code k < 0 [k·xmax, k·xmin].
            let inline classLo (m: int) = int64 m * (int64 counts[m] * xmin - int64 counts[negatives + m] * xmax)
            let inline classHi (m: int) = int64 m * (int64 counts[m] * xmax - int64 counts[negatives + m] * xmin)
            let mutable lo = bias
            let mutable hi = bias
            for m in 1..largest do
                lo <- lo + classLo m
                hi <- hi + classHi m
            if fitsIn lo hi then
                mask.Fill 1.0f
                0
            else
                // Zeros are dropped first and change nothing. Drop whole classes while the rest still overflows;
                // the bias alone fits, so some class m leaves a fitting rest.
                let mutable m = 1
                while not (fitsIn (lo - classLo m) (hi - classHi m)) do
                    lo <- lo - classLo m
                    hi <- hi - classHi m
                    m <- m + 1
                let mutable t = codes.Length
                while not (fitsIn lo hi) do
                    t <- t - 1
                    let k = int codes[t]
                    if abs k = m then
                        let a, b = int64 k * xmin, int64 k * xmax
                        lo <- lo - min a b
                        hi <- hi - max a b
                let fm, ft = float32 m, float32 t
                let mutable j = 0
                if Vector256.IsHardwareAccelerated then
                    let width = Vector256<float32>.Count
                    let vm, vt, one = Vector256.Create fm, Vector256.Create ft, Vector256.Create 1.0f
                    let mutable index = Vector256.Create(0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f)
                    let stride = Vector256.Create(float32 width)
                    while j + width <= codes.Length do
                        let a = Vector256.Abs(Vector256.Create<float32>(values = codes.Slice(j, width)))
                        let kept =
                            Vector256.GreaterThan(a, vm)
                            ||| (Vector256.Equals(a, vm) &&& Vector256.LessThan(index, vt))
                        (kept &&& one).CopyTo(mask.Slice(j, width))
                        index <- index + stride
                        j <- j + width
                while j < codes.Length do
                    let a = abs codes[j]
                    mask[j] <- if a > fm || (a = fm && j < t) then 1.0f else 0.0f
                    j <- j + 1
                m
        finally
            ArrayPool<int>.Shared.Return counts

    /// True when a neuron whose mask has boundary magnitude <c>boundary</c> (see budgetMaskInto) for codes
    /// <c>before</c> may have another mask for codes <c>after</c>: some code changed with its old or new
    /// magnitude at least the boundary. Every code below the boundary is pruned either way, and the codes above it
    /// overflow the budget whatever the pruned ones are, so changes below it cannot move the boundary.
    let internal mayChangeMask (boundary: int) (before: ReadOnlySpan<float32>) (after: ReadOnlySpan<float32>) =
        let fb = float32 boundary
        let mutable changed = false
        let mutable j = 0
        if Vector256.IsHardwareAccelerated then
            let width = Vector256<float32>.Count
            let vb = Vector256.Create fb
            while not changed && j + width <= after.Length do
                let a, b = Vector256.Create<float32>(values = before.Slice(j, width)), Vector256.Create<float32>(values = after.Slice(j, width))
                let large = Vector256.GreaterThanOrEqual(Vector256.Max(Vector256.Abs a, Vector256.Abs b), vb)
                changed <- Vector256.ExtractMostSignificantBits(Vector256.AndNot(large, Vector256.Equals(a, b))) <> 0u
                j <- j + width
        while not changed && j < after.Length do
            changed <- before[j] <> after[j] && max (abs before[j]) (abs after[j]) >= fb
            j <- j + 1
        changed

/// The budget masks of one layer kept across training steps: <c>Mask</c> (row-major, a row of <c>fanIn</c> per
/// neuron) always holds the <c>Pruning.budgetMask</c> of the codes and bias codes last given to <c>Update</c>, which
/// recomputes only the neurons whose change can alter their mask (a new bias code, or a code at or above the
/// neuron's boundary magnitude changed); a training step moves few codes there. Nothing else may write
/// <c>Mask</c>.
[<Sealed>]
type BudgetMaskCache(mask: float32[], fanIn: int, inputs: CodeRange, accumulatorBits: int) =
    do
        Guard.inRange "fanIn" 1 Int32.MaxValue fanIn
        if mask.Length % fanIn <> 0 then
            raise (InvalidShapeException("mask", $"has %d{mask.Length} values, not a multiple of fanIn = %d{fanIn}"))
    let rows = mask.Length / fanIn
    let codes = Array.zeroCreate<float32> mask.Length
    let biases = Array.zeroCreate<int64> rows
    let boundaries = Array.zeroCreate<int> rows
    let mutable filled = false

    /// The masks, maintained in place.
    member _.Mask = mask

    /// True when this cache serves a layer of this fan-in, input range and accumulator width.
    member _.Serves(fanIn': int, inputs': CodeRange, accumulatorBits': int) =
        fanIn' = fanIn && inputs' = inputs && accumulatorBits' = accumulatorBits

    /// Brings <c>Mask</c> up to date with the layer's weight codes (rows × fanIn, unmasked) and bias codes; returns
    /// how many neurons were recomputed.
    member _.Update(weightCodes: ReadOnlySpan<float32>, biasCodes: ReadOnlySpan<int64>) : int =
        Guard.sameLength "weightCodes" mask.Length weightCodes.Length
        Guard.sameLength "biasCodes" rows biasCodes.Length
        let mutable recomputed = 0
        for i in 0 .. rows - 1 do
            let fresh = weightCodes.Slice(i * fanIn, fanIn)
            if not filled
               || biasCodes[i] <> biases[i]
               || Pruning.mayChangeMask boundaries[i] (ReadOnlySpan(codes, i * fanIn, fanIn)) fresh then
                boundaries[i] <- Pruning.budgetMaskInto fresh biasCodes[i] inputs accumulatorBits (Span(mask, i * fanIn, fanIn))
                fresh.CopyTo(Span(codes, i * fanIn, fanIn))
                biases[i] <- biasCodes[i]
                recomputed <- recomputed + 1
        filled <- true
        recomputed
