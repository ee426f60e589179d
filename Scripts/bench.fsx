// Benchmarks: dotnet fsi build.fsx bench [-- --all]
// Prints one JSON object per line with at least `name` and `median_ms`.
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

quantizationBench ()
tfheAnalysisBench ()
