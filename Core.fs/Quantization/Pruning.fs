namespace FheNet.Quantization

open System
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

    /// The per-neuron budget: keeps the largest-magnitude integer weights of one neuron, dropping the smallest until
    /// the exact accumulator range (bias included) fits <c>accumulatorBits</c>. Keeps more weights than
    /// <see cref="M:FheNet.Quantization.PruningModule.maxFanIn"/> whenever the weights are not all at full scale.
    let budgetMask (weights: int[]) (bias: int64) (inputs: CodeRange) (accumulatorBits: int) : bool[] =
        Guard.inRange "accumulatorBits" 2 62 accumulatorBits
        let minAcc, maxAcc = accumulatorLimits accumulatorBits
        if bias < minAcc || bias > maxAcc then
            let bitLength = 64 - int (Int64.LeadingZeroCount(abs bias))
            raise (AccumulatorTooSmallException(accumulatorBits, bitLength + 1))
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
