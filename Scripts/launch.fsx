// The first half of every runnable script. fsi resolves a script's `#r` references before any of its code runs, so a
// script cannot build the library it references. A script started directly (`dotnet fsi Scripts/NAME.fsx`) therefore
// loads only this file: it builds the solution when a library is missing or older than its sources
// (`dotnet fsi build.fsx build`), then runs the same script again with FHENET_BUILT defined, which compiles the
// script's real body, forwarding the arguments, the console and the exit code. `dotnet fsi build.fsx run NAME` builds
// first and defines FHENET_BUILT itself. From the REPL, build once and `#load "Scripts/prelude.fsx"`.
module Launch

open System
open System.Diagnostics
open System.IO

let private root = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, ".."))

/// The built libraries the scripts load, each with the project folder whose sources it is built from.
let private libraries =
    [ "Core.fs/bin/Release/net10.0/FheNet.Core.dll", "Core.fs"
      "Server/bin/Release/net10.0/FheNet.Server.dll", "Server"
      "Cluster.Grains/bin/Release/net10.0/FheNet.Cluster.Grains.dll", "Cluster.Grains"
      "Cluster/bin/Release/net10.0/FheNet.Cluster.dll", "Cluster" ]

let private newestSource (folder: string) =
    Directory.EnumerateFiles(Path.Combine(root, folder), "*", SearchOption.AllDirectories)
    |> Seq.filter (fun f ->
        let ext = Path.GetExtension f
        (ext = ".fs" || ext = ".fsproj" || ext = ".cs" || ext = ".csproj")
        && not (f.Contains $"%c{Path.DirectorySeparatorChar}obj%c{Path.DirectorySeparatorChar}")
        && not (f.Contains $"%c{Path.DirectorySeparatorChar}bin%c{Path.DirectorySeparatorChar}"))
    |> Seq.map File.GetLastWriteTimeUtc
    |> Seq.fold max DateTime.MinValue

/// True when a library is missing or one of its sources changed after it was built.
let private needsBuild () =
    libraries
    |> List.exists (fun (dll, folder) ->
        let path = Path.Combine(root, dll)
        not (File.Exists path) || File.GetLastWriteTimeUtc path < newestSource folder)

let private runDotnet (args: string list) =
    let info = ProcessStartInfo("dotnet", WorkingDirectory = root, UseShellExecute = false)
    args |> List.iter info.ArgumentList.Add
    info.Environment["DOTNET_NOLOGO"] <- "1"
    use proc = Process.Start info
    proc.WaitForExit()
    proc.ExitCode

/// Builds when needed, then runs the script fsi was started with again, with FHENET_BUILT defined and the same
/// arguments; exits with its exit code.
let run () =
    if needsBuild () then
        eprintfn "FheNet: the library is missing or out of date; building it first (dotnet fsi build.fsx build)"
        let code = runDotnet [ "fsi"; "--quiet"; "build.fsx"; "build" ]
        if code <> 0 then
            eprintfn "FheNet: the build failed (exit code %d); fix it, then run this script again" code
            exit code
    let script = Path.GetFullPath fsi.CommandLineArgs[0]
    let args = fsi.CommandLineArgs |> Array.skip 1 |> List.ofArray
    exit (runDotnet ([ "fsi"; "--quiet"; "--define:FHENET_BUILT"; script; "--" ] @ args))
