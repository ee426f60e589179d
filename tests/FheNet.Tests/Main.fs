module FheNet.Tests.Main

open System
open System.IO
open Expecto

/// Every test list of the project, by layer (the order of Core.fs's folders).
let allTests =
    testList "FheNet" [ Quantization.QuantizerTests.tests; Quantization.CalibrationTests.tests; Quantization.PruningTests.tests ]

[<EntryPoint>]
let main argv =
    let counts = ref (0, 0, 0)
    let record (summary: Impl.TestRunSummary) =
        counts.Value <-
            summary.passed.Length, summary.failed.Length + summary.errored.Length, summary.ignored.Length
    let exitCode =
        runTestsWithCLIArgs [ CLIArguments.Append_Summary_Handler(SummaryHandler record) ] argv allTests
    // Expecto wraps Console.Out and may leave a colour reset on the current line; CI reads a line of its own from the
    // raw standard output.
    Console.Out.Flush()
    use stdout = new StreamWriter(Console.OpenStandardOutput())
    let passed, failed, skipped = counts.Value
    stdout.WriteLine()
    stdout.WriteLine($"Tests: %d{passed} passed, %d{failed} failed, %d{skipped} skipped")
    exitCode
