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
