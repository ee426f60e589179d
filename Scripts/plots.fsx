// PNG figures shared by the scripts (ScottPlot 5 on SkiaSharp; these pinned versions render on Linux without
// system libraries). Every function writes one file under out/ and returns its full path.
#load "prelude.fsx"
#r "nuget: SkiaSharp, 3.119.4"
#r "nuget: SkiaSharp.NativeAssets.Linux.NoDependencies, 3.119.4"
#r "nuget: HarfBuzzSharp, 8.3.1.5"
#r "nuget: HarfBuzzSharp.NativeAssets.Linux, 8.3.1.5"
#r "nuget: ScottPlot, 5.1.59"

open System
open System.IO
open ScottPlot
open FheNet.Nn
open FheNet.Fhe

/// out/ at the repository root (ignored by git), created on demand.
let outFile (name: string) =
    let folder = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, "..", "out"))
    Directory.CreateDirectory folder |> ignore
    Path.Combine(folder, name)

/// Class colours: blue for class 0, red for class 1 (and the two ends of the probability map).
let classColors = [| Color.FromHex "#2166ac"; Color.FromHex "#b2182b" |]

/// A square grid over the bounding box of the rows, padded by half a unit: the axis values and the grid points,
/// row-major from the top (largest y) so that point k is heatmap cell (k / steps, k % steps).
let grid (rows: float32[][]) (steps: int) =
    let range j =
        let values = rows |> Array.map (fun r -> float r[j])
        Array.min values - 0.5, Array.max values + 0.5
    let (x0, x1), (y0, y1) = range 0, range 1
    let xs = Array.init steps (fun i -> x0 + (x1 - x0) * float i / float (steps - 1))
    let ys = Array.init steps (fun i -> y1 - (y1 - y0) * float i / float (steps - 1))
    let points = [| for y in ys do for x in xs -> [| float32 x; float32 y |] |]
    xs, ys, points

/// Scatter of 2-D rows coloured by class (0 or 1).
let private addPoints (plot: Plot) (rows: float32[][]) (labels: int[]) (size: float32) =
    for c in 0..1 do
        let chosen = Array.indexed rows |> Array.filter (fun (i, _) -> labels[i] = c) |> Array.map snd
        let column j = chosen |> Array.map (fun (r: float32[]) -> float r[j])
        let s = plot.Add.ScatterPoints(column 0, column 1)
        s.Color <- classColors[c]
        s.MarkerSize <- size
        s.MarkerShape <- MarkerShape.FilledCircle
        s.MarkerLineColor <- Colors.White
        s.MarkerLineWidth <- 0.5f

/// One panel of a decision-boundary figure: the probability of class 1 over the grid as a heatmap (optional),
/// the test points, and optionally highlighted points (e.g. those run encrypted) as large outlined diamonds.
type Panel =
    { Title: string
      Probability: float[] option
      Highlighted: (float32[] * int)[] }

/// A figure of decision boundaries: one row per dataset, one column per panel.
let decisionBoundaries
    (name: string)
    (grids: (float[] * float[]) list)
    (points: (float32[][] * int[]) list)
    (panels: Panel list list)
    =
    let multiplot = Multiplot()
    let rows, columns = panels.Length, (List.head panels).Length
    multiplot.AddPlots(rows * columns) |> ignore
    multiplot.Layout <- MultiplotLayouts.Grid(rows, columns)
    let mutable index = 0
    for (xs, ys), (rowsOf, labels), panelRow in List.zip3 grids points panels do
        for panel in panelRow do
            let plot = multiplot.GetPlot index
            index <- index + 1
            panel.Probability
            |> Option.iter (fun p ->
                let cells = Array2D.init ys.Length xs.Length (fun i j -> p[i * xs.Length + j])
                let map = plot.Add.Heatmap cells
                let pale (c: Color) = c.Lighten 0.55
                map.Colormap <-
                    Colormaps.CustomInterpolated([| pale classColors[0]; Colors.White; pale classColors[1] |])
                map.ManualRange <- Nullable(Range(0.0, 1.0))
                map.Extent <- Nullable(CoordinateRect(xs[0], Array.last xs, Array.last ys, ys[0])))
            addPoints plot rowsOf labels 4.0f
            for row, label in panel.Highlighted do
                let m = plot.Add.Marker(float row[0], float row[1])
                m.Shape <- MarkerShape.FilledDiamond
                m.Size <- 13.0f
                m.Color <- classColors[label]
                m.MarkerStyle.LineColor <- Colors.Black
                m.MarkerStyle.LineWidth <- 1.5f
            plot.Title(panel.Title, 12.0f)
            plot.Axes.SetLimits(xs[0], Array.last xs, Array.last ys, ys[0])
    let path = outFile name
    multiplot.SavePng(path, 360 * columns, 310 * rows) |> ignore
    path

/// Training curves of the validation run (a refit on every row follows it by default): train and validation loss per
/// epoch on the left axis, the validation metric on the right.
let trainingCurves (name: string) (metricName: string) (histories: (string * EpochReport list) list) =
    let multiplot = Multiplot()
    multiplot.AddPlots histories.Length |> ignore
    multiplot.Layout <- MultiplotLayouts.Grid(1, histories.Length)
    histories
    |> List.iteri (fun k (title, history) ->
        let plot = multiplot.GetPlot k
        let history = history |> List.filter (fun r -> not r.Refit)
        let epochs = history |> List.map (fun r -> float r.Epoch) |> Array.ofList
        let train = plot.Add.ScatterLine(epochs, history |> List.map (fun r -> r.TrainLoss) |> Array.ofList)
        train.LegendText <- "train loss"
        let valid = history |> List.choose (fun r -> r.ValidLoss)
        if valid.Length = epochs.Length then
            let v = plot.Add.ScatterLine(epochs, Array.ofList valid)
            v.LegendText <- "valid loss"
            let metric = plot.Add.ScatterLine(epochs, history |> List.choose (fun r -> r.ValidMetric) |> Array.ofList)
            metric.LegendText <- $"valid %s{metricName}"
            metric.Axes.YAxis <- plot.Axes.Right
            plot.Axes.Right.Label.Text <- metricName
            // The epoch of lowest validation loss: the length of the refit on every row.
            let best = plot.Add.VerticalLine(float (history |> List.minBy (fun r -> r.ValidLoss.Value)).Epoch)
            best.LinePattern <- LinePattern.Dashed
            best.LegendText <- "best epoch"
        plot.Axes.Bottom.Label.Text <- "epoch"
        plot.Axes.Left.Label.Text <- "loss"
        plot.Title(title, 12.0f)
        plot.ShowLegend(Edge.Bottom) |> ignore)
    let path = outFile name
    multiplot.SavePng(path, 480 * histories.Length, 400) |> ignore
    path

/// Test score against the weight/activation bit-width, with the float network's score as a reference line.
let scoreVsBits
    (name: string)
    (title: string)
    (metricName: string)
    (bits: int[])
    (scores: float[])
    (floatScore: float)
    =
    let plot = new Plot()
    let s = plot.Add.Scatter(bits |> Array.map float, scores)
    s.LegendText <- "quantized (integer model = FHE)"
    s.MarkerSize <- 8.0f
    let reference = plot.Add.HorizontalLine floatScore
    reference.LegendText <- "float network"
    reference.LinePattern <- LinePattern.Dashed
    plot.Axes.Bottom.Label.Text <- "weight and activation bits"
    plot.Axes.Left.Label.Text <- $"test %s{metricName}"
    plot.Axes.Bottom.SetTicks(bits |> Array.map float, bits |> Array.map string)
    plot.Title title
    plot.ShowLegend(Alignment.LowerRight) |> ignore
    let path = outFile name
    plot.SavePng(path, 640, 420) |> ignore
    path

/// The per-layer bit-widths of a compiled circuit: accumulator bits, bits rounded away, bits the table reads.
let bitWidthReport (name: string) (title: string) (report: CircuitReport) =
    let plot = new Plot()
    let layers = report.Layers |> Array.ofList
    let series =
        [ "accumulator bits", (fun (l: LayerReport) -> l.AccumulatorBits)
          "rounded away", (fun l -> l.RoundedBits)
          "table lookup bits", (fun l -> l.LookupBits) ]
    series
    |> List.iteri (fun k (label, value) ->
        let bars =
            layers
            |> Array.map (fun l ->
                Bar(Position = float l.Layer + 0.25 * float (k - 1), Value = float (value l), Size = 0.22))
        let color = plot.Add.Palette.GetColor k
        for bar in bars do
            bar.FillColor <- color
        let b = plot.Add.Bars bars
        b.LegendText <- label)
    let ticks = layers |> Array.map (fun l -> float l.Layer)
    let labels = layers |> Array.map (fun l -> $"layer %d{l.Layer}\n%d{l.Lookups} lookups, %d{l.Bootstraps} PBS")
    plot.Axes.Bottom.SetTicks(ticks, labels)
    plot.Axes.Left.Label.Text <- "bits"
    plot.Axes.Left.TickGenerator <- TickGenerators.NumericFixedInterval 1.0
    let highest = layers |> Array.map (fun l -> l.AccumulatorBits) |> Array.max
    plot.Axes.SetLimitsY(0.0, float highest + 3.0)
    plot.Title $"%s{title}: %d{report.BootstrapsPerSample} bootstraps per sample"
    plot.ShowLegend(Alignment.UpperLeft) |> ignore
    let path = outFile name
    plot.SavePng(path, 640, 420) |> ignore
    path
