module FheNet.Tests.Fhe.FheTests

open System
open Expecto
open FheNet
open FheNet.Integer
open FheNet.Estimators
open FheNet.Fhe
open FheNet.Tests
open FheNet.Tests.Generators
open FsCheck.FSharp

/// Small networks keep encrypted runs to a fraction of a second per sample.
let private small (extra: (string * string) list) =
    NeuralNetSettings.defaults
    |> NeuralNetSettings.setMany (
        // Quantization-aware training from the random start: its wide tables make the compiler choose the
        // two-step reads and its ranges overflow without a margin, which these tests exercise.
        [ "module__n_layers", "2"; "module__n_hidden_neurons_multiplier", "2"; "max_epochs", "15"; "pretrain_epochs", "0" ] @ extra
        |> List.map (fun (name, value) -> name, (value :> objnull))
    )

let private moons = lazy (TestData.split "moons")

let private classifier extra =
    let x, y, _, _ = moons.Force()
    NeuralNetClassifier<int>(small extra).Fit(x, y |> Array.map int)

/// The output accumulators of rows run encrypted through the client and server halves, with fresh keys (also used
/// by the resource tests).
let executeAccumulators (circuit: Circuit) (rows: float32[][]) =
    let keys = FheClient.keygen circuit
    let prepared = FheServer.prepare circuit (Tfhe.CompressedServerKey.decompress keys.CompressedServerKey)
    rows
    |> Array.map (fun row ->
        let inputs = FheClient.encryptRow keys circuit row |> Array.map Tfhe.Lwe.expand
        FheClient.decrypt keys circuit (FheServer.evaluate prepared inputs))

let disableAccumulators (circuit: Circuit) (rows: float32[][]) =
    rows |> Array.map (fun row -> IntegerModel.forward circuit.Model (IntegerModel.quantizeRow circuit.Model row))

let private simulateAccumulators seed (circuit: Circuit) (rows: float32[][]) =
    rows
    |> Array.mapi (fun i row ->
        FheSimulator.forward (Numerics.TrainingRng(uint64 (seed + i))) circuit (IntegerModel.quantizeRow circuit.Model row))

let private expectExecuteEqualsDisable (circuit: Circuit) (rows: float32[][]) =
    Expect.equal (executeAccumulators circuit rows) (disableAccumulators circuit rows) "every output integer of execute equals disable"

/// A table of 2^bits entries, constant before and after a random range of arbitrary entries.
let private clampedTables =
    gen {
        let! bits = Gen.choose (1, 8)
        let size = 1 <<< bits
        let! first = Gen.choose (0, size - 1)
        let! last = Gen.choose (first, size - 1)
        let! below = Gen.choose (-50, 50)
        let! above = Gen.choose (-50, 50)
        let! middle = Gen.arrayOfLength (last - first + 1) (Gen.choose (-50, 50))
        return Array.init size (fun k -> int64 (if k < first then below elif k > last then above else middle[k - first]))
    }

[<Tests>]
let windowProperties =
    testList
        "Fhe.TableWindow"
        [ testProperty "a two-step read gives every entry, at the narrowest window and any wider one"
          <| forAll clampedTables (fun table ->
              let p = Numerics.BitOperations.Log2(uint32 table.Length)
              [ TableWindow.bitsOf table .. max p (TableWindow.bitsOf table) ]
              |> List.forall (fun bits ->
                  let window = TableWindow.ofTable bits table
                  Array.init table.Length (TableWindow.read window table) = table))

          testProperty "the window's bits are the fewest of any aligned block outside which the table is constant"
          <| forAll clampedTables (fun table ->
              // Brute force over every aligned block of 2^w entries.
              let fits w =
                  [ 0 .. (table.Length >>> w) - 1 ]
                  |> List.exists (fun b ->
                      table
                      |> Array.indexed
                      |> Array.forall (fun (k, v) ->
                          if k < (b <<< w) then v = table[0]
                          elif k >= ((b + 1) <<< w) then v = table[table.Length - 1]
                          else true))
              let bits = TableWindow.bitsOf table
              fits bits && (bits = 1 || not (fits (bits - 1))))

          testProperty "the alignment shift fits the varying entries into one block of the narrowest width"
          <| forAll clampedTables (fun table ->
              let bits = TableWindow.narrowestBits table
              let shift = TableWindow.alignmentShift bits table
              // Entry k moved to k + shift, in a table twice as long (the constants extend it).
              let shifted =
                  Array.init (2 * table.Length) (fun k -> table[min (table.Length - 1) (max 0 (k - shift))])
              shift >= 0 && shift < (1 <<< bits) && TableWindow.bitsOf shifted <= bits) ]

[<Tests>]
let tests =
    testSequenced
    <| testList
        "Fhe"
        [ test "execute equals disable: ReLU, power-of-two, exact rounding grouped and per bit" {
              let x, _, xTest, _ = moons.Force()
              let model = (classifier []).IntegerModel.Value
              // A 2-bit threshold drops several bits, so that grouped rounding reads a group of more than one bit.
              for rounding in [ RoundingMethod.Exact; RoundingMethod.ExactPerBit ] do
                  let circuit =
                      Compiler.compile { CompileOptions.Default with RoundingThreshold = RoundingThreshold.Bits 2; Rounding = rounding } model x
                  let hidden = circuit.Layers[0]
                  Expect.isGreaterThan hidden.Shift 1 "several bits dropped before the lookup"
                  if rounding = RoundingMethod.Exact then
                      Expect.exists (hidden.RoundingGroups rounding) (fun (_, size) -> size > 1) "a group of several bits"
                  Expect.isGreaterThan circuit.BootstrapsPerSample hidden.Neurons "rounding bootstraps on top of the lookups"
                  expectExecuteEqualsDisable circuit xTest[..1]
          }

          test "execute equals disable: tables read in two steps, with and without rounding" {
              let x, _, xTest, _ = moons.Force()
              let hidden =
                  [ for extra in [ []; [ "n_w_bits", "4"; "n_a_bits", "4" ] ] ->
                        let circuit = Compiler.compile CompileOptions.Default (classifier extra).IntegerModel.Value x
                        let hidden = circuit.Layers[0]
                        Expect.isGreaterThan hidden.WindowBits 0 "the compiler chose a two-step read"
                        Expect.isLessThanOrEqual (hidden.WindowBits + 2) hidden.LookupBits "it saves two bits or more"
                        expectExecuteEqualsDisable circuit xTest[..1]
                        hidden ]
              // With 4-bit codes the rounding drops two bits: the top group is read by its sign alone, the bit below
              // it riding along into the window's reads.
              let fused = hidden |> List.filter (fun l -> l.SignOnlyTopGroup RoundingMethod.Exact)
              Expect.isNonEmpty fused "a sign-only top rounding group was exercised"
              for l in fused do
                  Expect.equal (l.BootstrapsFor RoundingMethod.Exact) (l.Neurons * 5) "sign, window group (2), class, final"
          }

          test "execute equals disable: Sigmoid, power-of-two" {
              let x, _, xTest, _ = moons.Force()
              let model = (classifier [ "module__activation_function", "sigmoid" ]).IntegerModel.Value
              expectExecuteEqualsDisable (Compiler.compile CompileOptions.Default model x) xTest[..1]
          }

          test "execute equals disable: a regressor without power-of-two scales" {
              let x, y, xTest, _ = TestData.split "diabetes"
              let regressor =
                  NeuralNetRegressor(small [ "module__n_hidden_neurons_multiplier", "0.5"; "module__power_of_two_scaling", "false" ])
                      .Fit(x, y)
              let circuit = Compiler.compile CompileOptions.Default regressor.IntegerModel.Value x
              expectExecuteEqualsDisable circuit xTest[..1]
          }

          test "simulate equals disable at the default p_error" {
              let x, _, xTest, _ = moons.Force()
              let model = (classifier []).IntegerModel.Value
              // 4-bit codes: a two-step read behind a sign-only top rounding group.
              let fourBits = (classifier [ "n_w_bits", "4"; "n_a_bits", "4" ]).IntegerModel.Value
              for model, options in
                  [ model, CompileOptions.Default
                    model, { CompileOptions.Default with RoundingThreshold = RoundingThreshold.Bits 2 }
                    model, { CompileOptions.Default with RoundingThreshold = RoundingThreshold.Bits 2; Rounding = RoundingMethod.ExactPerBit }
                    fourBits, CompileOptions.Default ] do
                  // The claim is about noise: calibrate on the rows that run too, since a row beyond the
                  // calibrated ranges overflows its accumulator (in FHE as in Concrete ML).
                  let circuit = Compiler.compile options model (Array.append x xTest)
                  Expect.equal (simulateAccumulators 0 circuit xTest) (disableAccumulators circuit xTest) "simulate = disable"
          }

          test "a worst-case range margin keeps inputs far outside the calibration set exact" {
              let x, _, _, _ = moons.Force()
              let model = (classifier []).IntegerModel.Value
              // Every combination of extreme feature values: the input codes at their limits.
              let extremes = [| for a in [ -50.0f; 50.0f ] do for b in [ -50.0f; 50.0f ] -> [| a; b |] |]
              let circuit = Compiler.compile { CompileOptions.Default with RangeMargin = infinity } model x
              Expect.equal (simulateAccumulators 0 circuit extremes) (disableAccumulators circuit extremes) "no overflow anywhere"
              let calibrated = Compiler.compile { CompileOptions.Default with RangeMargin = 0.0 } model x
              Expect.isLessThanOrEqual
                  (calibrated.Layers |> Array.sumBy _.AccumulatorBits)
                  (circuit.Layers |> Array.sumBy _.AccumulatorBits)
                  "the calibration range never needs more bits than the worst case"
              // The control: sized on the calibration rows alone, some extreme row wraps an accumulator.
              Expect.notEqual (simulateAccumulators 0 calibrated extremes) (disableAccumulators calibrated extremes) "overflow without the margin"
          }

          test "at a p_error near 1, simulate and execute both diverge from disable" {
              let x, _, xTest, _ = moons.Force()
              let model = (classifier []).IntegerModel.Value
              let circuit = Compiler.compile { CompileOptions.Default with PError = Some 0.9 } model x
              let expected = disableAccumulators circuit xTest
              let differing (got: int64[][]) = Array.fold2 (fun n a b -> if a = b then n else n + 1) 0 got expected[.. got.Length - 1]
              Expect.isGreaterThan (differing (simulateAccumulators 0 circuit xTest)) (xTest.Length / 10) "simulate diverges"
              Expect.isGreaterThan (differing (executeAccumulators circuit xTest[..7])) 0 "execute diverges"
          }

          test "the estimator predicts the same labels in every mode and reports its circuit" {
              let x, _, xTest, _ = moons.Force()
              let clf = classifier []
              Expect.throwsT<FheNotAvailableException> (fun () -> clf.Predict(xTest, FheMode.Simulate) |> ignore) "simulate before compile"
              Expect.throwsT<FheNotAvailableException> (fun () -> clf.Predict(xTest, FheMode.Execute) |> ignore) "execute before compile"
              let circuit = clf.Compile x
              Expect.equal (clf.Predict(xTest, FheMode.Simulate)) (clf.Predict xTest) "simulate"
              Expect.equal (clf.Predict(xTest[..1], FheMode.Execute)) (clf.Predict xTest[..1]) "execute"
              let proba = clf.PredictProba(xTest[..1], FheMode.Execute)
              Expect.all proba (fun p -> abs (Array.sum p - 1.0) < 1e-6) "probabilities sum to 1"
              let report = clf.CircuitReport()
              Expect.equal (report.Layers |> List.sumBy _.Bootstraps) circuit.BootstrapsPerSample "the report counts every bootstrap"
              Expect.all report.Layers (fun l -> l.MeasuredMilliseconds.IsSome && l.EstimatedMilliseconds.IsSome) "times after an encrypted run"
              Expect.isGreaterThan report.CompressedEvaluationKeyBytes 0L "key size"
              Expect.isLessThan report.CompressedEvaluationKeyBytes report.EvaluationKeyBytes "the seeded key is smaller"
          }

          test "compile refuses bad calibration sets and p_error settings" {
              let x, _, _, _ = moons.Force()
              let clf = classifier []
              Expect.throwsT<InvalidShapeException> (fun () -> clf.Compile(x |> Array.map (fun r -> Array.append r [| 0.0f |])) |> ignore) "wrong feature count"
              Expect.throwsT<InvalidShapeException> (fun () -> clf.Compile x[..2] |> ignore) "too few rows"
              Expect.throwsT<ArgumentException> (fun () -> clf.Compile(x, pError = 1e-6, globalPError = 1e-3) |> ignore) "both p_errors"
              for bad in [ 0.0; 1.0; -0.5; nan ] do
                  Expect.throwsT<ParameterOutOfRangeException> (fun () -> clf.Compile(x, pError = bad) |> ignore) $"p_error %g{bad}"
          }

          test "accumulators too wide for any parameter set name the layer and the fixes" {
              let x, _, _, _ = moons.Force()
              let model = (classifier [ "module__n_w_bits", "8"; "module__n_a_bits", "8" ]).IntegerModel.Value
              let e =
                  try
                      Compiler.compile CompileOptions.Default model x |> ignore
                      None
                  with :? CircuitTooWideException as e ->
                      Some e
              match e with
              | Some e ->
                  Expect.stringContains e.Message "rounding_threshold_bits" "names a fix"
                  Expect.stringContains e.Message $"Layer %d{e.Layer}" "names the layer"
              | None -> failtest "an 8-bit network compiled without rounding"
          } ]
