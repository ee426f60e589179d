module FheNet.Tests.Integer.IntegerModelTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open FheNet.Numerics
open FheNet.Autodiff
open FheNet.Quantization
open FheNet.Nn
open FheNet.Integer
open FheNet.Tests.Generators

/// A small random quantized network with random biases, calibrated on random inputs.
let private networkCase =
    gen {
        let! inputDim = Gen.choose (1, 5)
        let! hidden = Gen.choose (1, 8)
        let! layers = Gen.choose (1, 3)
        let! wBits = Gen.choose (2, 6)
        let! aBits = Gen.choose (2, 6)
        let! act = Gen.elements Activation.all
        let! pot = Gen.elements [ true; false ]
        let! accumulator = Gen.elements [ None; Some 12; Some 16 ]
        let! seed = Gen.choose (0, 1_000_000)
        return
            { InputDim = inputDim
              Hidden = hidden
              Outputs = 3
              Layers = layers
              Activation = act
              Quant =
                Some
                    { WeightBits = wBits
                      ActivationBits = aBits
                      AccumulatorBits = accumulator
                      PowerOfTwo = pot } },
            seed
    }

let private randomNetwork (config: NetworkConfig) (seed: int) =
    let rng = TrainingRng(uint64 seed)
    let net = Network.create config rng
    for p in net.Layers do
        for k in 0 .. p.Bias.Value.Length - 1 do
            p.Bias.Value.Data[k] <- float32 (rng.NextGaussian() * 0.5)
    let x = Tensor.init 32 config.InputDim (fun _ _ -> float32 (rng.NextGaussian() * 1.5))
    Network.calibrateScales 1 net x
    Network.updateMasks net
    net, x

[<Tests>]
let tests =
    testList
        "Integer.IntegerModel"
        [ testProperty "integer model accumulators equal the fake-quant forward pass bit for bit, every layer"
          <| forAll networkCase (fun (config, seed) ->
              let net, x = randomNetwork config seed
              let model = IntegerModel.ofNetwork net
              let r = Network.forward (Tape 1) net false x
              let floatAcc = r.Accumulators |> Array.ofList
              Seq.forall
                  (fun i ->
                      let trace = IntegerModel.trace model (IntegerModel.quantizeRow model (Tensor.row x i))
                      let sameAcc =
                          Array.forall2 (fun (t: Tensor) (acc: int64[]) -> Tensor.row t i = Array.map float32 acc) floatAcc trace
                      sameAcc && IntegerModel.dequantize model (Array.last trace) = Tensor.row r.Output.Value i)
                  [ 0 .. x.Rows - 1 ])

          testProperty "pruned networks never exceed their accumulator budget for any input"
          <| forAll networkCase (fun (config, seed) ->
              let net, _ = randomNetwork config seed
              let model = IntegerModel.ofNetwork net
              match config.Quant.Value.AccumulatorBits with
              | None -> true
              | Some bits ->
                  model.Layers
                  |> Array.forall (fun l ->
                      Array.forall2 (fun (w: int[]) b -> Pruning.fits (ReadOnlySpan w) b l.InputCodes bits) l.Weights l.Biases))

          test "ReLU with power-of-two scales: the lookup is an exact rounding shift (t > 0), half up" {
              let config =
                  { InputDim = 4
                    Hidden = 6
                    Outputs = 3
                    Layers = 2
                    Activation = Activation.ReLU
                    Quant = Some { WeightBits = 3; ActivationBits = 3; AccumulatorBits = None; PowerOfTwo = true } }
              let net, _ = randomNetwork config 3
              // s_in = 2^-1, s_w = 2^-3, next layer's input scale 2^-2: t = -2 - (-1 - 3) = 2.
              net.Layers[0].InputLog2Scale.Value.Data[0] <- -1.0f
              net.Layers[0].WeightLog2Scale.Value.Data[0] <- -3.0f
              net.Layers[1].InputLog2Scale.Value.Data[0] <- -2.0f
              let layer = (IntegerModel.ofNetwork net).Layers[0]
              Expect.equal layer.Shift 2 "two accumulator bits are dropped"
              let lookup = layer.Lookup.Value
              for acc in -300L .. 300L do
                  let r = IntegerModel.roundShift layer.Shift acc
                  Expect.equal (int64 (Lookup.apply lookup r)) (Math.Clamp(r, 0L, 7L)) "clip(relu(r))"
                  Expect.equal r (int64 (Math.Floor(float acc / float (1 <<< layer.Shift) + 0.5))) "half up"
              let table = Lookup.table lookup -20L 20L
              Expect.equal table (Array.init 41 (fun i -> Lookup.apply lookup (int64 i - 20L))) "table = closed form"
          } ]
