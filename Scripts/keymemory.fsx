// Peak memory of key generation and preparation against the prepared key, for optimizer-shaped parameter sets of
// growing polynomial size: one fresh process per set, its peak working set (VmHWM) less the runtime's baseline.
// dotnet fsi Scripts/keymemory.fsx -- [--sizes 2048,8192,16384] [--n 900] [--level 2]
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx"

open System
open System.Diagnostics
open Prelude
open FheNet.Tfhe
open FheNet.Fhe

let peakBytes () =
    IO.File.ReadAllLines "/proc/self/status"
    |> Array.find (fun l -> l.StartsWith "VmHWM:")
    |> fun l -> 1024L * int64 (l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1])

let n = int (argOr "n" "900")
let level = int (argOr "level" "2")

match scriptArgs |> Map.tryFind "one" with
| Some size ->
    // The child: generate, expand and hold the keys of one set, then print its peak and the estimate.
    let p = Optimizer.parametersOf NoiseFamily.TUniform "MEASURE" 4 16 n 1 (int size) (15, level) (3, 6)
    GC.Collect()
    let baseline = peakBytes ()
    let watch = Stopwatch.StartNew()
    let client = ClientKey.generate p
    let compressed = CompressedServerKey.generate client
    let server = CompressedServerKey.decompress compressed
    let seconds = watch.Elapsed.TotalSeconds
    let estimate = MemoryEstimate.create p 0 1
    GC.KeepAlive((client, compressed, server))
    printfn "%d\t%d\t%d\t%d\t%.1f\t%.1f" (int size) server.SizeBytes estimate.PeakBytes (peakBytes () - baseline) seconds (MachineSpeed.keygenSeconds p)
| None ->
    printfn "N\tprepared_bytes\testimated_peak\tmeasured_peak\tkeygen_s\testimated_keygen_s"
    for size in (argOr "sizes" "2048,8192,16384").Split ',' do
        let psi = ProcessStartInfo("dotnet", $"fsi --define:FHENET_BUILT %s{__SOURCE_DIRECTORY__}/keymemory.fsx -- --one %s{size} --n %d{n} --level %d{level}")
        psi.RedirectStandardOutput <- true
        use child = Process.Start psi
        let line = child.StandardOutput.ReadToEnd().Trim()
        child.WaitForExit()
        let fields = line.Split('\n') |> Array.last
        printfn "%s" fields
#endif
