namespace FheNet.Fhe

open System
open FheNet
open FheNet.Tfhe

/// How much memory FHE keys may take in this process.
module MemoryBudget =

    /// An environment variable that sets the default budget: bytes, or a number with a K, M, G or T suffix (binary).
    [<Literal>]
    let EnvironmentVariable = "FHENET_MEMORY_BUDGET"

    /// The share of the memory available to the process (cgroup limits included) that keys may take by default:
    /// the rest is the runtime, the data and whatever else the process holds.
    [<Literal>]
    let DefaultFraction = 0.5

    /// A budget written as bytes or with a binary K/M/G/T suffix ("6G", "512M", "6GiB").
    let parse (text: string) =
        let cleaned = text.Trim().ToUpperInvariant().TrimEnd('B').TrimEnd('I')
        let scale, digits =
            match (if cleaned.Length = 0 then ' ' else cleaned[cleaned.Length - 1]) with
            | 'K' -> 10, cleaned[.. cleaned.Length - 2]
            | 'M' -> 20, cleaned[.. cleaned.Length - 2]
            | 'G' -> 30, cleaned[.. cleaned.Length - 2]
            | 'T' -> 40, cleaned[.. cleaned.Length - 2]
            | _ -> 0, cleaned
        match Double.TryParse(digits, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
        | true, value when value > 0.0 && Double.IsFinite(Math.ScaleB(value, scale)) -> int64 (Math.ScaleB(value, scale))
        | _ ->
            raise (
                ParameterOutOfRangeException(EnvironmentVariable, text, "a positive number of bytes, optionally with a K, M, G or T suffix (e.g. 6G)")
            )

    /// The default budget: FHENET_MEMORY_BUDGET when set, else DefaultFraction of the memory available to the
    /// process (GC.GetGCMemoryInfo honours cgroup limits and the GC heap hard limit).
    let defaultBytes () =
        match Environment.GetEnvironmentVariable EnvironmentVariable with
        | null
        | "" -> int64 (DefaultFraction * float (GC.GetGCMemoryInfo().TotalAvailableMemoryBytes))
        | text -> parse text

/// The memory a circuit's keys would need exceeds the budget. Raised before anything large is allocated: by key
/// generation, by preparing an evaluation key, by a deployment client or server, and by the compiler when no
/// rounding threshold brings the circuit within the budget.
type FheResourceException(stage: string, requiredBytes: int64, budgetBytes: int64, parameters: string, detail: string) =
    inherit
        InvalidOperationException(
            $"%s{stage} would need about %.2f{float requiredBytes / 1073741824.0} GiB of memory (%s{detail}; parameter set "
            + $"%s{parameters}), over the budget of %.2f{float budgetBytes / 1073741824.0} GiB. Fixes: round every "
            + "accumulator before its lookup to fewer bits (rounding_threshold_bits, e.g. 6), train with fewer "
            + "weight/activation bits, or bound the accumulators with n_accum_bits; or raise the budget ("
            + $"%s{MemoryBudget.EnvironmentVariable} or the MemoryBudgetBytes option) on a machine with more memory."
        )

    /// What would have run: key generation, preparing an evaluation key, compiling…
    member _.Stage = stage
    /// The estimated peak memory, in bytes.
    member _.RequiredBytes = requiredBytes
    /// The budget it exceeds, in bytes.
    member _.BudgetBytes = budgetBytes

/// Memory of a circuit's keys and tables, from its parameter set alone (nothing allocated).
type MemoryEstimate =
    { /// Seeded evaluation key: bootstrapping key n·(k+1)·ℓ·N and keyswitching key k·N·ℓ_ks u64 bodies, two seeds.
      CompressedEvaluationKeyBytes: int64
      /// The evaluation key with its masks: n·(k+1)²·ℓ·N bootstrapping-key and k·N·ℓ_ks·(n+1) keyswitching-key
      /// words (the Fourier bootstrapping key has as many f64 as the standard one has u64).
      ExpandedEvaluationKeyBytes: int64
      /// What a server holds for the circuit: the Fourier bootstrapping key, the expanded keyswitching key, every
      /// lookup table's (k+1)·N-word test polynomial and one bootstrap's buffers per thread.
      PreparedBytes: int64
      /// The client's secret keys (n + k·N words).
      ClientKeyBytes: int64
      /// Key generation then preparation in one process: client key, compressed key and the prepared circuit
      /// together (the Fourier key is built one row at a time from the compressed one, never expanded first).
      PeakBytes: int64 }

module MemoryEstimate =

    /// The estimate for a parameter set, a number of lookup tables held prepared and the worker threads.
    let create (p: TfheParameters) (tables: int) (threads: int) =
        let n, k, bigN = int64 p.LweDimension, int64 p.GlweDimension, int64 p.PolynomialSize
        let bskBodies = n * (k + 1L) * int64 p.PbsLevel * bigN
        let kskBodies = k * bigN * int64 p.KsLevel
        let compressed = 8L * (bskBodies + kskBodies) + 32L
        let expanded = 8L * (bskBodies * (k + 1L) + kskBodies * (n + 1L))
        let glwe = 8L * (k + 1L) * bigN
        // A bootstrap's buffers: the accumulator, its decomposition and the Fourier products, about ℓ + 4 GLWEs.
        let scratch = int64 (max 1 threads) * glwe * int64 (p.PbsLevel + 4)
        let prepared = expanded + int64 tables * glwe + scratch
        let client = 8L * (n + k * bigN)
        { CompressedEvaluationKeyBytes = compressed
          ExpandedEvaluationKeyBytes = expanded
          PreparedBytes = prepared
          ClientKeyBytes = client
          PeakBytes = client + compressed + prepared }

    /// Raises FheResourceException when `required` bytes exceed the budget.
    let ensureWithin (budgetBytes: int64) (stage: string) (p: TfheParameters) (detail: string) (required: int64) =
        if budgetBytes <= 0L then
            raise (ParameterOutOfRangeException("memoryBudgetBytes", budgetBytes, "a positive number of bytes"))
        if required > budgetBytes then
            raise (FheResourceException(stage, required, budgetBytes, p.Name, detail))

    let private gib (bytes: int64) = $"%.2f{float bytes / 1073741824.0} GiB"

    /// The detail of an exception: the sizes that make up the estimate.
    let describe (m: MemoryEstimate) =
        $"evaluation key %s{gib m.CompressedEvaluationKeyBytes} compressed, %s{gib m.ExpandedEvaluationKeyBytes} expanded, "
        + $"%s{gib m.PreparedBytes} prepared with the tables"
