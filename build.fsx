// FheNet build script (plain F#, no FAKE): dotnet fsi build.fsx [target] [-- script arguments]
//   restore     dotnet tool restore (paket), then restore every project
//   build       restore, then build the solution in Release
//   test        build, run every test project, then the package test (below); print "Tests: N passed, N failed,
//               N skipped" (the default)
//   pack        build and pack the packable projects into artifacts/packages (FheNet.Core, FheNet.CSharp, the
//               FheNet.Server tool), each with its .snupkg; -- -p:Version=X.Y.Z sets the version
//   package-test  build, pack, then test the packages as a user gets them (a fresh app from the packed folder)
//   bench       build, run Scripts/bench.fsx (arguments after -- go to the script)
//   quickstart  build, run Scripts/quickstart.fsx (the README's main job)
//   run NAME    build, run Scripts/NAME.fsx (arguments after -- go to the script), e.g. run classifier_comparison

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Xml.Linq
open System.Text.RegularExpressions

let root = __SOURCE_DIRECTORY__
let solution = "Functional.sln"

/// Expecto test projects: each ends its output with a "Tests: N passed, N failed, N skipped" line.
let expectoProjects = [ "tests/FheNet.Tests"; "tests/FheNet.Server.Tests"; "tests/FheNet.Cluster.Tests" ]

/// xUnit test projects (the C# façade as a C# user sees it), run by `dotnet test`.
let xunitProjects = [ "tests/FheNet.CSharp.Tests"; "tests/FheNet.MLNet.Tests" ]

let fail (message: string) =
    eprintfn "build.fsx: %s" message
    exit 1

/// Runs a command in a directory with extra environment variables, streaming its output; returns the exit code and
/// the output lines.
let execIn (directory: string) (environment: (string * string) list) (program: string) (args: string list) =
    let info = ProcessStartInfo(program, WorkingDirectory = directory, UseShellExecute = false)
    args |> List.iter info.ArgumentList.Add
    info.RedirectStandardOutput <- true
    info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] <- "1"
    info.Environment["DOTNET_NOLOGO"] <- "1"
    environment |> List.iter (fun (name, value) -> info.Environment[name] <- value)
    use proc = Process.Start info
    let lines = ResizeArray<string>()
    let mutable line = proc.StandardOutput.ReadLine()
    while not (isNull line) do
        Console.Out.WriteLine line
        lines.Add line
        line <- proc.StandardOutput.ReadLine()
    proc.WaitForExit()
    proc.ExitCode, List.ofSeq lines

/// Runs a command in the repository root (see execIn).
let exec program args = execIn root [] program args

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

/// (exit code, passed, failed, skipped) of a finished test run, read from its summary line.
let summarize (project: string) (code: int, lines: string list) (summary: Regex) passedGroup failedGroup skippedGroup =
    match lines |> List.tryFindBack summary.IsMatch with
    | Some line ->
        let m = summary.Match line
        let count (group: int) = int m.Groups[group].Value
        code, count passedGroup, count failedGroup, count skippedGroup
    | None -> fail $"%s{project} printed no test summary (exit code %d{code})"

/// Runs one test project and returns (exit code, passed, failed, skipped) read from its summary line.
let runTests (project: string) (args: string list) summary passedGroup failedGroup skippedGroup =
    summarize project (exec "dotnet" args) summary passedGroup failedGroup skippedGroup

let packagesFolder = Path.Combine(root, "artifacts", "packages")

/// Packs every packable project of the solution (restored) into artifacts/packages, emptied first.
let pack (args: string list) =
    if Directory.Exists packagesFolder then
        Directory.Delete(packagesFolder, true)
    dotnet ([ "pack"; solution; "-c"; "Release"; "--no-restore"; "-o"; packagesFolder ] @ args)

/// The version of package `id` in artifacts/packages, read from its file name.
let packedVersion (id: string) =
    let fileName = Regex($@"^%s{Regex.Escape id}\.(\d+\.\d+\.\d+[^/]*)\.nupkg$")
    let versions =
        Directory.GetFiles packagesFolder
        |> Array.choose (fun file ->
            let m = fileName.Match(Path.GetFileName file)
            if m.Success then Some m.Groups[1].Value else None)
    match versions with
    | [| version |] -> version
    | _ -> fail $"artifacts/packages should hold one %s{id} package, found %d{versions.Length}"

/// A version as NuGet writes it in a .nuspec: at least three numbers ("5.0" -> "5.0.0").
let nugetVersion (version: string) =
    match version.Split '.' with
    | parts when parts.Length < 3 && not (version.Contains '-') ->
        String.Join(".", Array.append parts (Array.create (3 - parts.Length) "0"))
    | _ -> version

/// The package versions paket.lock resolved, by id.
let lockedVersions () =
    let entry = Regex(@"^    (\S+) \(([^)]+)\)$")
    File.ReadAllLines(Path.Combine(root, "paket.lock"))
    |> Array.choose (fun line ->
        let m = entry.Match line
        if m.Success then Some(m.Groups[1].Value, nugetVersion m.Groups[2].Value) else None)
    |> Map.ofArray

/// Every dependency of every package in artifacts/packages: (package file, dependency id, version range).
let packedDependencies () =
    [ for file in Directory.GetFiles(packagesFolder, "*.nupkg") do
          use archive = ZipFile.OpenRead file
          let nuspec = archive.Entries |> Seq.find (fun entry -> entry.FullName.EndsWith ".nuspec")
          use stream = nuspec.Open()
          for dependency in XDocument.Load(stream).Descendants() do
              if dependency.Name.LocalName = "dependency" then
                  Path.GetFileName file, dependency.Attribute("id").Value, dependency.Attribute("version").Value ]

/// The packed dependencies are the versions of paket.lock as lower bounds (FheNet's own: the packed version), so a
/// user's restore gets what the tests ran against.
let checkPackedDependencies version =
    let locked = lockedVersions ()
    let dependencies = packedDependencies ()
    let wrong =
        dependencies
        |> List.filter (fun (_, id, range) ->
            let expected = if id.StartsWith "FheNet." then Some version else locked.TryFind id
            expected <> Some range)
    for file, id, range in wrong do
        printfn "  %s depends on %s %s; paket.lock has %s" file id range (defaultArg (locked.TryFind id) "no version")
    let ok = not dependencies.IsEmpty && wrong.IsEmpty
    printfn "%s: the %d dependencies of the packages are paket.lock's versions as lower bounds"
        (if ok then "passed" else "FAILED") dependencies.Length
    0, (if ok then 1 else 0), (if ok then 0 else 1), 0

let packageTestFolder = Path.Combine(root, "artifacts", "package-test")
let packageTestSummary = Regex(@"^Package test: (\d+) passed, (\d+) failed, (\d+) skipped\s*$")

/// A NuGet.config that takes FheNet.* only from artifacts/packages and everything else from nuget.org, into a
/// packages cache of its own (so a package cached by another build is never used).
let packageTestNuGetConfig (cache: string) =
    $"""<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <config>
    <add key="globalPackagesFolder" value="%s{cache}" />
  </config>
  <packageSources>
    <clear />
    <add key="fhenet-local" value="%s{packagesFolder}" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" protocolVersion="3" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="fhenet-local">
      <package pattern="FheNet.*" />
    </packageSource>
    <packageSource key="nuget.org">
      <package pattern="*" />
    </packageSource>
  </packageSourceMapping>
</configuration>
"""

/// The packages as a user gets them: a fresh console app (a copy of tests/PackageSmoke) that references FheNet.CSharp
/// from artifacts/packages and runs the README's C# example, then the FheNet.Server tool installed into a tool path
/// and run with --help; and the packages' dependencies checked against paket.lock. Returns one test result per part:
/// (exit code, passed, failed, skipped).
let packageTest () =
    let version = packedVersion "FheNet.CSharp"
    let dependencyResult = checkPackedDependencies version
    let app = Path.Combine(packageTestFolder, "app")
    let tools = Path.Combine(packageTestFolder, "tools")
    // Third-party packages stay cached between runs; FheNet's (same version, new bits) never do.
    let cache = Path.Combine(packageTestFolder, "nuget-packages")
    for folder in [ app; tools ] do
        if Directory.Exists folder then
            Directory.Delete(folder, true)
    Directory.CreateDirectory cache |> ignore
    for stale in Directory.GetDirectories(cache, "fhenet.*") do
        Directory.Delete(stale, true)
    Directory.CreateDirectory app |> ignore
    for file in Directory.GetFiles(Path.Combine(root, "tests", "PackageSmoke")) do
        File.Copy(file, Path.Combine(app, Path.GetFileName file))
    let config = Path.Combine(app, "NuGet.config")
    File.WriteAllText(config, packageTestNuGetConfig cache)
    let nuget = [ "NUGET_PACKAGES", cache ]
    let inApp args = execIn app nuget "dotnet" args
    let appResult =
        let restored = inApp [ "restore"; "--configfile"; config; $"-p:FheNetVersion=%s{version}" ]
        let built =
            if fst restored <> 0 then restored
            else inApp [ "build"; "-c"; "Release"; "--no-restore"; $"-p:FheNetVersion=%s{version}" ]
        if fst built <> 0 then
            printfn "FAILED: the app that references the FheNet.CSharp %s package restores and builds" version
            fst built, 0, 1, 0
        else
            let dll = Path.Combine(app, "bin", "Release", "net10.0", "PackageSmoke.dll")
            let run = execIn app [] "dotnet" [ dll; Path.Combine(root, "data") ]
            summarize "the package test app" run packageTestSummary 1 2 3
    let toolResult =
        let toolVersion = packedVersion "FheNet.Server"
        let installed =
            execIn root nuget "dotnet"
                [ "tool"; "install"; "FheNet.Server"; "--version"; toolVersion; "--tool-path"; tools
                  "--configfile"; config ]
        // The tool's launcher finds the runtime through DOTNET_ROOT when .NET is not in a default location.
        let dotnetRoot = [ "DOTNET_ROOT", Path.GetDirectoryName Environment.ProcessPath ]
        let code, lines =
            if fst installed <> 0 then installed
            else execIn root dotnetRoot (Path.Combine(tools, "fhenet-server")) [ "--help" ]
        let ok = code = 0 && lines |> List.exists (fun line -> line.StartsWith "usage: fhenet-server --model DIR")
        printfn "%s: the FheNet.Server %s tool installs and prints its usage (fhenet-server --help)"
            (if ok then "passed" else "FAILED") toolVersion
        code, (if ok then 1 else 0), (if ok then 0 else 1), 0
    [ dependencyResult; appResult; toolResult ]

/// Prints the summed summary line of test results; exits non-zero on a failure or a crash.
let report (watch: Stopwatch) results =
    let passed = results |> List.sumBy (fun (_, p, _, _) -> p)
    let failed = results |> List.sumBy (fun (_, _, f, _) -> f)
    let skipped = results |> List.sumBy (fun (_, _, _, s) -> s)
    let crashed = results |> List.exists (fun (code, _, f, _) -> code <> 0 && f = 0)
    printfn "All tests finished in %.0f s." watch.Elapsed.TotalSeconds
    printfn "Tests: %d passed, %d failed, %d skipped" passed failed skipped
    if failed > 0 || crashed then exit 1

let test () =
    build ()
    let watch = Stopwatch.StartNew()
    let results =
        [ for project in expectoProjects ->
              runTests project [ "run"; "--project"; project; "-c"; "Release"; "--no-build" ] expectoSummary 1 2 3
          for project in xunitProjects ->
              runTests project [ "test"; project; "-c"; "Release"; "--no-build"; "--nologo" ] vstestSummary 2 1 3 ]
    pack [ "--no-build" ]
    report watch (results @ packageTest ())

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
| "pack" ->
    restore ()
    pack scriptArgs // builds, with the version given
| "package-test" ->
    build ()
    let watch = Stopwatch.StartNew()
    pack [ "--no-build" ]
    report watch (packageTest ())
| "bench" -> script "bench" scriptArgs
| "quickstart" -> script "quickstart" scriptArgs
| "run" ->
    match scriptArgs with
    | name :: args when IO.File.Exists(IO.Path.Combine(root, "Scripts", $"%s{name}.fsx")) ->
        script name (match args with "--" :: a -> a | a -> a)
    | _ -> fail "run needs the name of a script in Scripts/, e.g. dotnet fsi build.fsx run classifier_comparison -- --help"
| other -> fail $"unknown target '%s{other}'; use restore, build, test, pack, package-test, bench, quickstart or run NAME"
