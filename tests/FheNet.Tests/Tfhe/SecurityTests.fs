module FheNet.Tests.Tfhe.SecurityTests

open System
open Expecto
open FsCheck.FSharp
open FheNet.Tfhe
open FheNet.Tests.Generators

let private withNoise lwe glwe (p: TfheParameters) = { p with LweNoise = lwe; GlweNoise = glwe }

/// The exception ensureSecure raises for the set; fails the test when it raises none.
let private refusal (p: TfheParameters) =
    try
        Security.ensureSecure p
        failtest $"%s{p.Name} was accepted"
    with :? InsecureParametersException as ex ->
        ex

[<Tests>]
let tests =
    testList
        "Tfhe.Security"
        [ test "every published preset meets the 128-bit curve and passes ensureSecure" {
              for p in Presets.all do
                  let report = Security.check p
                  Expect.isTrue report.IsSecure $"%s{p.Name}: %A{report.Failures}"
                  Expect.isFalse p.Insecure p.Name
                  Security.ensureSecure p
          }

          test "the test presets are below the curve but marked Insecure, so ensureSecure lets them through" {
              for p in Presets.testing do
                  Expect.isFalse (Security.check p).IsSecure p.Name
                  Expect.isTrue p.Insecure p.Name
                  Security.ensureSecure p
          }

          test "a GLWE key with too little noise is refused, naming the set, the key, the noise needed and the fix" {
              let weak = Presets.tuniformM2C2 |> withNoise Presets.tuniformM2C2.LweNoise (NoiseDistribution.TUniform 8)
              let report = Security.check weak
              Expect.equal (report.Failures |> List.map _.Key) [ SecretKeyKind.Glwe ] "only the GLWE key fails"
              Expect.isLessThan report.GlweKey.MarginBits -5.0 "TU(8) at k·N = 2048 misses ~7 bits"
              let ex = refusal weak
              for part in [ weak.Name; "GLWE key"; "2048"; "TUniform"; "Insecure = true" ] do
                  Expect.stringContains ex.Message part "message"
              Expect.isFalse ex.Report.IsSecure "report attached"
          }

          test "a small LWE key with too little noise is refused; the GLWE key alone passes" {
              let weak =
                  Presets.gaussian2M128[10] |> withNoise (NoiseDistribution.Gaussian 1e-9) Presets.gaussian2M128[10].GlweNoise
              let report = Security.check weak
              Expect.equal (report.Failures |> List.map _.Key) [ SecretKeyKind.SmallLwe ] "only the small key fails"
              let ex = refusal weak
              Expect.stringContains ex.Message "small LWE key (n = 866" "names the key"
          }

          test "a dimension below the curve's domain is refused whatever the noise" {
              let tiny = { Presets.tuniformM2C2 with LweDimension = 300; LweNoise = NoiseDistribution.TUniform 62 }
              let report = Security.check tiny
              Expect.isFalse report.SmallKey.DimensionInDomain "n = 300 < 450"
              refusal tiny |> ignore
          }

          test "TFHE-rs's minimal noise reproduces the preset noises" {
              Expect.equal (Security.minimalTUniformBoundLog2 918) 45 "M2C2 small key"
              Expect.equal (Security.minimalTUniformBoundLog2 879) 46 "M1C1 small key"
              Expect.equal (Security.minimalTUniformBoundLog2 2048) 17 "k·N = 2048"
              Expect.equal (Security.minimalTUniformBoundLog2 65536) 3 "floor"
              for n, sigma in [ 866, 2.046151696979124e-06; 747, 1.5944604865450687e-05; 2048, 2.845267479601915e-15; 8192, 2.168404344971009e-19 ] do
                  Expect.floatClose { absolute = 0.0; relative = 1e-9 } (Security.minimalGaussianStdDev n) sigma $"σ(%d{n})"
          }

          testProperty "TFHE-rs's minimal noise (132-bit curve) meets the 128-bit check at every dimension, both families"
          <| forAll (Gen.choose (450, 1 <<< 17)) (fun n ->
              [ NoiseFamily.TUniform; NoiseFamily.Gaussian ]
              |> List.forall (fun family ->
                  let noise = Security.minimalNoise family n
                  Security.stdDev noise >= Security.requiredStdDev Security.concrete128 n))

          testProperty "the check's threshold is exact: the required σ passes, 1 % less fails"
          <| forAll (Gen.choose (450, 1 <<< 17)) (fun n ->
              let required = Security.requiredStdDev Security.concrete128 n
              let at sigma = { Presets.tuniformM2C2 with LweDimension = n; LweNoise = NoiseDistribution.Gaussian sigma }
              (Security.check (at required)).SmallKey.IsSecure && not (Security.check (at (0.99 * required))).SmallKey.IsSecure)

          test "TUniform standard deviation is the exact one of the distribution" {
              for b in 0..12 do
                  let bound = 1 <<< b
                  let probability v =
                      if abs v = bound then Math.Pow(2.0, -float (b + 2)) else Math.Pow(2.0, -float (b + 1))
                  let exact = Seq.sum (seq { for v in -bound .. bound -> probability v * float v * float v })
                  Expect.floatClose Accuracy.veryHigh (Security.stdDev (NoiseDistribution.TUniform b) * Math.Pow(2.0, 64.0)) (sqrt exact) $"TU(%d{b})"
          } ]
