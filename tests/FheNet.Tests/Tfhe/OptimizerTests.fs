module FheNet.Tests.Tfhe.OptimizerTests

open System
open Expecto
open FsCheck.FSharp
open FheNet.Tfhe
open FheNet.Tests.Generators

/// The optimizer's cost, infinite when nothing is feasible (so that monotonicity covers infeasibility too).
let private costOf bits nu log2PError =
    try
        Optimizer.cost (Optimizer.optimizeLog2 bits nu log2PError)
    with :? InfeasibleParametersException ->
        infinity

/// The circuit set, or None when no set of the domain meets the requirements.
let private circuitSet requirements log2PError =
    try
        Some(Optimizer.optimizeCircuit NoiseFamily.TUniform requirements log2PError)
    with :? InfeasibleParametersException ->
        None

let private request =
    gen {
        let! bits = Gen.choose (1, 7)
        let! nu = Gen.choose (1, 200)
        let! log2PError = Gen.elements [ -40.0; -64.0; -128.0 ]
        return bits, float nu, log2PError
    }

[<Tests>]
let tests =
    testList
        "Tfhe.Optimizer"
        [ test "every result over a grid is secure, within its target p_fail, and records its modelled p_fail" {
              for bits in 1..8 do
                  for nu in [ 1.0; 3.0; 17.0; 100.0 ] do
                      for target in [ -40.0; -128.0 ] do
                          let p = Optimizer.optimizeLog2 bits nu target
                          let what = $"p = %d{bits}, ν = %g{nu}, 2^%g{target}: %s{p.Name}"
                          Expect.isTrue (Security.check p).IsSecure what
                          Security.ensureSecure p
                          Expect.isLessThanOrEqual p.PublishedLog2PFail target what
                          Expect.equal p.PublishedLog2PFail (NoiseModel.log2PFail p nu) what
                          Expect.equal p.PrecisionBits bits what
                          Expect.equal p.Order PbsOrder.KeyswitchBootstrap what
                          Expect.equal p.ModulusSwitch ModulusSwitchKind.CenteredMean what
          }

          test "it rediscovers TFHE-rs's four TUniform 2^-128 sets, cost for cost (M2C2 ratio 1.000)" {
              for preset, bits in List.zip Presets.tuniform2M128 [ 2; 4; 6; 8 ] do
                  let found = Optimizer.optimizeLog2 bits (float preset.MaxNoiseLevel) -128.0
                  let ratio = Optimizer.cost found / Optimizer.cost preset
                  Expect.floatClose { absolute = 0.0; relative = 1e-12 } ratio 1.0 $"%s{preset.Name} vs %s{found.Name}"
                  Expect.isLessThanOrEqual (abs (ratio - 1.0)) 0.25 "within 25 %"
              let m2c2 = Optimizer.optimizeLog2 4 5.0 -128.0
              Expect.equal
                  (m2c2.LweDimension, m2c2.GlweDimension, m2c2.PolynomialSize, m2c2.PbsBaseLog, m2c2.PbsLevel, m2c2.KsBaseLog, m2c2.KsLevel)
                  (918, 1, 2048, 23, 1, 4, 4)
                  "M2C2"
              Expect.floatClose { absolute = 0.05e6; relative = 0.0 } (Optimizer.cost m2c2) 112.83e6 "Concrete cost of M2C2 (TFHE-rs lists 113)"
          }

          test "with Gaussian noise it rediscovers all 36 Gaussian 2^-128 sets, parameter for parameter" {
              let shape (p: TfheParameters) =
                  p.LweDimension, p.GlweDimension, p.PolynomialSize, p.PbsBaseLog, p.PbsLevel, p.KsBaseLog, p.KsLevel
              for preset in Presets.gaussian2M128 do
                  let found =
                      Optimizer.optimizeWith NoiseFamily.Gaussian preset.PrecisionBits (float preset.MaxNoiseLevel) -128.0
                  Expect.equal (shape found) (shape preset) $"%s{preset.Name} vs %s{found.Name}"
                  Expect.isTrue (Security.check found).IsSecure found.Name
          }

          testProperty "cost never decreases when the precision grows"
          <| forAll request (fun (bits, nu, target) -> costOf bits nu target <= costOf (bits + 1) nu target)

          testProperty "cost never decreases when the 2-norm ν grows"
          <| forAll (Gen.zip request (Gen.choose (1, 100))) (fun ((bits, nu, target), more) ->
              costOf bits nu target <= costOf bits (nu + float more) target)

          test "a non-integer ν is rounded up to the set's MaxNoiseLevel" {
              let p = Optimizer.optimizeLog2 3 4.2 -64.0
              Expect.equal p.MaxNoiseLevel 5 "ceil"
              Expect.equal (Optimizer.cost p) (Optimizer.cost (Optimizer.optimizeLog2 3 5.0 -64.0)) "same as ν = 5"
          }

          test "optimize takes p_error as a probability" {
              let p = Optimizer.optimize 4 5.0 (Math.Pow(2.0, -128.0))
              Expect.equal p.Name (Optimizer.optimizeLog2 4 5.0 -128.0).Name "same set"
          }

          test "a request no set can meet raises InfeasibleParametersException naming the request and the fix" {
              let ex =
                  try
                      Optimizer.optimizeLog2 8 65536.0 -128.0 |> ignore
                      failtest "8 bits at ν = 65536 was accepted"
                  with :? InfeasibleParametersException as ex ->
                      ex
              for part in [ "8-bit"; "65536"; "2^-128"; "Lower the lookup's precision" ] do
                  Expect.stringContains ex.Message part "message"
          }

          test "bad arguments raise typed errors" {
              for bits, nu, target in [ 0, 5.0, -128.0; 9, 5.0, -128.0; 4, 0.5, -128.0; 4, nan, -128.0; 4, 5.0, 0.0 ] do
                  Expect.throwsT<FheNet.ParameterOutOfRangeException>
                      (fun () -> Optimizer.optimizeLog2 bits nu target |> ignore)
                      $"%d{bits} %g{nu} %g{target}"
              Expect.throwsT<FheNet.ParameterOutOfRangeException> (fun () -> Optimizer.optimize 4 5.0 0.0 |> ignore) "p_error 0"
          }

          testProperty "a circuit with one requirement gets the single-lookup set"
          <| forAll request (fun (bits, nu, target) ->
              let circuit =
                  circuitSet [ { PbsVarianceFactor = Math.Ceiling nu ** 2.0; PlaintextModulus = 1 <<< bits; ThroughBlindRotation = true } ] target
              match circuit with
              | Some set ->
                  let single = Optimizer.optimizeLog2 bits nu target
                  Optimizer.cost set = Optimizer.cost single && set.LweDimension = single.LweDimension
              | None -> Double.IsPositiveInfinity(costOf bits nu target))

          testProperty "every requirement of a circuit meets p_error, and more requirements never cost less"
          <| forAll
              (gen {
                  let! accumulatorBits = Gen.choose (4, 11)
                  let! lutBits = Gen.choose (1, 6)
                  let! nu = Gen.choose (1, 40)
                  let! target = Gen.elements [ -40.0; -64.0; -20.0 ]
                  return accumulatorBits, lutBits, float nu, target
              })
              (fun (b, p, nu, target) ->
                  // Exact rounding of a b-bit accumulator: a sign lookup on the accumulator times 2^b, then the p-bit table.
                  let sign = { PbsVarianceFactor = Math.Pow(2.0, 2.0 * float b) * nu * nu; PlaintextModulus = 1; ThroughBlindRotation = true }
                  let table = { PbsVarianceFactor = nu * nu + float b; PlaintextModulus = 1 <<< p; ThroughBlindRotation = true }
                  match circuitSet [ sign; table ] target, circuitSet [ table ] target with
                  | Some both, Some tableOnly ->
                      Optimizer.log2PFailOf both sign <= target
                      && Optimizer.log2PFailOf both table <= target
                      && both.PublishedLog2PFail <= target
                      && (Security.check both).IsSecure
                      && Optimizer.cost both >= Optimizer.cost tableOnly
                  | Some _, None -> false
                  | None, _ -> true)

          test "circuit requirements are validated" {
              Expect.throwsT<FheNet.InvalidShapeException>
                  (fun () -> Optimizer.optimizeCircuit NoiseFamily.TUniform [] -40.0 |> ignore)
                  "no lookups"
              Expect.throwsT<FheNet.ParameterOutOfRangeException>
                  (fun () ->
                      Optimizer.optimizeCircuit NoiseFamily.TUniform [ { PbsVarianceFactor = 4.0; PlaintextModulus = 3; ThroughBlindRotation = true } ] -40.0
                      |> ignore)
                  "not a power of two"
          } ]
