// The "classifier comparison" figure: on moons, circles and a linearly separable set, the decision boundaries of the
// float network, the quantized network and the encrypted one (FheMode.Simulate over the whole grid, FheMode.Execute
// for a few test points, drawn as diamonds coloured by their encrypted prediction), with test accuracies. Also writes
// the training curves, the accuracy against the bit-width (moons) and the per-layer bit-widths of a compiled circuit.
// dotnet fsi Scripts/classifier_comparison.fsx [-- --epochs 60 --execute 3 --grid 80 --sweep true]
// Exits 1 if an encrypted prediction differs from the clear one.
#if !FHENET_BUILT
#load "launch.fsx"
Launch.run () // builds when needed, then runs this file again with FHENET_BUILT defined
#else
#load "prelude.fsx" "ui.fsx" "plots.fsx"

open System
open Prelude
open FheNet.Estimators

let epochs = int (argOr "epochs" "60")
let executed = int (argOr "execute" "3")
let steps = int (argOr "grid" "80")
let sweep = bool.Parse(argOr "sweep" "true")

/// Two Gaussian clouds on either side of a line, 300 training and 100 test rows. Deterministic (training data,
/// not a secret: System.Random is fine here).
let linear () =
    let rng = Random 1
    let gauss () = sqrt (-2.0 * log (1.0 - rng.NextDouble())) * cos (2.0 * Math.PI * rng.NextDouble())
    let rows =
        Array.init 400 (fun i ->
            let c = i % 2
            let shift = if c = 0 then -1.0 else 1.0
            [| float32 (shift + gauss ()); float32 (0.5 * shift + gauss ()) |], c)
    let x, y = Array.unzip rows
    x[..299], y[..299], x[300..], y[300..]

let fromData name =
    let train, test = readCsv (dataFile $"%s{name}_train.csv"), readCsv (dataFile $"%s{name}_test.csv")
    train.Features, train.Target |> Array.map int, test.Features, test.Target |> Array.map int

let accuracy (predicted: int[]) (truth: int[]) =
    float (Array.fold2 (fun n a b -> if a = b then n + 1 else n) 0 predicted truth) / float truth.Length

let settingsWith (extra: (string * string) list) (onEpoch: FheNet.Nn.EpochReport -> unit) =
    let s =
        NeuralNetSettings.defaults
        |> NeuralNetSettings.setMany (
            [ "module__n_layers", "3"; "max_epochs", string epochs; "validation_fraction", "0.15" ] @ extra
            |> List.map (fun (k, v) -> k, box v)
        )
    { s with OnEpoch = Some onEpoch }

type Outcome =
    { Name: string
      Grid: float[] * float[]
      Test: float32[][] * int[]
      Panels: Plots.Panel list
      Model: NeuralNetClassifier<int>
      FloatAccuracy: float
      Mismatches: int }

let run (name: string, (xTrain: float32[][], yTrain, xTest: float32[][], yTest)) =
    Ui.heading name
    let model, twin =
        Ui.training $"fit %s{name} (QAT + float twin)" epochs 2 (fun onEpoch ->
            NeuralNetClassifier<int>(settingsWith [] onEpoch).FitBenchmark(xTrain, yTrain))
    Ui.step "compile" (fun () -> model.Compile xTrain) |> ignore
    let xs, ys, points = Plots.grid (Array.append xTrain xTest) steps
    let classOne (p: float[][]) = p |> Array.map (fun r -> r[1])
    let simulated =
        Ui.step $"simulate %d{points.Length} grid points" (fun () -> model.PredictProba(points, FheMode.Simulate))
    Ui.step "key generation" (fun () -> model.Keygen()) |> ignore
    // Test rows spread over the set, run encrypted one by one.
    let chosen = Array.init executed (fun k -> xTest[k * xTest.Length / executed])
    let encrypted, _ =
        Ui.perSample $"execute %d{chosen.Length} test rows" chosen (fun row ->
            (model.Predict([| row |], FheMode.Execute))[0])
    let mismatches = Array.fold2 (fun n a b -> if a = b then n else n + 1) 0 encrypted (model.Predict chosen)
    let agreement = $"%d{chosen.Length - mismatches}/%d{chosen.Length}"
    let floatAccuracy = twin.Score(xTest, yTest)
    let quantized = model.Score(xTest, yTest)
    let simulatedAccuracy = accuracy (model.Predict(xTest, FheMode.Simulate)) yTest
    Ui.line
        "test accuracy"
        $"float %.3f{floatAccuracy}, quantized %.3f{quantized}, FHE simulate %.3f{simulatedAccuracy}"
    Ui.line "encrypted = clear" agreement
    { Name = name
      Grid = xs, ys
      Test = xTest, yTest
      Panels =
        [ { Title = $"%s{name}: test data"; Probability = None; Highlighted = [||] }
          { Title = $"float: %.3f{floatAccuracy}"
            Probability = Some(classOne (twin.PredictProba points))
            Highlighted = [||] }
          { Title = $"quantized 3-bit: %.3f{quantized}"
            Probability = Some(classOne (model.PredictProba points))
            Highlighted = [||] }
          { Title = $"FHE: %.3f{simulatedAccuracy} (◆ encrypted, %s{agreement} = clear)"
            Probability = Some(classOne simulated)
            Highlighted = Array.zip chosen encrypted } ]
      Model = model
      FloatAccuracy = floatAccuracy
      Mismatches = mismatches }

let outcomes =
    [ "moons", fromData "moons"; "circles", fromData "circles"; "linear", linear () ] |> List.map run

Ui.heading "figures"
let boundaries =
    Plots.decisionBoundaries
        "classifier_comparison.png"
        (outcomes |> List.map (fun o -> o.Grid))
        (outcomes |> List.map (fun o -> o.Test))
        (outcomes |> List.map (fun o -> o.Panels))
Ui.line "decision boundaries" boundaries
let histories = [ for o in outcomes -> $"%s{o.Name} (3-bit QAT)", o.Model.History ]
Ui.line "training curves" (Plots.trainingCurves "classifier_training.png" "accuracy" histories)
let moons = List.head outcomes
Ui.line
    "circuit bit-widths"
    (Plots.bitWidthReport "classifier_bit_widths.png" "moons, 3 layers, 3/3 bits" (moons.Model.CircuitReport()))

if sweep then
    let xTrain, yTrain, xTest, yTest = fromData "moons"
    let bits = [| 2..6 |]
    let scores =
        bits
        |> Array.map (fun b ->
            Ui.training $"fit moons at %d{b} bits" epochs 1 (fun onEpoch ->
                let settings = settingsWith [ "module__n_w_bits", string b; "module__n_a_bits", string b ] onEpoch
                NeuralNetClassifier<int>(settings).Fit(xTrain, yTrain).Score(xTest, yTest)))
    let title = "moons: test accuracy against bit-width"
    Ui.line
        "accuracy vs bits"
        (Plots.scoreVsBits "classifier_accuracy_vs_bits.png" title "accuracy" bits scores moons.FloatAccuracy)

let mismatches = outcomes |> List.sumBy (fun o -> o.Mismatches)
if mismatches > 0 then
    Ui.error $"%d{mismatches} encrypted predictions differ from the clear ones"
    exit 1
#endif
