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
      /// Bootstraps × milliseconds per bootstrap (measured with the keys, else estimated from MachineSpeed) /
      /// the threads that share the layer's neurons.
      EstimatedMilliseconds: float option
      /// Wall time of this layer in an encrypted run, when one is given.
      MeasuredMilliseconds: float option }

/// This machine's speed, measured once per process on a small insecure parameter set (a key generated, a few
/// bootstraps timed): what turns a parameter set into estimated seconds before its keys exist.
module MachineSpeed =

    /// Key material that key generation makes and converts: n·(k+1)²·ℓ·N·log2 N bootstrapping-key work and
    /// k·N·ℓ_ks·(n+1) keyswitching-key words.
    let keygenUnits (p: TfheParameters) =
        let n, k, bigN = float p.LweDimension, float p.GlweDimension, float p.PolynomialSize
        n * (k + 1.0) * (k + 1.0) * float p.PbsLevel * bigN * Math.Log2 bigN + k * bigN * float p.KsLevel * (n + 1.0)

    let private calibration =
        lazy
            (let p =
                { Optimizer.parametersOf NoiseFamily.TUniform "SPEED_CALIBRATION" 1 1 512 1 512 (15, 2) (3, 5) with
                    Insecure = true }
             // The first run of each kernel is just-in-time compiled code of the lowest tier: time warmed runs.
             ServerKey.ofClientKey (ClientKey.generate p) |> ignore
             let watch = Diagnostics.Stopwatch.StartNew()
             let key = ServerKey.ofClientKey (ClientKey.generate p)
             let keygenSeconds = watch.Elapsed.TotalSeconds
             let table = Pbs.lookupTableWith p 2 2 int64
             let input: LweCiphertext = { Data = Array.zeroCreate (p.BigLweDimension + 1) }
             Security.Cryptography.RandomNumberGenerator.Fill(Runtime.InteropServices.MemoryMarshal.AsBytes(Span input.Data))
             for _ in 1..10 do
                 Pbs.apply key table input |> ignore
             let times =
                 Array.init 30 (fun _ ->
                     let w = Diagnostics.Stopwatch.StartNew()
                     Pbs.apply key table input |> ignore
                     w.Elapsed.TotalMilliseconds)
             Array.sortInPlace times
             // A low quantile: on a shared machine the slow runs are other processes' time.
             keygenSeconds / keygenUnits p, times[times.Length / 4] / Optimizer.cost p)

    /// Estimated milliseconds of one keyswitch + bootstrap with a parameter set on one thread.
    let bootstrapMilliseconds (p: TfheParameters) = snd calibration.Value * Optimizer.cost p

    /// Estimated seconds to generate, expand and convert a parameter set's keys.
    let keygenSeconds (p: TfheParameters) = fst calibration.Value * keygenUnits p

/// What a compiled circuit costs: per layer and in total, with its parameter set, the memory and time estimated
/// from the parameter set before any key exists, and after a run the measured figures beside them.
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
      InputBytesPerFeature: int
      /// The keys' and tables' memory, estimated from the parameter set.
      Memory: MemoryEstimate
      /// Estimated seconds of key generation and preparation, and of one sample, on this machine (MachineSpeed).
      EstimatedKeygenSeconds: float
      EstimatedSecondsPerSample: float
      /// Measured, once keys exist: key generation and preparation seconds.
      MeasuredKeygenSeconds: float option
      /// Measured after an encrypted run: mean seconds per sample.
      MeasuredSecondsPerSample: float option
      /// Measured once keys exist: the process's peak working set (runtime and data included).
      MeasuredPeakBytes: int64 option
      /// What the rounding threshold costs in accuracy, when one changed the model at compile time
      /// (Compiler.compileWithCost; None for a circuit loaded from disk).
      RoundingCost: RoundingCost option }

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
        let gib (bytes: int64) = $"%.3f{float bytes / 1073741824.0} GiB"
        let measured (v: 'a option) (show: 'a -> string) = v |> Option.map show |> Option.defaultValue "-"
        text.AppendLine(
            $"bootstraps per sample %d{r.BootstrapsPerSample}; %d{r.InputBytesPerFeature} B per encrypted feature (+ a 16 B seed per row)"
        )
        |> ignore
        let m = r.Memory
        text.AppendLine(
            $"evaluation key %s{gib m.CompressedEvaluationKeyBytes} compressed, %s{gib m.ExpandedEvaluationKeyBytes} expanded, "
            + $"%s{gib m.PreparedBytes} prepared with the tables"
        )
        |> ignore
        text.AppendLine("                      estimated    measured") |> ignore
        let keygen = measured r.MeasuredKeygenSeconds (sprintf "%.2f")
        let perSample = measured r.MeasuredSecondsPerSample (sprintf "%.3f")
        text.AppendLine($"keygen + prepare s  %11.2f{r.EstimatedKeygenSeconds}  %10s{keygen}") |> ignore
        text.AppendLine($"seconds per sample  %11.3f{r.EstimatedSecondsPerSample}  %10s{perSample}") |> ignore
        text.AppendLine($"peak memory         %11s{gib m.PeakBytes}  %10s{measured r.MeasuredPeakBytes gib} (measured: the whole process)") |> ignore
        match r.RoundingCost with
        | Some c ->
            text.AppendLine(
                $"rounding threshold %d{c.ThresholdBits} bits: outputs change by %.4f{c.MeanAbsoluteChange} on average, "
                + $"%.4f{c.MaxAbsoluteChange} at most; largest output unchanged on %.1f{100.0 * c.ArgmaxAgreement}%% of %d{c.Rows} calibration rows"
            )
            |> ignore
        | None -> ()
        text.ToString()

module CircuitReport =

    /// The report of a circuit; `millisecondsPerBootstrap` (e.g. FheServer.bootstrapMilliseconds) and `threads`
    /// give per-layer estimates from a measured bootstrap (else from MachineSpeed), `measuredSeconds` (from
    /// FheServer.evaluateProfiled) measured times per layer.
    let create (circuit: Circuit) (millisecondsPerBootstrap: float option) (threads: int) (measuredSeconds: float[] option) =
        let p = circuit.Parameters
        let perBootstrap = millisecondsPerBootstrap |> Option.defaultWith (fun () -> MachineSpeed.bootstrapMilliseconds p)
        // Each layer runs its neurons in parallel, one worker per core.
        let layerMilliseconds (l: LayerCircuit) =
            perBootstrap * float (l.BootstrapsFor circuit.Rounding) / float (max 1 (min threads l.Neurons))
        let memory = circuit.Memory threads
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
                  EstimatedMilliseconds = Some(layerMilliseconds l)
                  MeasuredMilliseconds = measuredSeconds |> Option.map (fun s -> s[l.Layer] * 1000.0) })
            |> List.ofArray
          Parameters = p
          BootstrapsPerSample = circuit.BootstrapsPerSample
          Log2PError = circuit.Log2PError
          CompressedEvaluationKeyBytes = memory.CompressedEvaluationKeyBytes
          EvaluationKeyBytes = memory.ExpandedEvaluationKeyBytes
          InputBytesPerFeature = 8
          Memory = memory
          EstimatedKeygenSeconds = MachineSpeed.keygenSeconds p
          EstimatedSecondsPerSample = (circuit.Layers |> Array.sumBy layerMilliseconds) / 1000.0
          MeasuredKeygenSeconds = None
          MeasuredSecondsPerSample = measuredSeconds |> Option.map Array.sum
          MeasuredPeakBytes = None
          RoundingCost = None }

    /// The report with the measured key-generation seconds and the process's peak working set.
    let withMeasuredKeys (keygenSeconds: float) (report: CircuitReport) =
        { report with
            MeasuredKeygenSeconds = Some keygenSeconds
            MeasuredPeakBytes = Some(Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64) }
