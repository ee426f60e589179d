// FheNet build script (plain F#, no FAKE): dotnet fsi build.fsx [target] [-- script arguments]
//   restore     dotnet tool restore (paket), then restore every project
//   build       restore, then build the solution in Release
//   test        build, run every test project, print "Tests: N passed, N failed, N skipped" (the default)
//   bench       build, run Scripts/bench.fsx (arguments after -- go to the script)
//   quickstart  build, run Scripts/quickstart.fsx (the README's main job)
//   run NAME    build, run Scripts/NAME.fsx (arguments after -- go to the script), e.g. run classifier_comparison

open System
open System.Diagnostics
open System.Text.RegularExpressions

let root = __SOURCE_DIRECTORY__
let solution = "Functional.sln"

/// Expecto test projects: each ends its output with a "Tests: N passed, N failed, N skipped" line.
let expectoProjects = [ "tests/FheNet.Tests"; "tests/FheNet.Server.Tests"; "tests/FheNet.Cluster.Tests" ]

/// xUnit test projects (the C# façade as a C# user sees it), run by `dotnet test`.
let xunitProjects = [ "tests/FheNet.CSharp.Tests" ]

let fail (message: string) =
    eprintfn "build.fsx: %s" message
    exit 1

/// Runs a command in the repository root, streaming its output; returns the exit code and the output lines.
let exec (program: string) (args: string list) =
    let info = ProcessStartInfo(program, WorkingDirectory = root, UseShellExecute = false)
    args |> List.iter info.ArgumentList.Add
    info.RedirectStandardOutput <- true
    info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] <- "1"
    info.Environment["DOTNET_NOLOGO"] <- "1"
    use proc = Process.Start info
    let lines = ResizeArray<string>()
    let mutable line = proc.StandardOutput.ReadLine()
    while not (isNull line) do
        Console.Out.WriteLine line
        lines.Add line
        line <- proc.StandardOutput.ReadLine()
    proc.WaitForExit()
    proc.ExitCode, List.ofSeq lines

let dotnet args =
    let code, _ = exec "dotnet" args
    if code <> 0 then
        fail $"""'dotnet %s{String.Join(" ", List.toArray args)}' exited with %d{code}"""

let restore () =
    dotnet [ "tool"; "restore" ]
    dotnet [ "restore"; solution ]

let build () =
    restore ()
    dotnet [ "build"; solution; "-c"; "Release"; "--no-restore" ]

let expectoSummary = Regex(@"^Tests: (\d+) passed, (\d+) failed, (\d+) skipped\s*$")
let vstestSummary = Regex(@"Failed:\s+(\d+), Passed:\s+(\d+), Skipped:\s+(\d+)")

/// Runs one test project and returns (exit code, passed, failed, skipped) read from its summary line.
let runTests (project: string) (args: string list) (summary: Regex) passedGroup failedGroup skippedGroup =
    let code, lines = exec "dotnet" args
    match lines |> List.tryFindBack summary.IsMatch with
    | Some line ->
        let m = summary.Match line
        let count (group: int) = int m.Groups[group].Value
        code, count passedGroup, count failedGroup, count skippedGroup
    | None -> fail $"%s{project} printed no test summary (exit code %d{code})"

let test () =
    build ()
    let watch = Stopwatch.StartNew()
    let results =
        [ for project in expectoProjects ->
              runTests project [ "run"; "--project"; project; "-c"; "Release"; "--no-build" ] expectoSummary 1 2 3
          for project in xunitProjects ->
              runTests project [ "test"; project; "-c"; "Release"; "--no-build"; "--nologo" ] vstestSummary 2 1 3 ]
    let passed = results |> List.sumBy (fun (_, p, _, _) -> p)
    let failed = results |> List.sumBy (fun (_, _, f, _) -> f)
    let skipped = results |> List.sumBy (fun (_, _, _, s) -> s)
    let crashed = results |> List.exists (fun (code, _, f, _) -> code <> 0 && f = 0)
    printfn "All test projects finished in %.0f s." watch.Elapsed.TotalSeconds
    printfn "Tests: %d passed, %d failed, %d skipped" passed failed skipped
    if failed > 0 || crashed then exit 1

let script name (args: string list) =
    build ()
    // FHENET_BUILT: the library is built, so the script skips its launcher half (Scripts/launch.fsx).
    dotnet ([ "fsi"; "--quiet"; "--define:FHENET_BUILT"; $"Scripts/%s{name}.fsx"; "--" ] @ args)

let argv = fsi.CommandLineArgs |> Array.skip 1 |> List.ofArray
let target, scriptArgs =
    match argv with
    | [] -> "test", []
    | t :: rest -> t, (match rest with "--" :: a -> a | a -> a)

match target with
| "restore" -> restore ()
| "build" -> build ()
| "test" -> test ()
| "bench" -> script "bench" scriptArgs
| "quickstart" -> script "quickstart" scriptArgs
| "run" ->
    match scriptArgs with
    | name :: args when IO.File.Exists(IO.Path.Combine(root, "Scripts", $"%s{name}.fsx")) ->
        script name (match args with "--" :: a -> a | a -> a)
    | _ -> fail "run needs the name of a script in Scripts/, e.g. dotnet fsi build.fsx run classifier_comparison -- --help"
| other -> fail $"unknown target '%s{other}'; use restore, build, test, bench, quickstart or run NAME"
