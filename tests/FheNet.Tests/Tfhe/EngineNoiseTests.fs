module FheNet.Tests.Tfhe.EngineNoiseTests

open System
open Expecto
open FheNet.Tfhe
open FheNet.Tests.Tfhe.EngineTests

let private meanSquare (xs: float seq) = Seq.averageBy (fun x -> x * x) xs

[<Tests>]
let tests =
    testList
        "Tfhe.Engine.Noise"
        [ test "PBS output variance within 10 % of the noise model (TEST_FAST, 300 bootstraps)" {
              let p = Presets.testFast
              let ck, sk = keys p
              let measured = meanSquare (NoiseMeasurement.pbsOutputNoise ck sk 300)
              let model = NoiseModel.pbsVariance p
              Expect.floatClose { absolute = 0.0; relative = 0.10 } measured model $"log2 measured %.3f{Math.Log2 measured} vs model %.3f{Math.Log2 model}"
          }
          test "PBS output variance within 10 % of the noise model, FFT error included (real TUNIFORM M2C2, 100 bootstraps)" {
              let p = Presets.tuniformM2C2
              let ck, sk = keys p
              let measured = meanSquare (NoiseMeasurement.pbsOutputNoise ck sk 100)
              let model = NoiseModel.pbsVariance p
              Expect.floatClose { absolute = 0.0; relative = 0.10 } measured model $"log2 measured %.3f{Math.Log2 measured} vs model %.3f{Math.Log2 model}"
          }
          test "keyswitch output variance within 10 % of the noise model (TEST_FAST with 5 KS levels, 10,000 samples)" {
              // With 3 levels TEST_FAST's keyswitch noise is mostly the input's rounding to 15 bits times the key,
              // whose variance follows the key's Hamming weight (±4 % from key to key); 5 levels leave the KSK noise.
              let p = { Presets.testFast with Name = "TEST_FAST_KS5_INSECURE"; KsLevel = 5 }
              let ck, sk = keys p
              let samples = NoiseMeasurement.keyswitchOutputNoise ck sk 10_000
              let model = NoiseModel.keyswitchOutputVariance p (NoiseModel.freshVariance p.GlweNoise)
              let measured = meanSquare samples
              Expect.floatClose { absolute = 0.0; relative = 0.10 } measured model $"log2 measured %.3f{Math.Log2 measured} vs model %.3f{Math.Log2 model}"
          }
          test "modulus switch error variance within 10 % of the model, standard and centered-mean (n = 918, N = 2048)" {
              let p = Presets.tuniformM2C2
              let ck, _ = keys p
              let n, bigN = p.LweDimension, p.PolynomialSize
              let rng = AesCtrGenerator.Secret()
              let switched = Array.zeroCreate<int> (n + 1)
              for kind in [ ModulusSwitchKind.Standard; ModulusSwitchKind.CenteredMean ] do
                  let errors =
                      Array.init 20_000 (fun _ ->
                          let ct = Array.init (n + 1) (fun _ -> rng.NextUInt64())
                          Bootstrap.modulusSwitch kind bigN (ReadOnlySpan ct) (Span switched)
                          let mutable phase = switched[n]
                          for i in 0 .. n - 1 do
                              phase <- phase - switched[i] * int ck.SmallKey.Bits[i]
                          let switchedPhase = float (((phase % (2 * bigN)) + 2 * bigN) % (2 * bigN)) / float (2 * bigN)
                          let exact = Torus.toReal (LweEncryption.phase ck.SmallKey { Data = ct })
                          let d = switchedPhase - exact
                          d - Math.Round d)
                  let model = NoiseModel.modulusSwitchVarianceOf kind n bigN
                  let measured = meanSquare errors
                  Expect.floatClose { absolute = 0.0; relative = 0.10 } measured model $"%A{kind}: log2 measured %.3f{Math.Log2 measured} vs model %.3f{Math.Log2 model}"
                  // CenteredMean removes the mask-rounding bias but shifts by half a slot on purpose (LUT boxes are
                  // [-half, half - 1]); the standard switch is unbiased over random masks.
                  let expectedMean = if kind = ModulusSwitchKind.CenteredMean then -1.0 / float (4 * bigN) else 0.0
                  Expect.isLessThan (abs (Array.average errors - expectedMean)) (4.0 * sqrt (model / 20_000.0)) $"%A{kind}: mean error"
          }
          test "failure rate of 10,000 KS-PBS at a set the model gives p_fail ≈ 1e-2 matches within a factor 2" {
              // The rate of one key pair varies by about ±30 % with its keyswitching key's noise (the model is the
              // average over keys), so the 10,000 bootstraps are spread over five fresh key pairs.
              let p = Presets.weakForFailureRate
              let predicted = (NoiseModel.lookupNoise p (NoiseModel.freshVariance p.GlweNoise)).PFail
              let rate =
                  List.init 5 (fun _ ->
                      let ck = ClientKey.generate p
                      NoiseMeasurement.failureRate ck (ServerKey.ofClientKey ck) 2_000)
                  |> List.average
              Expect.isGreaterThan rate (predicted / 2.0) $"measured %.4f{rate} vs predicted %.4f{predicted}"
              Expect.isLessThan rate (predicted * 2.0) $"measured %.4f{rate} vs predicted %.4f{predicted}"
          }
          test "key generation refuses a set that fails the security check unless it is marked Insecure" {
              let insecure = { Presets.tuniformM2C2 with LweNoise = NoiseDistribution.TUniform 20 }
              Expect.throwsT<InsecureParametersException> (fun () -> ClientKey.generate insecure |> ignore) "TU(20) at n = 918 is refused"
              ClientKey.generate { insecure with Insecure = true } |> ignore
          } ]
