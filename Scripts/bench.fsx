// Benchmarks: dotnet fsi build.fsx bench [-- --all]
// Prints one JSON object per line with at least `name` and `median_ms`.
#load "prelude.fsx"

open System
open System.Diagnostics
open System.Text.Json
open Prelude
open FheNet.Quantization

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

/// Median CPU time of `runs` calls after one warm-up call (this process's processor time: on a loaded shared
/// machine it tracks what one idle core would take better than wall time does).
let medianCpu runs (work: unit -> unit) =
    let proc = Process.GetCurrentProcess()
    work ()
    let times =
        Array.init runs (fun _ ->
            proc.Refresh()
            let before = proc.TotalProcessorTime
            work ()
            proc.Refresh()
            (proc.TotalProcessorTime - before).TotalMilliseconds)
    Array.sortInPlace times
    times[runs / 2]

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

quantizationBench ()

/// Quantization-aware training speed: 10 epochs, batch 64, n_layers 3, 3/3 bits, on 1347 × 64 synthetic rows with
/// 10 classes (hidden 256), the PyTorch peer's workload; plus the float twin and integer-model predict throughput.
let trainingBench () =
    let rng = FheNet.Numerics.TrainingRng 42UL
    let classes = 10
    let centres = Array.init classes (fun _ -> Array.init 64 (fun _ -> rng.NextGaussian()))
    let y = Array.init 1347 (fun i -> i % classes)
    let x = y |> Array.map (fun c -> Array.init 64 (fun j -> float32 (centres[c][j] + 2.0 * rng.NextGaussian())))
    let settings threads =
        { FheNet.Estimators.NeuralNetSettings.defaults with BatchSize = Some 64; Threads = threads }
    let fit threads quantized () =
        let model = FheNet.Estimators.NeuralNetClassifier<int>(settings threads)
        if quantized then model.Fit(x, y) |> ignore else model.FitBenchmark(x, y) |> ignore
    // The PyTorch peer's QAT variant also prunes to an 8-bit accumulator per neuron.
    let fitBudget () =
        FheNet.Estimators.NeuralNetClassifier<int>({ settings 1 with AccumulatorBits = Some 8 }).Fit(x, y) |> ignore
    report
        "train/qat-3bit-acc8/1thread"
        (median 5 fitBudget)
        [ "cpu_ms", box (Math.Round(medianCpu 5 fitBudget, 1)); "epochs", box 10; "rows", box 1347 ]
    for threads in [ 1; 2 ] do
        report
            $"train/qat-3bit/%d{threads}thread"
            (median 5 (fit threads true))
            [ "cpu_ms", box (Math.Round(medianCpu 5 (fit threads true), 1)); "epochs", box 10; "rows", box 1347 ]
    // FitBenchmark trains both; the float twin's time is the difference.
    let both, quantizedOnly = median 5 (fit 1 false), median 5 (fit 1 true)
    let bothCpu, quantizedCpu = medianCpu 5 (fit 1 false), medianCpu 5 (fit 1 true)
    report
        "train/float/1thread"
        (both - quantizedOnly)
        [ "cpu_ms", box (Math.Round(bothCpu - quantizedCpu, 1)); "epochs", box 10; "rows", box 1347 ]
    let model = FheNet.Estimators.NeuralNetClassifier<int>(settings 1).Fit(x, y)
    let integer = model.IntegerModel.Value
    for threads in [ 1; 2 ] do
        let ms = median 5 (fun () -> FheNet.Integer.IntegerModel.predict threads integer x |> ignore)
        report $"predict/integer/%d{threads}thread" ms [ ("rows_per_s", box (Math.Round(1347.0 / (ms / 1000.0)))) ]

trainingBench ()
