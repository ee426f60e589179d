// Benchmarks: dotnet fsi build.fsx bench [-- --all]
// Only one KS-PBS timing on a given parameter set (a compiled circuit's, for the node-tfhe peer's `custom:` runs):
//   dotnet fsi Scripts/bench.fsx -- --set n,k,N,pbsBaseLog,pbsLevel,ksBaseLog,ksLevel
// Only the QAT fits with and without the accumulator budget (see training_speed.fsx): -- --only qat
// Prints one JSON object per line with at least `name` and `median_ms`.
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx"

open System
open System.Diagnostics
open System.Text.Json
open Prelude
open FheNet.Quantization
open FheNet.Tfhe

/// Median wall time of `runs` calls after one warm-up call.
let median runs (work: unit -> unit) =
    work ()
    let times =
        Array.init runs (fun _ ->
            let sw = Stopwatch.StartNew()
            work ()
            sw.Elapsed.TotalMilliseconds)
    Array.sortInPlace times
    times[runs / 2]

/// Medians of the wall and CPU times (ms) of `runs` calls after one warm-up call, from the same calls (CPU time is
/// this process's processor time: on a loaded shared machine it tracks what one idle core would take better than wall
/// time does).
let medianWallCpu runs (work: unit -> unit) =
    let proc = Process.GetCurrentProcess()
    work ()
    let times =
        Array.init runs (fun _ ->
            proc.Refresh()
            let cpu = proc.TotalProcessorTime
            let sw = Stopwatch.StartNew()
            work ()
            let wall = sw.Elapsed.TotalMilliseconds
            proc.Refresh()
            wall, (proc.TotalProcessorTime - cpu).TotalMilliseconds)
    let middle (xs: float[]) = Array.sort xs |> fun sorted -> sorted[runs / 2]
    middle (Array.map fst times), middle (Array.map snd times)

let report (name: string) (ms: float) (extra: (string * obj) list) =
    let fields = dict ([ "name", box name; "median_ms", box (Math.Round(ms, 4)) ] @ extra)
    printfn "%s" (JsonSerializer.Serialize fields)

let quantizationBench () =
    let n = 1 <<< 20
    let values = Array.init n (fun i -> float32 (sin (float i)))
    let codes = Array.zeroCreate<int> n
    let q = Quantizer.symmetric 4 true false (Scale.PowerOfTwo -3)
    let ms = median 21 (fun () -> Quantizer.quantizeInto q (ReadOnlySpan values) (Span codes))
    report "quantize/1M-float32" ms [ "ns_per_value", box (Math.Round(ms * 1e6 / float n, 3)) ]

/// The noise model against every preset's published log2 p_fail, and the optimizer's time and choice per precision.
let tfheAnalysisBench () =
    for p in Presets.all @ Presets.testing do
        let mutable modelled = 0.0
        let ms = median 101 (fun () -> modelled <- NoiseModel.log2PFailAtMaxNoiseLevel p)
        report
            $"noise-model/%s{p.Name}"
            ms
            [ "modelled_log2_pfail", box (Math.Round(modelled, 4))
              "published_log2_pfail", box p.PublishedLog2PFail
              "delta", box (Math.Round(modelled - p.PublishedLog2PFail, 5)) ]
    // The first call also builds the decomposition fronts it caches.
    let cold = Stopwatch.StartNew()
    Optimizer.optimizeLog2 4 16.0 -128.0 |> ignore
    report "optimizer/first-call" cold.Elapsed.TotalMilliseconds []
    for bits in 1..8 do
        let nu = float (1 <<< bits)
        // A distinct p_error per run defeats the per-request cache, so each run searches.
        let mutable run = 0
        let ms =
            median 11 (fun () ->
                run <- run + 1
                Optimizer.optimizeLog2 bits nu (-128.0 - float run * 1e-9) |> ignore)
        let set = Optimizer.optimizeLog2 bits nu -128.0
        report
            $"optimizer/p%d{bits}"
            ms
            [ "nu", box nu
              "set", box set.Name
              "cost_millions", box (Math.Round(Optimizer.cost set / 1e6, 2))
              "log2_pfail", box (Math.Round(set.PublishedLog2PFail, 3)) ]

/// Minimum wall time of `runs` calls: on a machine shared with other jobs the least disturbed run.
let mutable lastMin = 0.0

/// `median` after at least a second of warm-up calls, so the JIT has promoted every method on the path; the
/// minimum of the same runs is left in `lastMin`.
let warmedMedian runs (work: unit -> unit) =
    let warm = Stopwatch.StartNew()
    while warm.Elapsed.TotalSeconds < 1.0 do
        work ()
    let times =
        Array.init runs (fun _ ->
            let sw = Stopwatch.StartNew()
            work ()
            sw.Elapsed.TotalMilliseconds)
    Array.sortInPlace times
    lastMin <- times[0]
    times[runs / 2]

let minField () = "min_ms", box (Math.Round(lastMin, 4))

/// TFHE engine: FFT, key generation and sizes, keyswitch, PBS and KS-PBS per preset (one thread), PBS throughput on
/// every core. Anchors: TFHE-rs 1.7.0 native, one thread, AMD EPYC 9R45 (Zen 5) (TFHE.md §4.1).
let tfheEngineBench (all: bool) =
    let plan = FftPlan.ForSize 2048
    let rng = AesCtrGenerator.Secret()
    let digits = Array.init 2048 (fun _ -> int64 (rng.NextUInt64() % (1UL <<< 23)) - (1L <<< 22))
    // The bootstrap's own buffers, which start on 64-byte boundaries.
    let scratch = BootstrapScratch(1, 2048, 1)
    let fourier, at = scratch.Fourier, scratch.FourierDigitsOffset
    let torus, torusAt = scratch.Accumulator, scratch.AccumulatorOffset
    for path in SimdPath.supported do
        // One call is far below the timer's resolution: time batches of 1000. The backward transform overwrites its
        // input, so it is timed as forward + backward minus forward.
        let perCall work = warmedMedian 21 (fun () -> for _ in 1..1000 do work ()) / 1000.0
        let fwd = perCall (fun () -> plan.ForwardInteger(path, digits, 0, fourier, at))
        let roundTrip = perCall (fun () -> plan.ForwardInteger(path, digits, 0, fourier, at); plan.BackwardAddTorus(path, fourier, at, torus, torusAt))
        report $"fft-1024/forward/%A{path}" fwd [ "us", box (Math.Round(fwd * 1000.0, 3)); "note", box "N=2048 negacyclic = 1024-point complex FFT, incl. i64->f64 and twist" ]
        report $"fft-1024/backward/%A{path}" (roundTrip - fwd) [ "us", box (Math.Round((roundTrip - fwd) * 1000.0, 3)); "note", box "incl. untwist, f64->torus and add" ]
    let presets =
        [ "2bit", Presets.tuniformM1C1, (4.55, 5.72)
          "4bit", Presets.tuniformM2C2, (5.64, 7.28) ]
        @ (if all then [ "6bit", Presets.tuniformM3C3, (52.9, 60.8); "8bit", Presets.tuniformM4C4, (773.0, 870.0) ] else [])
    // Fourier BSK + seeded BSK bodies + plain KSK, held together while the key is expanded.
    let keyBytes (p: TfheParameters) =
        let k1, n, bigN = int64 (p.GlweDimension + 1), int64 p.LweDimension, int64 p.PolynomialSize
        8L * (n * k1 * k1 * int64 p.PbsLevel * bigN + n * k1 * int64 p.PbsLevel * bigN + int64 p.BigLweDimension * int64 p.KsLevel * (n + 1L))
    let availableBytes () =
        IO.File.ReadAllLines "/proc/meminfo"
        |> Array.tryFind (fun l -> l.StartsWith "MemAvailable:")
        |> Option.map (fun l -> int64 (l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024L)
        |> Option.defaultValue Int64.MaxValue
    let benchPreset (label: string) (p: TfheParameters) (nativePbs: float, nativeKsPbs: float) =
        let total = Stopwatch.StartNew()
        let ck = ClientKey.generate p
        let compressed = CompressedServerKey.generate ck
        let generated = total.Elapsed.TotalMilliseconds
        let sk = CompressedServerKey.decompress compressed
        let keygenMs = total.Elapsed.TotalMilliseconds
        report $"keygen/%s{label}" keygenMs [ "compressed_ms", box (Math.Round(generated, 1)); "decompress_ms", box (Math.Round(keygenMs - generated, 1)); "runs", box 1 ]
        report
            $"key-size/%s{label}"
            0.0
            [ "server_key_bytes", box sk.SizeBytes
              "compressed_server_key_bytes", box compressed.SizeBytes
              "fourier_bsk_bytes", box (8L * int64 sk.Bootstrap.Data.Length)
              "ksk_bytes", box (8L * int64 sk.Keyswitch.Data.Length)
              "big_lwe_ciphertext_bytes", box (8 * (p.BigLweDimension + 1)) ]
        let runs = match label with "6bit" -> 7 | "8bit" -> 3 | _ -> 31
        let table = Pbs.lookupTable p (fun i -> int64 ((3 * i + 1) % p.PlaintextModulus))
        let m = int64 (p.PlaintextModulus / 2 - 1)
        let ct = Lwe.encrypt ck m
        let small = Pbs.keyswitch sk ct
        let check (out: LweCiphertext) = Lwe.decrypt ck out = (3L * m + 1L) % int64 p.PlaintextModulus
        let ks = warmedMedian runs (fun () -> Pbs.keyswitch sk ct |> ignore)
        report $"keyswitch/%s{label}" ks [ minField (); "tfhe_rs_native_ms", box (Math.Round(nativeKsPbs - nativePbs, 2)) ]
        let pbs = warmedMedian runs (fun () -> Pbs.bootstrap sk table small |> ignore)
        report $"pbs/%s{label}" pbs [ minField (); "tfhe_rs_native_ms", box nativePbs; "ratio_to_native", box (Math.Round(pbs / nativePbs, 2)); "correct", box (check (Pbs.bootstrap sk table small)) ]
        let kspbs = warmedMedian runs (fun () -> Pbs.apply sk table ct |> ignore)
        report $"ks-pbs/%s{label}" kspbs [ minField (); "tfhe_rs_native_ms", box nativeKsPbs; "ratio_to_native", box (Math.Round(kspbs / nativeKsPbs, 2)); "correct", box (check (Pbs.apply sk table ct)) ]
        if label = "4bit" then
            let batch = Array.init 32 (fun _ -> Lwe.encrypt ck m)
            let wall = warmedMedian 5 (fun () -> Pbs.applyMany sk table batch |> ignore)
            let perPbs = wall / float batch.Length
            report
                $"pbs-throughput/4bit/%d{Environment.ProcessorCount}threads"
                perPbs
                [ "ks_pbs_per_second", box (Math.Round(1000.0 / perPbs, 1)); "batch", box batch.Length; "note", box "median_ms = wall time per KS-PBS, batch of 32 over all cores" ]

    for label, p, natives in presets do
        let needed = keyBytes p
        let available = availableBytes ()
        if float needed * 1.25 > float available then
            let note = $"skipped: keys need about %.1f{float needed / 1073741824.0} GiB (Fourier BSK + seeded BSK + KSK), %.1f{float available / 1073741824.0} GiB available"
            printfn "%s" (JsonSerializer.Serialize(dict [ "name", box $"ks-pbs/%s{label}"; "median_ms", null; "note", box note ]))
        else
            GC.Collect()
            benchPreset label p natives

/// The engine against the noise model: PBS output variance over 100 bootstraps of the 4-bit preset (every
/// coefficient of the rotated accumulator), and the failure rate of 10,000 KS-PBS (five key pairs) at the weak set
/// with p_fail ≈ 1e-2.
let tfheNoiseCheck () =
    let meanSquare (xs: float[]) = xs |> Array.averageBy (fun x -> x * x)
    let p = Presets.tuniformM2C2
    let ck = ClientKey.generate p
    let sk = ServerKey.ofClientKey ck
    let watch = Stopwatch.StartNew()
    let samples = NoiseMeasurement.pbsOutputNoise ck sk 100
    let measured, model = meanSquare samples, NoiseModel.pbsVariance p
    report
        "noise-check/pbs-variance/4bit"
        watch.Elapsed.TotalMilliseconds
        [ "measured_log2", box (Math.Round(Math.Log2 measured, 3)); "model_log2", box (Math.Round(Math.Log2 model, 3)); "ratio", box (Math.Round(measured / model, 3)); "samples", box samples.Length ]
    let weak = Presets.weakForFailureRate
    let watch = Stopwatch.StartNew()
    // Five fresh key pairs × 2,000: one key pair's rate varies by about ±30 % with its keyswitching key's noise.
    let rate =
        List.init 5 (fun _ ->
            let ck = ClientKey.generate weak
            NoiseMeasurement.failureRate ck (ServerKey.ofClientKey ck) 2_000)
        |> List.average
    let predicted = (NoiseModel.lookupNoise weak (NoiseModel.freshVariance weak.GlweNoise)).PFail
    report "noise-check/failure-rate/weak-1e-2" watch.Elapsed.TotalMilliseconds [ "measured", box rate; "predicted", box (Math.Round(predicted, 5)); "bootstraps", box 10_000 ]


/// Quantization-aware training speed: 10 epochs, n_layers 3, 3/3 bits, on 1347 × 64 synthetic rows with 10 classes
/// (hidden 256), the PyTorch peer's workload.
let qatData () =
    let rng = FheNet.Numerics.TrainingRng 42UL
    let classes = 10
    let centres = Array.init classes (fun _ -> Array.init 64 (fun _ -> rng.NextGaussian()))
    let y = Array.init 1347 (fun i -> i % classes)
    let x = y |> Array.map (fun c -> Array.init 64 (fun j -> float32 (centres[c][j] + 2.0 * rng.NextGaussian())))
    x, y

/// The peer's work: 10 epochs over every row (no validation split, hence no refit).
let qatSettings threads batch accumulatorBits =
    { FheNet.Estimators.NeuralNetSettings.defaults with
        BatchSize = batch
        Threads = threads
        ValidationFraction = 0.0
        AccumulatorBits = accumulatorBits }

/// QAT fits without and with the accumulator budget (`n_accum_bits` 8, per-neuron pruning, which the PyTorch peer's
/// QAT variant also does), at batch 64 and at the automatic batch size (13 rows for 1347), on 1 and 2 threads; each
/// budget figure also gives what the budget adds to the unbounded fit measured just before it.
let qatBench () =
    let x, y = qatData ()
    for threads in [ 1; 2 ] do
        for batch, batchName in [ Some 64, "batch64"; None, "auto-batch" ] do
            let fit bits () =
                FheNet.Estimators.NeuralNetClassifier<int>(qatSettings threads batch bits).Fit(x, y) |> ignore
            let wall, cpu = medianWallCpu 3 (fit None)
            let fields = [ "cpu_ms", box (Math.Round(cpu, 1)); "epochs", box 10; "rows", box 1347 ]
            report $"train/qat-3bit/%s{batchName}/%d{threads}thread" wall fields
            let budgetWall, budgetCpu = medianWallCpu 3 (fit (Some 8))
            report
                $"train/qat-3bit-acc8/%s{batchName}/%d{threads}thread"
                budgetWall
                [ "cpu_ms", box (Math.Round(budgetCpu, 1))
                  "budget_adds_wall", box (Math.Round(budgetWall / wall - 1.0, 3))
                  "budget_adds_cpu", box (Math.Round(budgetCpu / cpu - 1.0, 3))
                  "epochs", box 10
                  "rows", box 1347 ]

/// The QAT figures, the defaults' fit with its validation split, the float twin and integer-model predict throughput.
let trainingBench () =
    qatBench ()
    let x, y = qatData ()
    let settings threads = qatSettings threads (Some 64) None
    let fit threads quantized () =
        let model = FheNet.Estimators.NeuralNetClassifier<int>(settings threads)
        if quantized then model.Fit(x, y) |> ignore else model.FitBenchmark(x, y) |> ignore
    // The defaults' fit: 10 epochs on four fifths of the rows with validation, then the refit on every row.
    let fitDefaultSplit () =
        FheNet.Estimators.NeuralNetClassifier<int>({ settings 1 with ValidationFraction = 0.2 }).Fit(x, y) |> ignore
    let wall, cpu = medianWallCpu 5 fitDefaultSplit
    report "train/qat-3bit-split-refit/1thread" wall [ "cpu_ms", box (Math.Round(cpu, 1)); "epochs", box 10; "rows", box 1347 ]
    // FitBenchmark trains both; the float twin's time is the difference.
    let (both, bothCpu), (quantizedOnly, quantizedCpu) = medianWallCpu 5 (fit 1 false), medianWallCpu 5 (fit 1 true)
    report
        "train/float/1thread"
        (both - quantizedOnly)
        [ "cpu_ms", box (Math.Round(bothCpu - quantizedCpu, 1)); "epochs", box 10; "rows", box 1347 ]
    let model = FheNet.Estimators.NeuralNetClassifier<int>(settings 1).Fit(x, y)
    let integer = model.IntegerModel.Value
    for threads in [ 1; 2 ] do
        let ms = median 5 (fun () -> FheNet.Integer.IntegerModel.predict threads integer x |> ignore)
        report $"predict/integer/%d{threads}thread" ms [ ("rows_per_s", box (Math.Round(1347.0 / (ms / 1000.0)))) ]


/// One KS-PBS on a parameter set given as n,k,N,pbsBaseLog,pbsLevel,ksBaseLog,ksLevel (TUniform noise at the security
/// minimum): the median on one thread, and per KS-PBS per core with every core bootstrapping.
let ksPbsOnSet (text: string) =
    let n, k, bigN, pbsBase, pbsLevel, ksBase, ksLevel =
        match text.Split ',' |> Array.map int with
        | [| n; k; bigN; pb; pl; kb; kl |] -> n, k, bigN, pb, pl, kb, kl
        | _ -> failwith $"--set %s{text}: expected n,k,N,pbsBaseLog,pbsLevel,ksBaseLog,ksLevel"
    let p = Optimizer.parametersOf NoiseFamily.TUniform "TU_SET" 4 1 n k bigN (pbsBase, pbsLevel) (ksBase, ksLevel)
    let ck = ClientKey.generate p
    let sk = CompressedServerKey.decompress (CompressedServerKey.generate ck)
    let table = Pbs.lookupTable p (fun i -> int64 ((3 * i + 1) % p.PlaintextModulus))
    let ct = Lwe.encrypt ck 1L
    let oneThread = warmedMedian 31 (fun () -> Pbs.apply sk table ct |> ignore)
    let oneMin = lastMin
    let cores = Environment.ProcessorCount
    let batch = Array.init (8 * cores) (fun _ -> Lwe.encrypt ck 1L)
    let perCore = warmedMedian 5 (fun () -> Pbs.applyMany sk table batch |> ignore) * float cores / float batch.Length
    report $"ks-pbs/%s{p.Name}" oneThread [ "min_ms", box (Math.Round(oneMin, 4)); "per_core_ms_all_cores_busy", box (Math.Round(perCore, 3)); "cores", box cores ]

match scriptArgs |> Map.tryFind "set", scriptArgs |> Map.tryFind "only" with
| Some set, _ -> ksPbsOnSet set
| None, Some "qat" -> qatBench ()
| None, _ ->
    quantizationBench ()
    tfheAnalysisBench ()
    trainingBench ()
    tfheEngineBench (fsi.CommandLineArgs |> Array.contains "--all")
    tfheNoiseCheck ()
#endif
