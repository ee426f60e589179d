// Console output shared by the scripts: live progress (Spectre.Console) on a terminal; when the output is
// redirected (a file, a pipe, CI) no live display, only the plain result lines.
#load "prelude.fsx"
#r "nuget: Spectre.Console, 0.57.2"

open System
open System.Diagnostics
open Spectre.Console
open FheNet.Nn

/// True when live displays can render: an interactive terminal, not redirected output.
let live = not Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive

/// A result line: a label and its value.
let line (label: string) (value: string) =
    if live then
        AnsiConsole.MarkupLine $"""[grey]%s{Markup.Escape(label.PadRight 38)}[/] %s{Markup.Escape value}"""
    else
        printfn "%-38s %s" label value

/// A section title.
let heading (text: string) =
    if live then AnsiConsole.Write(Rule($"[bold]%s{Markup.Escape text}[/]").LeftJustified())
    else printfn "== %s" text

/// A line in red on the error stream.
let error (text: string) =
    if live then AnsiConsole.MarkupLine $"[red]%s{Markup.Escape text}[/]" else eprintfn "%s" text

/// Runs one step (compilation, key generation...) under a spinner, then prints its duration.
let step (label: string) (work: unit -> 'a) : 'a =
    let watch = Stopwatch.StartNew()
    let result =
        if live then AnsiConsole.Status().Spinner(Spinner.Known.Dots).Start(Markup.Escape label, fun _ -> work ())
        else work ()
    line label $"%.2f{watch.Elapsed.TotalSeconds} s"
    result

let private progressBar () =
    AnsiConsole
        .Progress()
        .AutoClear(true)
        .Columns(
            TaskDescriptionColumn(Alignment = Justify.Left),
            ProgressBarColumn(),
            PercentageColumn(),
            ElapsedTimeColumn()
        )

let private epochText (r: EpochReport) (epochs: int) (eta: TimeSpan) =
    let valid =
        match r.ValidLoss, r.ValidMetric with
        | Some l, Some m -> $" valid %.3f{l}/%.3f{m}"
        | _ -> ""
    let run = if r.Refit then "refit " else ""
    $"%s{run}%d{r.Epoch}/%d{epochs} loss %.3f{r.TrainLoss}%s{valid} ETA %.0f{eta.TotalSeconds}s"

/// Trains with a live bar. `fit` gets the per-epoch callback to put in the settings' OnEpoch; `fits` is how many
/// trainings of `maxEpochs` it runs (2 for FitBenchmark, which also trains the float twin); each refit on every row
/// after a validation run adds its epochs (the best epoch count) when it starts. Prints the duration and the last
/// epoch's figures.
let training (label: string) (maxEpochs: int) (fits: int) (fit: (EpochReport -> unit) -> 'a) : 'a =
    let mutable epochs = maxEpochs * fits
    let watch = Stopwatch.StartNew()
    let mutable calls = 0
    let mutable last = None
    let mutable best = (infinity, 0)
    // The current run's budget, for the text: the settings' epochs, or the refit's best epoch count.
    let mutable budget = maxEpochs
    let record (r: EpochReport) =
        if r.Epoch = 1 then
            if r.Refit then
                budget <- snd best
                epochs <- epochs + budget
            else
                best <- (infinity, 0)
                budget <- maxEpochs
        match r.ValidLoss with
        | Some l when l < fst best -> best <- (l, r.Epoch)
        | _ -> ()
        calls <- calls + 1
        last <- Some r
        watch.Elapsed / float calls * float (max 0 (epochs - calls))
    let result =
        if live then
            progressBar().Start(fun ctx ->
                let task = ctx.AddTask(Markup.Escape label, maxValue = float epochs)
                let result =
                    fit (fun r ->
                        let eta = record r
                        task.MaxValue <- float epochs
                        task.Value <- float calls
                        task.Description <- Markup.Escape $"%s{label}  %s{epochText r budget eta}")
                task.Value <- task.MaxValue
                result)
        else
            fit (record >> ignore)
    let summary =
        match last with
        | Some r -> $", last epoch: loss %.4f{r.TrainLoss}"
        | None -> ""
    line label $"%.2f{watch.Elapsed.TotalSeconds} s%s{summary}"
    result

/// Runs `predict` on each row in turn with a live bar (samples done, seconds per sample); returns the results and
/// the mean seconds per sample.
let perSample (label: string) (rows: 'row[]) (predict: 'row -> 'out) : 'out[] * float =
    let watch = Stopwatch.StartNew()
    let results =
        if live then
            progressBar().Start(fun ctx ->
                let task = ctx.AddTask(Markup.Escape label, maxValue = float rows.Length)
                rows
                |> Array.mapi (fun i row ->
                    let out = predict row
                    task.Value <- float (i + 1)
                    let perRow = watch.Elapsed.TotalSeconds / float (i + 1)
                    task.Description <- Markup.Escape $"%s{label}  %d{i + 1}/%d{rows.Length}, %.3f{perRow} s/sample"
                    out))
        else
            Array.map predict rows
    let perRow = watch.Elapsed.TotalSeconds / float (max 1 rows.Length)
    line label $"%.2f{watch.Elapsed.TotalSeconds} s, %.3f{perRow} s/sample"
    results, perRow
