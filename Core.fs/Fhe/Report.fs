namespace FheNet.Fhe

open System
open System.Text
open FheNet.Tfhe

/// One layer of a circuit report.
type LayerReport =
    { Layer: int
      /// Table lookups (one per neuron; 0 for the last layer).
      Lookups: int
      /// Programmable bootstraps: the lookups and those of exact rounding and two-step reads.
      Bootstraps: int
      AccumulatorBits: int
      RoundedBits: int
      /// Bits of the table's index (the rounded accumulator).
      LookupBits: int
      /// For a table read in two steps, the bits of its window (the final lookup reads one more); 0 when one lookup
      /// reads all LookupBits.
      WindowBits: int
      Nu: float
      /// Bootstraps × measured milliseconds per bootstrap / threads, when a measurement is given.
      EstimatedMilliseconds: float option
      /// Wall time of this layer in an encrypted run, when one is given.
      MeasuredMilliseconds: float option }

/// What a compiled circuit costs: per layer and in total, with its parameter set and key sizes.
type CircuitReport =
    { Layers: LayerReport list
      Parameters: TfheParameters
      BootstrapsPerSample: int
      Log2PError: float
      /// Seeded (compressed) evaluation key: bootstrapping key n·(k+1)·ℓ·N and keyswitching key k·N·ℓ_ks u64 bodies.
      CompressedEvaluationKeyBytes: int64
      /// The Fourier bootstrapping key and full keyswitching key a server holds in memory.
      EvaluationKeyBytes: int64
      /// An encrypted row is seeded: one 16-byte seed per row (the masks are derived from it) and one u64 body per
      /// feature.
      InputBytesPerFeature: int }

    /// A plain-text table of the report.
    override r.ToString() =
        let text = StringBuilder()
        let p = r.Parameters
        text.AppendLine(
            $"parameters %s{p.Name}: n=%d{p.LweDimension} k=%d{p.GlweDimension} N=%d{p.PolynomialSize} "
            + $"pbs %d{p.PbsBaseLog}x%d{p.PbsLevel} ks %d{p.KsBaseLog}x%d{p.KsLevel}, p_error 2^%.1f{r.Log2PError} per bootstrap"
        )
        |> ignore
        text.AppendLine("layer  lookups  bootstraps  acc bits  rounded  table bits  window    nu   est ms   measured ms") |> ignore
        let ms (v: float option) = v |> Option.map (sprintf "%.1f") |> Option.defaultValue "-"
        let window bits = if bits = 0 then "-" else string bits
        for l in r.Layers do
            text.AppendLine(
                $"%5d{l.Layer}  %7d{l.Lookups}  %10d{l.Bootstraps}  %8d{l.AccumulatorBits}  %7d{l.RoundedBits}  %10d{l.LookupBits}  %6s{window l.WindowBits}  %5.1f{l.Nu}  %7s{ms l.EstimatedMilliseconds}  %12s{ms l.MeasuredMilliseconds}"
            )
            |> ignore
        text.AppendLine(
            $"bootstraps per sample %d{r.BootstrapsPerSample}; evaluation key %.1f{float r.CompressedEvaluationKeyBytes / 1048576.0} MiB compressed, "
            + $"%.1f{float r.EvaluationKeyBytes / 1048576.0} MiB in memory; %d{r.InputBytesPerFeature} B per encrypted feature (+ a 16 B seed per row)"
        )
        |> ignore
        text.ToString()

module CircuitReport =

    /// The report of a circuit; `millisecondsPerBootstrap` (e.g. FheServer.bootstrapMilliseconds) and `threads`
    /// give estimates, `measuredSeconds` (from FheServer.evaluateProfiled) measured times per layer.
    let create (circuit: Circuit) (millisecondsPerBootstrap: float option) (threads: int) (measuredSeconds: float[] option) =
        let p = circuit.Parameters
        let n, k, bigN = int64 p.LweDimension, int64 p.GlweDimension, int64 p.PolynomialSize
        let bsk = n * (k + 1L) * int64 p.PbsLevel * bigN
        let ksk = k * bigN * int64 p.KsLevel
        { Layers =
            circuit.Layers
            |> Array.map (fun l ->
                let bootstraps = l.BootstrapsFor circuit.Rounding
                { Layer = l.Layer
                  Lookups = (if l.HasTables then l.Neurons else 0)
                  Bootstraps = bootstraps
                  AccumulatorBits = l.AccumulatorBits
                  RoundedBits = l.Shift
                  LookupBits = l.LookupBits
                  WindowBits = l.WindowBits
                  Nu = l.Nu
                  EstimatedMilliseconds =
                    millisecondsPerBootstrap |> Option.map (fun ms -> ms * float bootstraps / float (max 1 threads))
                  MeasuredMilliseconds = measuredSeconds |> Option.map (fun s -> s[l.Layer] * 1000.0) })
            |> List.ofArray
          Parameters = p
          BootstrapsPerSample = circuit.BootstrapsPerSample
          Log2PError = circuit.Log2PError
          CompressedEvaluationKeyBytes = 8L * (bsk + ksk)
          EvaluationKeyBytes = 8L * (bsk * (k + 1L) + ksk * (n + 1L))
          InputBytesPerFeature = 8 }
