/// The entry point shared by the Expecto test projects: runs every [<Tests>] value of the entry assembly and ends with
/// the "Tests: N passed, N failed, N skipped" line that build.fsx sums.
module FheNet.Tests.ExpectoMain

open System
open System.IO
open Expecto

[<EntryPoint>]
let main argv =
    let counts = ref (0, 0, 0)
    let record (summary: Impl.TestRunSummary) =
        counts.Value <-
            summary.passed.Length, summary.failed.Length + summary.errored.Length, summary.ignored.Length
    let exitCode =
        // Every value marked [<Tests>] in this assembly runs.
        runTestsInAssemblyWithCLIArgs [ CLIArguments.Append_Summary_Handler(SummaryHandler record) ] argv
    // Expecto wraps Console.Out and may leave a colour reset on the current line; CI reads a line of its own from the
    // raw standard output.
    Console.Out.Flush()
    use stdout = new StreamWriter(Console.OpenStandardOutput())
    let passed, failed, skipped = counts.Value
    stdout.WriteLine()
    stdout.WriteLine($"Tests: %d{passed} passed, %d{failed} failed, %d{skipped} skipped")
    exitCode
