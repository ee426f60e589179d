module FheNet.Tests.Tfhe.NoiseModelTests

open System
open Expecto
open FsCheck.FSharp
open FheNet.Tfhe
open FheNet.Tests.Generators

let private log2 (x: float) = Math.Log2 x

/// The published log2 p_fail values have three decimals: the model must round to them.
let private publishedTolerance = 0.0005 + 1e-9

[<Tests>]
let tests =
    testList
        "Tfhe.NoiseModel"
        [ test "the model reproduces the published log2 p_fail of all 40 presets to three decimals" {
              for p in Presets.all do
                  let modelled = NoiseModel.log2PFailAtMaxNoiseLevel p
                  Expect.isLessThanOrEqual (abs (modelled - p.PublishedLog2PFail)) publishedTolerance $"%s{p.Name}: %.5f{modelled}"
              Expect.equal Presets.all.Length 40 "4 TUniform + 36 Gaussian"
          }

          test "the component variances of TUniform M2C2 and Gaussian M2C2 are TFHE-rs's" {
              let close expected actual what = Expect.floatClose { absolute = 0.005; relative = 0.0 } actual expected what
              let tu = Presets.tuniformM2C2
              close -29.65 (log2 (NoiseModel.pbsVariance tu)) "PBS"
              close -22.03 (log2 (NoiseModel.keyswitchVariance tu)) "KS"
              close -19.74 (log2 (NoiseModel.modulusSwitchVariance tu)) "MS"
              let ga = Presets.gaussian2M128[10]
              close -29.99 (log2 (NoiseModel.pbsVariance ga)) "Gaussian PBS"
              close -21.60 (log2 (NoiseModel.keyswitchVariance ga)) "Gaussian KS"
          }

          test "the standard modulus switch costs the TUniform sets their 2^-128 (as TFHE-rs's notes say)" {
              let standard (p: TfheParameters) = NoiseModel.log2PFailAtMaxNoiseLevel { p with ModulusSwitch = ModulusSwitchKind.Standard }
              for p, expected in List.zip Presets.tuniform2M128 [ -78.5; -72.8; -67.6; -112.0 ] do
                  Expect.floatClose { absolute = 0.05; relative = 0.0 } (standard p) expected p.Name
          }

          test "the FFT share of the PBS variance grows with N (17 %, 22 %, 56 %, 86 % for the TUniform sets)" {
              let shares =
                  Presets.tuniform2M128
                  |> List.map (fun p ->
                      NoiseModel.fftVariance p.LweDimension p.GlweDimension p.PolynomialSize p.PbsBaseLog p.PbsLevel
                      / NoiseModel.pbsVariance p)
              for share, expected in List.zip shares [ 0.17; 0.22; 0.56; 0.86 ] do
                  Expect.floatClose { absolute = 0.01; relative = 0.0 } share expected "share"
          }

          test "log2Erfc matches MathNet's erfc where that does not underflow, both sides of the switch" {
              for i in 0..400 do
                  let x = -2.0 + float i * 0.07
                  let direct = log2 (MathNet.Numerics.SpecialFunctions.Erfc x)
                  Expect.floatClose { absolute = 1e-12; relative = 1e-12 } (NoiseModel.log2Erfc x) direct $"x = %g{x}"
          }

          test "log2Erfc stays finite far past erfc's underflow and follows the asymptote" {
              for x in [ 27.0; 40.0; 100.0; 1000.0 ] do
                  // erfc(x) ~ e^(−x²)/(x√π)·(1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶)), the next term below 1e-10 here.
                  let u = 1.0 / (x * x)
                  let series = 1.0 - u / 2.0 + 3.0 * u * u / 4.0 - 15.0 * u * u * u / 8.0
                  let asymptote = (-x * x - log (x * sqrt Math.PI) + log series) / log 2.0
                  Expect.floatClose { absolute = 1e-6; relative = 1e-12 } (NoiseModel.log2Erfc x) asymptote $"x = %g{x}"
          }

          test "p_fail down to 2^-200 and below is computed without underflow" {
              // The variance that puts the 4-bit bound at x = 12.4 standard deviations: log2 p_fail ≈ −227.
              let v = (1.0 / 64.0 / 12.4) ** 2.0 / 2.0
              let l = NoiseModel.log2PFailOfVariance 16 v
              Expect.isLessThan l -200.0 "below 2^-200"
              Expect.isTrue (Double.IsFinite l) "finite"
              Expect.floatClose { absolute = 1e-9; relative = 1e-12 } l (NoiseModel.log2Erfc 12.4) "erfc(12.4)"
          }

          testProperty "p_fail grows with the 2-norm ν"
          <| forAll (Gen.zip (Gen.elements Presets.all) (Gen.choose (1, 300))) (fun (p, nu) ->
              NoiseModel.log2PFail p (float nu) < NoiseModel.log2PFail p (float nu + 1.0))

          testProperty "PBS, KS and MS variances are linear in the dimensions they sum over"
          <| forAll (Gen.elements Presets.all) (fun p ->
              let twice = { p with LweDimension = 2 * p.LweDimension }
              let wider = { p with GlweDimension = 2 * p.GlweDimension }
              let near a b = abs (a - b) <= 1e-12 * abs b
              near (NoiseModel.pbsVariance twice) (2.0 * NoiseModel.pbsVariance p)
              && near (NoiseModel.modulusSwitchVariance twice) (2.0 * NoiseModel.modulusSwitchVariance p)
              && near (NoiseModel.keyswitchVariance wider) (2.0 * NoiseModel.keyswitchVariance p))

          test "variance of a distribution: TUniform(b) exactly, Gaussian σ²" {
              Expect.floatClose Accuracy.veryHigh ((NoiseDistribution.TUniform 3).Variance * Math.Pow(2.0, 128.0)) (129.0 / 6.0) "TU(3)"
              Expect.floatClose Accuracy.veryHigh ((NoiseDistribution.Gaussian 1e-5).Variance) 1e-10 "σ²"
          }

          test "lookupNoise in slots of the 2N torus gives the same p_fail as the normalized recipe" {
              for p in Presets.all @ Presets.testing do
                  let input = NoiseModel.linearCombinationVariance p (float p.MaxNoiseLevel)
                  let l = NoiseModel.lookupNoise p input
                  Expect.floatClose Accuracy.veryHigh l.BoxSlots (float p.PolynomialSize / float p.PlaintextModulus) "box"
                  let viaSlots = NoiseModel.log2Erfc (l.BoxSlots / 2.0 / (l.PhaseStdDev * sqrt 2.0))
                  Expect.floatClose { absolute = 1e-9; relative = 1e-12 } viaSlots (NoiseModel.log2PFail p (float p.MaxNoiseLevel)) p.Name
                  Expect.floatClose { absolute = 1e-9; relative = 1e-12 } l.Log2PFail viaSlots p.Name
          }

          test "lookup shift probabilities sum to one and their tails to p_fail" {
              for p in [ Presets.weakForFailureRate; Presets.testFast ] do
                  let l = NoiseModel.lookupNoise p (NoiseModel.linearCombinationVariance p (float p.MaxNoiseLevel))
                  let shifted = Seq.sum (seq { for j in 1..40 -> l.ShiftProbability j + l.ShiftProbability -j })
                  Expect.floatClose { absolute = 1e-12; relative = 1e-9 } shifted l.PFail p.Name
                  Expect.floatClose Accuracy.veryHigh (l.ShiftProbability 0 + shifted) 1.0 p.Name
              let weak = NoiseModel.lookupNoise Presets.weakForFailureRate 0.0
              Expect.isGreaterThan (weak.ShiftProbability 1) (weak.ShiftProbability 2) "nearer shifts are likelier"
              Expect.isGreaterThan (weak.ShiftProbability 2) 0.0 "a 2-box shift is possible at p_fail = 1e-2"
          }

          test "keyswitch output variance adds the keyswitch's variance to the input's" {
              let p = Presets.testFast
              let fresh = NoiseModel.freshVariance p.GlweNoise
              Expect.equal (NoiseModel.keyswitchOutputVariance p fresh) (fresh + NoiseModel.keyswitchVariance p) "sum"
          }

          test "the failure-rate preset predicts p_fail = 1e-2 for fresh inputs and bootstrap outputs alike" {
              let p = Presets.weakForFailureRate
              Expect.floatClose { absolute = 1e-4; relative = 0.0 } (NoiseModel.pFail p 1.0) 0.01 "bootstrap output input"
              let fresh = NoiseModel.lookupNoise p (NoiseModel.freshVariance p.GlweNoise)
              Expect.floatClose { absolute = 1e-4; relative = 0.0 } fresh.PFail 0.01 "fresh input"
              Expect.floatClose { absolute = 0.0005; relative = 0.0 } (NoiseModel.log2PFailAtMaxNoiseLevel p) p.PublishedLog2PFail "recorded"
          }

          test "the fast test preset is correct for 2-bit messages at its ν (p_fail < 2^-40) and its value is recorded" {
              let p = Presets.testFast
              Expect.equal p.PrecisionBits 2 "2-bit plaintext"
              Expect.isLessThan (NoiseModel.log2PFailAtMaxNoiseLevel p) -40.0 "p_fail"
              Expect.floatClose { absolute = 0.0005; relative = 0.0 } (NoiseModel.log2PFailAtMaxNoiseLevel p) p.PublishedLog2PFail "recorded"
              // The PBS output noise comes from the bootstrapping key (what a variance measurement checks), not the FFT.
              let fft = NoiseModel.fftVariance p.LweDimension p.GlweDimension p.PolynomialSize p.PbsBaseLog p.PbsLevel
              Expect.isLessThan (fft / NoiseModel.pbsVariance p) 1e-9 "FFT share"
          }

          test "bad arguments raise typed errors" {
              Expect.throwsT<FheNet.ParameterOutOfRangeException> (fun () -> NoiseModel.log2PFailOfVariance 16 0.0 |> ignore) "variance 0"
              Expect.throwsT<FheNet.ParameterOutOfRangeException> (fun () -> NoiseModel.log2PFail Presets.tuniformM2C2 -1.0 |> ignore) "ν < 0"
          } ]
