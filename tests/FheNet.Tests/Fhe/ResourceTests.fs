module FheNet.Tests.Fhe.ResourceTests

open System
open Expecto
open FheNet
open FheNet.Autodiff
open FheNet.Integer
open FheNet.Estimators
open FheNet.Fhe
open FheNet.Tests

let private moons = lazy (TestData.split "moons")

/// A tiny fitted network on the moons: 2 features, 2 layers, few epochs.
let private fitted (extra: (string * string) list) =
    let x, y, _, _ = moons.Force()
    let settings =
        NeuralNetSettings.defaults
        |> NeuralNetSettings.setMany (
            [ "module__n_layers", "2"; "module__n_hidden_neurons_multiplier", "2"; "max_epochs", "5" ] @ extra
            |> List.map (fun (name, value) -> name, (value :> objnull))
        )
    NeuralNetClassifier<int>(settings).Fit(x, y |> Array.map int)

/// The FheResourceException that `attempt` raises.
let private refused (attempt: unit -> unit) (what: string) =
    try
        attempt ()
        failtest $"%s{what}: not refused"
    with :? FheResourceException as e ->
        e

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Fhe.Resources"
        [ test "the memory estimate is the size of the keys generated" {
              let x, _, _, _ = moons.Force()
              let circuit = Compiler.compile CompileOptions.Default (fitted []).IntegerModel.Value x
              let memory = circuit.Memory 1
              let keys = FheClient.keygen circuit
              Expect.equal memory.CompressedEvaluationKeyBytes keys.CompressedServerKey.SizeBytes "compressed key"
              let serverKey = Tfhe.CompressedServerKey.decompress keys.CompressedServerKey
              Expect.equal memory.ExpandedEvaluationKeyBytes serverKey.SizeBytes "expanded key"
              Expect.isGreaterThan memory.PreparedBytes memory.ExpandedEvaluationKeyBytes "tables on top of the key"
              Expect.equal memory.PeakBytes (memory.ClientKeyBytes + memory.CompressedEvaluationKeyBytes + memory.PreparedBytes) "peak"
          }

          test "keys over a small budget are refused before any exists, in well under a second" {
              let x, _, _, _ = moons.Force()
              let circuit = Compiler.compile CompileOptions.Default (fitted []).IntegerModel.Value x
              let budget = 64L * 1024L
              let required = (circuit.Memory Environment.ProcessorCount).PeakBytes
              for name, attempt in
                  [ "keygen", (fun () -> FheClient.keygenWithin budget circuit |> ignore)
                    "keygen and prepare", (fun () -> ResourceCheck.keygenAndPrepare budget circuit)
                    "prepare", (fun () -> ResourceCheck.prepare budget circuit) ] do
                  let watch = Diagnostics.Stopwatch.StartNew()
                  let e = refused attempt name
                  Expect.isLessThan watch.Elapsed.TotalSeconds 0.5 $"%s{name}: refused at once"
                  Expect.equal e.BudgetBytes budget $"%s{name}: names the budget"
                  Expect.isGreaterThan e.RequiredBytes budget $"%s{name}: names a size over it"
                  Expect.isLessThanOrEqual e.RequiredBytes required $"%s{name}: at most the peak"
                  for fix in [ "rounding_threshold_bits"; "n_accum_bits"; "fewer"; MemoryBudget.EnvironmentVariable ] do
                      Expect.stringContains e.Message fix $"%s{name}: names the fix %s{fix}"
              // A budget the keys fit passes the same checks.
              ResourceCheck.keygenAndPrepare (2L * required) circuit
          }

          test "an automatic threshold that no budget fits is refused at compile time" {
              let x, _, _, _ = moons.Force()
              let model = (fitted [ "module__activation_function", "Sigmoid" ]).IntegerModel.Value
              let e =
                  refused
                      (fun () -> Compiler.compile { CompileOptions.Default with MemoryBudgetBytes = Some 4096L } model x |> ignore)
                      "no threshold fits 4 KiB"
              Expect.stringContains e.Message "automatic rounding threshold" "names the stage"
          }

          test "the memory budget parses bytes and binary suffixes and refuses the rest" {
              Expect.equal (MemoryBudget.parse "123456") 123456L "bytes"
              Expect.equal (MemoryBudget.parse "6G") (6L <<< 30) "G"
              Expect.equal (MemoryBudget.parse "6GiB") (6L <<< 30) "GiB"
              Expect.equal (MemoryBudget.parse "512m") (512L <<< 20) "m"
              Expect.equal (MemoryBudget.parse "1.5K") 1536L "fractional K"
              for bad in [ ""; "abc"; "-1G"; "0" ] do
                  Expect.throwsT<ParameterOutOfRangeException> (fun () -> MemoryBudget.parse bad |> ignore) $"'%s{bad}'"
              Expect.isGreaterThan (MemoryBudget.defaultBytes ()) 0L "a positive default"
          }

          test "a sigmoid network is rounded automatically, reports the cost, and an explicit setting wins" {
              let x, _, xTest, _ = moons.Force()
              // 5-bit codes make accumulators wider than the automatic lookups.
              let model =
                  (fitted [ "module__activation_function", "Sigmoid"; "n_w_bits", "5"; "n_a_bits", "5" ]).IntegerModel.Value
              let off, offCost = Compiler.compileWithCost { CompileOptions.Default with RoundingThreshold = RoundingThreshold.Off } model x
              Expect.all off.Layers (fun l -> l.Shift = 0) "off: whole accumulators are looked up"
              Expect.isNone offCost "off: no rounding cost"
              let widest = off.Layers |> Array.map _.LookupBits |> Array.max
              Expect.isGreaterThan widest Compiler.MinAutomaticLookupBits "the unrounded lookup is wide"
              let auto = Compiler.compile CompileOptions.Default model x
              Expect.all auto.Layers (fun l -> l.LookupBits <= Compiler.MaxAutomaticLookupBits) "automatic: narrow lookups"
              Expect.isLessThanOrEqual (Compiler.costPerSample auto) (Compiler.costPerSample off) "automatic: no dearer"
              let two, twoCost = Compiler.compileWithCost { CompileOptions.Default with RoundingThreshold = RoundingThreshold.Bits 2 } model x
              Expect.all two.Layers (fun l -> l.LookupBits <= 2) "2 bits asked, 2 bits read"
              match twoCost with
              | Some cost ->
                  Expect.equal cost.ThresholdBits 2 "the threshold"
                  Expect.equal cost.Rows x.Length "every calibration row"
                  Expect.isGreaterThan cost.MaxAbsoluteChange 0.0 "2 bits change some output"
                  Expect.isLessThanOrEqual cost.MeanAbsoluteChange cost.MaxAbsoluteChange "mean at most max"
                  Expect.isTrue (cost.ArgmaxAgreement >= 0.0 && cost.ArgmaxAgreement <= 1.0) "a share"
              | None -> failtest "a 2-bit threshold changes the model"
              Expect.equal (RoundingThreshold.ofBits None) RoundingThreshold.Automatic "none given: automatic"
              Expect.equal (RoundingThreshold.ofBits (Some 0)) RoundingThreshold.Off "0: off"
              Expect.equal (RoundingThreshold.ofBits (Some 5)) (RoundingThreshold.Bits 5) "bits"
              Expect.equal (FheTests.executeAccumulators auto xTest[..1]) (FheTests.disableAccumulators auto xTest[..1]) "execute equals the rounded integer model"
          }

          test "the estimator's disable mode computes the rounded program and its report shows estimates and measurements" {
              let x, _, xTest, _ = moons.Force()
              let clf = fitted [ "module__activation_function", "Tanh"; "n_w_bits", "5"; "n_a_bits", "5" ]
              let circuit = clf.Compile(x, roundingThresholdBits = 2)
              let before = clf.CircuitReport()
              Expect.isGreaterThan before.EstimatedSecondsPerSample 0.0 "seconds estimated before keys"
              Expect.isGreaterThan before.EstimatedKeygenSeconds 0.0 "keygen estimated before keys"
              Expect.isNone before.MeasuredPeakBytes "nothing measured before keys"
              Expect.isSome before.RoundingCost "the rounding cost"
              Expect.notEqual
                  (circuit.Model.Layers |> Array.map _.Shift)
                  (clf.IntegerModel.Value.Layers |> Array.map _.Shift)
                  "the compiled integer model is the rounded one"
              let rows = xTest[..1]
              Expect.equal (clf.PredictProba(rows, FheMode.Execute)) (clf.PredictProba rows) "execute equals disable"
              let after = clf.CircuitReport()
              Expect.isSome after.MeasuredKeygenSeconds "keygen measured"
              Expect.isSome after.MeasuredSecondsPerSample "seconds per sample measured"
              Expect.isGreaterThan after.MeasuredPeakBytes.Value after.Memory.PreparedBytes "the process holds the keys"
              let text = string after
              for line in [ "estimated"; "measured"; "peak memory"; "rounding threshold 2 bits" ] do
                  Expect.stringContains text line $"the table shows %s{line}"
          }

          test "every activation compiles and runs encrypted, execute equal to disable" {
              let x, _, xTest, _ = moons.Force()
              for activation in Activation.all do
                  let model = (fitted [ "module__activation_function", Activation.name activation ]).IntegerModel.Value
                  let circuit = Compiler.compile CompileOptions.Default model x
                  Expect.equal (FheTests.executeAccumulators circuit xTest[..0]) (FheTests.disableAccumulators circuit xTest[..0]) $"%A{activation}"
          } ]
