// The README's main job: dotnet fsi build.fsx quickstart
// Until training and FHE land, it shows the quantization core on a shipped dataset: calibration, error per bit-width,
// power-of-two scales, and the accumulator bound that pruning enforces.
#load "prelude.fsx"

open System
open Prelude
open FheNet.Quantization

let iris = readCsv (dataFile "iris_train.csv")
printfn "iris_train: %d rows, %d features" iris.Features.Length iris.Columns.Length

// Standardize each feature (statistics of the train split), then quantize it per tensor.
let columns =
    Array.init iris.Columns.Length (fun j ->
        let column = iris.Features |> Array.map (fun r -> float r[j])
        let mean = Array.average column
        let std = sqrt (column |> Array.averageBy (fun v -> (v - mean) ** 2.0))
        column |> Array.map (fun v -> float32 ((v - mean) / std)))
let values = Array.concat columns

printfn "\n%-6s %-22s %-12s %-12s" "bits" "scale (power of two)" "RMS error" "max error"
for bits in [ 2; 3; 4; 6; 8 ] do
    let q = Calibration.calibrate (Calibrator.MinMse 200) bits true false true values
    let codes = Quantizer.quantizeArray q values
    let back = Quantizer.dequantizeArray q codes
    let errors = Array.map2 (fun (a: float32) b -> float (a - b)) values back
    let rms = sqrt (errors |> Array.averageBy (fun e -> e * e))
    let scale = match q.Scale with Scale.PowerOfTwo j -> $"2^%d{j} = %g{q.Scale.Value}" | Scale.Real s -> $"%g{s}"
    printfn "%-6d %-22s %-12.4f %-12.4f" bits scale rms (errors |> Array.map abs |> Array.max)

printfn "\nLargest fan-in that can never overflow the accumulator (signed inputs, bias bound 0):"
printfn "%-10s %-10s %-10s %-10s" "w bits" "a bits" "acc bits" "fan-in"
for w, a, acc in [ (3, 3, 8); (4, 4, 10); (3, 3, 12); (2, 2, 6) ] do
    let weights = CodeRange.OfQuantizer(Quantizer.symmetric w true true (Scale.Real 1.0))
    let inputs = CodeRange.OfQuantizer(Quantizer.symmetric a true false (Scale.Real 1.0))
    printfn "%-10d %-10d %-10d %-10d" w a acc (Pruning.maxFanIn weights inputs acc 0L)
