// The regression counterpart of classifier_comparison.fsx: on three 1-D curves (a sine, a parabola, a line, each with
// noise), the fitted curves of the float network, the quantized network and the encrypted one (FheMode.Simulate over
// the whole x range, FheMode.Execute for a few test points, drawn as diamonds), with test R². Also writes the
// training curves, R² against the bit-width (sine) and the per-layer bit-widths of a compiled circuit.
// dotnet fsi Scripts/regressor_comparison.fsx [-- --epochs 100 --execute 3 --multiplier 8 --sweep true]
// Exits 1 if an encrypted prediction differs from the clear one.
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx" "ui.fsx" "plots.fsx"

open System
open Prelude
open ScottPlot
open FheNet.Estimators

let epochs = int (argOr "epochs" "100")
let executed = int (argOr "execute" "3")
let multiplier = argOr "multiplier" "8"
let sweep = bool.Parse(argOr "sweep" "true")

/// 300 noisy samples of f on [-3, 3]: 225 for training, 75 for testing. Deterministic (training data, not a secret:
/// System.Random is fine here).
let curve (seed: int) (noise: float) (f: float -> float) =
    let rng = Random seed
    let gauss () = sqrt (-2.0 * log (1.0 - rng.NextDouble())) * cos (2.0 * Math.PI * rng.NextDouble())
    let x = Array.init 300 (fun _ -> -3.0 + 6.0 * rng.NextDouble())
    let y = x |> Array.map (fun v -> f v + noise * gauss ())
    x[..224], y[..224], x[225..], y[225..]

let datasets =
    [ "sine", curve 1 0.15 (fun x -> sin (1.5 * x))
      "parabola", curve 2 0.4 (fun x -> 0.5 * x * x - 1.0)
      "line", curve 3 0.5 (fun x -> 0.8 * x + 0.3) ]

let rows (x: float[]) = x |> Array.map (fun v -> [| float32 v |])

let r2 (predicted: float[]) (truth: float[]) =
    let mean = Array.average truth
    let residual = Array.fold2 (fun acc p t -> acc + (p - t) ** 2.0) 0.0 predicted truth
    1.0 - residual / (truth |> Array.sumBy (fun t -> (t - mean) ** 2.0))

let settingsWith (extra: (string * string) list) (onEpoch: FheNet.Nn.EpochReport -> unit) =
    let s =
        NeuralNetSettings.defaults
        |> NeuralNetSettings.setMany (
            [ "module__n_layers", "3"; "module__n_hidden_neurons_multiplier", multiplier; "max_epochs", string epochs
              "validation_fraction", "0.15" ]
            @ extra
            |> List.map (fun (k, v) -> k, box v)
        )
    { s with OnEpoch = Some onEpoch }

type Outcome =
    { Name: string
      Model: NeuralNetRegressor
      FloatScore: float
      Mismatches: int }

let figure = Multiplot()
figure.AddPlots datasets.Length |> ignore
figure.Layout <- MultiplotLayouts.Grid(1, datasets.Length)

let run (k: int) (name: string, (xTrain: float[], yTrain: float[], xTest: float[], yTest: float[])) =
    Ui.heading name
    let standardize = standardizer (rows xTrain)
    let train, test = standardize (rows xTrain), standardize (rows xTest)
    let model, twin =
        Ui.training $"fit %s{name} (QAT + float twin)" epochs 2 (fun onEpoch ->
            NeuralNetRegressor(settingsWith [] onEpoch).FitBenchmark(train, yTrain))
    Ui.step "compile" (fun () -> model.Compile train) |> ignore
    // The training range: beyond it accumulators can exceed the calibrated bounds and wrap around in FHE.
    let lo, hi = Array.min xTrain, Array.max xTrain
    let xs = Array.init 300 (fun i -> lo + (hi - lo) * float i / 299.0)
    let grid = standardize (rows xs)
    let simulated = Ui.step $"simulate %d{xs.Length} points" (fun () -> model.Predict(grid, FheMode.Simulate))
    Ui.step "key generation" (fun () -> model.Keygen()) |> ignore
    let chosen = Array.init executed (fun i -> (i + 1) * xTest.Length / (executed + 1))
    let encrypted, _ =
        Ui.perSample $"execute %d{chosen.Length} test rows" chosen (fun i ->
            (model.Predict([| test[i] |], FheMode.Execute))[0])
    let clear = model.Predict(chosen |> Array.map (fun i -> test[i]))
    let mismatches = Array.fold2 (fun n a b -> if a = b then n else n + 1) 0 encrypted clear
    let floatScore, quantized = twin.Score(test, yTest), model.Score(test, yTest)
    let simulatedScore = r2 (model.Predict(test, FheMode.Simulate)) yTest
    Ui.line "test R²" $"float %.3f{floatScore}, quantized %.3f{quantized}, FHE simulate %.3f{simulatedScore}"
    Ui.line "encrypted = clear" $"%d{chosen.Length - mismatches}/%d{chosen.Length}"
    let plot = figure.GetPlot k
    let data = plot.Add.ScatterPoints(xTest, yTest)
    data.Color <- Colors.Gray.WithAlpha 0.6
    data.MarkerSize <- 4.0f
    data.LegendText <- "test data"
    let line (label: string) (ys: float[]) (color: Color) (pattern: LinePattern) =
        let s = plot.Add.ScatterLine(xs, ys)
        s.LegendText <- label
        s.Color <- color
        s.LineWidth <- 2.0f
        s.LinePattern <- pattern
    line $"float (R² %.3f{floatScore})" (twin.Predict grid) (Colors.Black) LinePattern.Solid
    line $"quantized 3-bit (R² %.3f{quantized})" (model.Predict grid) (Plots.classColors[0]) LinePattern.Solid
    line $"FHE simulate (R² %.3f{simulatedScore})" simulated (Plots.classColors[1]) LinePattern.Dashed
    let points = plot.Add.ScatterPoints(chosen |> Array.map (fun i -> xTest[i]), encrypted)
    points.MarkerShape <- MarkerShape.FilledDiamond
    points.MarkerSize <- 13.0f
    points.Color <- Plots.classColors[1]
    points.MarkerLineColor <- Colors.Black
    points.MarkerLineWidth <- 1.5f
    points.LegendText <- $"encrypted (%d{chosen.Length - mismatches}/%d{chosen.Length} = clear)"
    plot.Title(name, 12.0f)
    plot.ShowLegend(Edge.Bottom) |> ignore
    { Name = name; Model = model; FloatScore = floatScore; Mismatches = mismatches }

let outcomes = datasets |> List.mapi run

Ui.heading "figures"
let path = Plots.outFile "regressor_comparison.png"
figure.SavePng(path, 520 * datasets.Length, 560) |> ignore
Ui.line "fitted curves" path
let histories = [ for o in outcomes -> $"%s{o.Name} (3-bit QAT)", o.Model.History ]
Ui.line "training curves" (Plots.trainingCurves "regressor_training.png" "R²" histories)
let sine = List.head outcomes
Ui.line
    "circuit bit-widths"
    (Plots.bitWidthReport "regressor_bit_widths.png" "sine, 3 layers, 3/3 bits" (sine.Model.CircuitReport()))

if sweep then
    let xTrain, yTrain, xTest, yTest = snd (List.head datasets)
    let standardize = standardizer (rows xTrain)
    let bits = [| 2..6 |]
    let scores =
        bits
        |> Array.map (fun b ->
            Ui.training $"fit sine at %d{b} bits" epochs 1 (fun onEpoch ->
                let settings = settingsWith [ "module__n_w_bits", string b; "module__n_a_bits", string b ] onEpoch
                let model = NeuralNetRegressor(settings).Fit(standardize (rows xTrain), yTrain)
                model.Score(standardize (rows xTest), yTest)))
    let title = "sine: test R² against bit-width"
    Ui.line "R² vs bits" (Plots.scoreVsBits "regressor_r2_vs_bits.png" title "R²" bits scores sine.FloatScore)

let mismatches = outcomes |> List.sumBy (fun o -> o.Mismatches)
if mismatches > 0 then
    Ui.error $"%d{mismatches} encrypted predictions differ from the clear ones"
    exit 1
#endif
