// Training speed of this checkout against an older one and the PyTorch peer, in one run (timings on a shared machine
// are only comparable within a run):
//   dotnet fsi Scripts/training_speed.fsx -- --base /path/to/older/checkout [--repeats 3] [--peer-threads 1,2]
// Each repeat runs `Scripts/bench.fsx -- --only qat` in the older checkout, then in this one, then the peer
// (/work/shared/peers/torch/timing.py, or --peer PATH) on 1 and 2 threads, back to back. Both checkouts must be built
// (`dotnet build Core.fs -c Release`), and the older one must hold this bench.fsx (copy it there). Prints every JSON
// line, then a markdown table of the medians over the repeats.

open System
open System.Diagnostics
open System.IO
open System.Text.Json

let args =
    fsi.CommandLineArgs
    |> Array.skip 1
    |> Array.filter (fun a -> a <> "--")
    |> Array.pairwise
    |> Array.filter (fun (k, _) -> k.StartsWith "--")
    |> Map.ofArray

let here = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, ".."))
let older = args |> Map.tryFind "--base" |> Option.defaultWith (fun () -> failwith "--base PATH (an older checkout) is required")
let repeats = args |> Map.tryFind "--repeats" |> Option.map int |> Option.defaultValue 3
let peer = args |> Map.tryFind "--peer" |> Option.defaultValue "/work/shared/peers/torch/timing.py"
// On a heavily loaded machine the peer's two-thread runs crawl (its thread pool waits for both threads each step).
let peerThreads =
    args |> Map.tryFind "--peer-threads" |> Option.defaultValue "1,2" |> fun s -> s.Split ',' |> Array.map int |> List.ofArray

/// Runs a program and returns the JSON objects it printed, one a line.
let jsonLines (program: string) (arguments: string list) (environment: (string * string) list) (directory: string) =
    let info = ProcessStartInfo(program, WorkingDirectory = directory, UseShellExecute = false, RedirectStandardOutput = true)
    arguments |> List.iter info.ArgumentList.Add
    for key, value in environment do
        info.Environment[key] <- value
    use proc = Process.Start info
    let output = proc.StandardOutput.ReadToEnd()
    proc.WaitForExit()
    if proc.ExitCode <> 0 then failwith $"%s{program} %A{arguments} exited with %d{proc.ExitCode}"
    output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    |> Array.filter (fun line -> line.StartsWith "{")
    |> Array.map (fun line ->
        printfn "%s" line
        JsonDocument.Parse(line).RootElement.Clone())

/// The QAT figures of bench.fsx in a checkout: name -> (wall ms, CPU ms).
let fheNet (checkout: string) =
    jsonLines
        "dotnet"
        [ "fsi"; "--quiet"; "--define:FHENET_BUILT"; Path.Combine(checkout, "Scripts", "bench.fsx"); "--"; "--only"; "qat" ]
        [ ("DOTNET_TC_QuickJitForLoops", "0") ]
        checkout
    |> Array.map (fun e -> e.GetProperty("name").GetString(), (e.GetProperty("median_ms").GetDouble(), e.GetProperty("cpu_ms").GetDouble()))

/// The peer's QAT time (ms) on a thread count.
let peerQat (threads: int) =
    jsonLines
        "/usr/bin/python3"
        [ peer; "--threads"; string threads; "--repeats"; "3" ]
        [ "LD_LIBRARY_PATH", "/usr/lib/x86_64-linux-gnu/openblas-pthread"; "OPENBLAS_NUM_THREADS", string threads ]
        here
    |> Array.find (fun e -> e.GetProperty("variant").GetString() = "qat3")
    |> fun e -> e.GetProperty("median_s").GetDouble() * 1000.0

let runs =
    List.init repeats (fun r ->
        eprintfn "repeat %d of %d" (r + 1) repeats
        let old, current = fheNet older, fheNet here
        old, current, Map.ofList [ for threads in peerThreads -> threads, peerQat threads ])

let median (xs: float list) = List.sort xs |> fun s -> s[s.Length / 2]

/// The median over the repeats of f(old figure, new figure, peer ms), each figure (wall ms, CPU ms).
let overRepeats (name: string) (threads: int) f =
    runs
    |> List.map (fun (old, current, peerMs: Map<int, float>) ->
        f ((Map.ofArray old)[name]) ((Map.ofArray current)[name]) (peerMs.TryFind threads |> Option.defaultValue nan))
    |> median

let names = let _, current, _ = runs.Head in current |> Array.map fst
printfn ""
printfn "| figure | old: wall / CPU | new: wall / CPU | new / old (wall, CPU) | PyTorch QAT, same run | new / PyTorch | old / PyTorch |"
printfn "|---|---|---|---|---|---|---|"
for name in names do
    let threads = if name.EndsWith "2thread" then 2 else 1
    let m f = overRepeats name threads f
    printfn
        "| `%s` | %.0f / %.0f ms | %.0f / %.0f ms | %.2f, %.2f | %.0f ms (%d thread%s) | %.2f | %.2f |"
        name
        (m (fun o _ _ -> fst o)) (m (fun o _ _ -> snd o)) (m (fun _ n _ -> fst n)) (m (fun _ n _ -> snd n))
        (m (fun o n _ -> fst n / fst o)) (m (fun o n _ -> snd n / snd o))
        (m (fun _ _ p -> p)) threads (if threads = 1 then "" else "s")
        (m (fun _ n p -> fst n / p)) (m (fun o _ p -> fst o / p))

// What the budget adds to the unbounded fit of the same batch and threads, per repeat, then the median.
printfn ""
printfn "| budget adds (wall, CPU) | old | new |"
printfn "|---|---|---|"
for name in names |> Array.filter (fun n -> n.Contains "acc8") do
    let unbounded = name.Replace("-acc8", "")
    let adds (pick: float * float -> float) (which: int) =
        runs
        |> List.map (fun (old, current, _) ->
            let figures = Map.ofArray (if which = 0 then old else current)
            pick (figures[name]) / pick (figures[unbounded]) - 1.0)
        |> median
    printfn
        "| `%s` | %+.0f %%, %+.0f %% | %+.0f %%, %+.0f %% |"
        name (100.0 * adds fst 0) (100.0 * adds snd 0) (100.0 * adds fst 1) (100.0 * adds snd 1)
