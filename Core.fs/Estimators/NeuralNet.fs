namespace FheNet.Estimators

open System
open System.Text.Json
open FheNet
open FheNet.Numerics
open FheNet.Autodiff
open FheNet.Nn
open FheNet.Integer
open FheNet.Fhe
open FheNet.Preprocessing

/// A trained network with what prediction needs: the feature scaler learned by fit, the integer model (None for a
/// float twin) and, for a regressor, the target standardization.
type FittedNetwork =
    { Network: Network
      Integer: IntegerModel option
      History: EpochReport list
      /// The quantized model against its float path on the training rows (None for a float twin or a loaded model).
      QuantizationCheck: QuantizationCheck option
      Scaler: FeatureScaler
      TargetMean: float[]
      TargetStd: float[] }

/// A model compiled for FHE: its circuit, the raw feature range it was calibrated for and, once generated, its keys
/// with the server's prepared circuit.
[<Sealed>]
type internal FheSession(circuit: Circuit, range: FeatureRange, seed: int, roundingCost: RoundingCost option) =
    let mutable keys: (CircuitKeys * PreparedCircuit) option = None
    // Mean seconds per layer over the rows of the last encrypted run.
    let mutable lastLayerSeconds: float[] option = None
    // Seconds the last key generation and preparation took.
    let mutable keygenSeconds: float option = None

    member _.Circuit = circuit

    member _.Range = range

    /// The keys, generated on first use (or again when forced).
    member _.Keygen(force: bool) =
        match keys with
        | Some k when not force -> k
        | _ ->
            let budget = MemoryBudget.defaultBytes ()
            ResourceCheck.keygenAndPrepare budget circuit
            let watch = Diagnostics.Stopwatch.StartNew()
            let k = FheClient.keygenWithin budget circuit
            let prepared = FheServer.prepareWithin budget circuit (FheNet.Tfhe.CompressedServerKey.decompress k.CompressedServerKey)
            keygenSeconds <- Some watch.Elapsed.TotalSeconds
            keys <- Some(k, prepared)
            k, prepared

    /// Output accumulators of rows with simulated bootstrap errors (seeded per row, so repeatable).
    member _.Simulate(x: float32[][]) : int64[][] =
        x
        |> Array.Parallel.mapi (fun i row ->
            let rng = TrainingRng(uint64 seed * 1_000_003UL + uint64 i)
            FheSimulator.forward rng circuit (IntegerModel.quantizeRow circuit.Model row))

    /// Output accumulators of rows computed encrypted: client encryption, server evaluation, client decryption.
    member this.Execute(x: float32[][]) : int64[][] =
        let k, prepared = this.Keygen false
        let runs =
            x
            |> Array.map (fun row ->
                let inputs = FheClient.encryptRow k circuit row |> Array.map FheNet.Tfhe.Lwe.expand
                let outputs, seconds = FheServer.evaluateProfiled prepared inputs
                FheClient.decrypt k circuit outputs, seconds)
        if runs.Length > 0 then
            lastLayerSeconds <- Some(Array.init circuit.Layers.Length (fun l -> runs |> Array.averageBy (fun (_, s) -> s[l])))
        runs |> Array.map fst

    /// The circuit's report; with keys, estimated times from a measured bootstrap, and the last encrypted run's.
    member _.Report() =
        let perBootstrap = keys |> Option.map (fun (_, prepared) -> FheServer.bootstrapMilliseconds prepared)
        let report =
            { CircuitReport.create circuit perBootstrap Environment.ProcessorCount lastLayerSeconds with
                RoundingCost = roundingCost }
        match keygenSeconds with
        | Some seconds -> CircuitReport.withMeasuredKeys seconds report
        | None -> report

/// Checks and training shared by both estimators.
module internal Fitting =

    let checkFeatures (name: string) (x: float32[][]) (expected: int option) =
        Guard.nonEmpty name x.Length
        let width = match expected with Some d -> d | None -> x[0].Length
        if width = 0 then raise (InvalidShapeException(name, "has rows with no features"))
        x
        |> Array.iteri (fun i row ->
            if isNull (box row) then raise (InvalidShapeException($"%s{name}[%d{i}]", "is null"))
            if row.Length <> width then
                let what = if expected.IsSome then "the model was fitted on" else "row 0 has"
                raise (
                    InvalidShapeException(
                        $"%s{name}[%d{i}]",
                        $"has %d{row.Length} features but %s{what} %d{width}; pass rows of %d{width} features"
                    )
                ))
        FeatureScaler.checkFinite name x

    let toSingle (x: float[][]) : float32[][] =
        if isNull (box x) then raise (InvalidShapeException("X", "is null"))
        x
        |> Array.mapi (fun i r ->
            if isNull (box r) then raise (InvalidShapeException($"X[%d{i}]", "is null"))
            Array.map float32 r)

    let networkConfig (s: NeuralNetSettings) (inputDim: int) (outputs: int) (quantized: bool) =
        { InputDim = inputDim
          Hidden = max 1 (int (float inputDim * s.HiddenMultiplier))
          Outputs = outputs
          Layers = s.Layers
          Activation = s.Activation
          Quant =
            if quantized then
                Some
                    { WeightBits = s.WeightBits
                      ActivationBits = s.ActivationBits
                      AccumulatorBits = s.AccumulatorBits
                      PowerOfTwo = s.PowerOfTwoScaling }
            else
                None }

    let trainConfig (s: NeuralNetSettings) (rows: int) (log: EpochReport -> unit) =
        { Epochs = s.MaxEpochs
          LearningRate = s.Lr
          BatchSize = NeuralNetSettings.batchSize s rows
          Optimizer = s.Optimizer
          Momentum = s.Momentum
          WeightDecay = s.WeightDecay
          Shuffle = s.Shuffle
          Patience = s.Patience
          Threads = max 1 s.Threads
          Seed = s.Seed
          OnEpoch = log }

    let epochLogger (s: NeuralNetSettings) =
        fun (r: EpochReport) ->
            if s.Verbose then
                let opt (v: float option) = v |> Option.map (sprintf "%.4f") |> Option.defaultValue "-"
                let run = if r.Refit then "refit" else "epoch"
                printfn "%s %3d  train_loss %.4f  valid_loss %s  valid_metric %s  %.3fs" run r.Epoch r.TrainLoss (opt r.ValidLoss) (opt r.ValidMetric) r.Seconds
            s.OnEpoch |> Option.iter (fun f -> f r)

    let subsetTargets (targets: Targets) (rows: int[]) =
        match targets with
        | Targets.Classes(labels, w) -> Targets.Classes(rows |> Array.map (fun i -> labels[i]), w)
        | Targets.Values t -> Targets.Values(Tensor.gatherRows t (ReadOnlySpan rows))

    /// Checks the trained quantized network against its float path on the training rows. On a collapse (far below
    /// the float path) it re-fits every scale to the trained weights and the data, the remedy for scales left behind
    /// by training, and keeps the re-fitted network when it scores better. Says so when verbose.
    let guardCollapse (s: NeuralNetSettings) threads (net: Network) (x: Tensor) (targets: Targets) =
        match Training.checkQuantization threads net x targets with
        | Some check when check.Collapsed ->
            let refitted = Network.copy net
            Network.calibrateScales threads refitted (Network.calibrationRows x)
            Network.updateMasks refitted
            let after = (Training.checkQuantization threads refitted x targets).Value
            let net, check =
                if after.Quantized > check.Quantized then refitted, { after with Recovered = true } else net, check
            if s.Verbose then
                let outcome = if check.Recovered then "recovered by re-fitting the scales" else "a scale re-fit did not help"
                printfn
                    "warning: the quantized model scores %.3f on the training rows, its float path %.3f (%s); try more bits (module__n_w_bits, module__n_a_bits), more epochs or standardized features"
                    check.Quantized check.Float outcome
            net, Some check
        | check -> net, check

    /// Trains a network (quantized or its float twin) from scratch, or continues from <c>start</c>. With a
    /// validation split, a first run on the other rows picks the epoch of lowest validation loss; with Refit, the
    /// model then trains on every row for that many epochs (the history holds both runs).
    let train (s: NeuralNetSettings) (x: float32[][]) (targets: Targets) (outputs: int) (quantized: bool) (start: Network option) =
        let xs = Tensor.ofRows x
        let threads = max 1 s.Threads
        // Returns the network, its history and the float pre-training epochs it used (the best on the validation
        // rows when there are any, so that a long run does not overfit before quantization-aware training starts).
        let run (s: NeuralNetSettings) (refit: bool) (rows: int[]) (validRows: int[]) =
            let xt = Tensor.gatherRows xs (ReadOnlySpan rows)
            let validation =
                if validRows.Length = 0 then None
                else Some(Tensor.gatherRows xs (ReadOnlySpan validRows), subsetTargets targets validRows)
            let net, pretrained =
                match start with
                | Some n -> Network.copy n, 0
                | None ->
                    let n = Network.create (networkConfig s x[0].Length outputs quantized) (TrainingRng(uint64 s.Seed))
                    let calibration = Network.calibrationRows xt
                    Network.centerHiddenBiases threads n calibration
                    let pretrain = NeuralNetSettings.pretrainEpochs s
                    let pretrained =
                        if quantized && pretrain > 0 then
                            // Training the float path trains the quantized network's weights and biases (left at
                            // the best epoch on the validation rows); the scales are then calibrated on them.
                            let config = { trainConfig s xt.Rows ignore with Epochs = pretrain; Patience = None }
                            let reports = Training.train config (Network.floatPath n) xt (subsetTargets targets rows) validation
                            match validation with
                            | Some _ -> (reports |> List.minBy (fun r -> r.ValidLoss.Value)).Epoch
                            | None -> pretrain
                        else
                            0
                    Network.calibrateScales threads n calibration
                    n, pretrained
            let mark (r: EpochReport) = { r with Refit = refit }
            let log = epochLogger s
            let history = Training.train (trainConfig s xt.Rows (mark >> log)) net xt (subsetTargets targets rows) validation
            net, List.map mark history, pretrained
        let trainRows, validRows = Training.validationSplit s.ValidationFraction s.Seed targets x.Length
        let net, history, pretrained = run s false trainRows validRows
        let net, history =
            if validRows.Length = 0 || not s.Refit then
                net, history
            else
                let best = (history |> List.minBy (fun r -> r.ValidLoss.Value)).Epoch
                let refitSettings = { s with MaxEpochs = best; PretrainEpochs = Some pretrained; Patience = None }
                let refitted, refitHistory, _ = run refitSettings true (Array.init x.Length id) [||]
                refitted, history @ refitHistory
        let net, check = guardCollapse s threads net xs targets
        net, history, check

    let fitted (net: Network) history check scaler mean std =
        { Network = net
          Integer = (if net.Config.Quant.IsSome then Some(IntegerModel.ofNetwork net) else None)
          History = history
          QuantizationCheck = check
          Scaler = scaler
          TargetMean = mean
          TargetStd = std }

    /// Real outputs (logits, or standardized values) of a fitted network: the integer model when quantized (the
    /// compiled circuit's, rounding threshold included, once compiled), simulated or encrypted as asked.
    let outputs (s: NeuralNetSettings) (f: FittedNetwork) (session: FheSession option) (fhe: FheMode) (x: float32[][]) =
        checkFeatures "X" x (Some f.Network.Config.InputDim)
        let x = FeatureScaler.transform f.Scaler x
        match fhe, session, f.Integer with
        | FheMode.Disable, None, Some model -> IntegerModel.predict (max 1 s.Threads) model x
        | FheMode.Disable, None, None ->
            let out = Network.predict (max 1 s.Threads) f.Network (Tensor.ofRows x)
            Array.init out.Rows (Tensor.row out)
        | FheMode.Disable, Some session, _ -> IntegerModel.predict (max 1 s.Threads) session.Circuit.Model x
        | FheMode.Simulate, Some session, _ -> session.Simulate x |> Array.map (IntegerModel.dequantize session.Circuit.Model)
        | FheMode.Execute, Some session, _ -> session.Execute x |> Array.map (IntegerModel.dequantize session.Circuit.Model)
        | _, None, _ -> raise (FheNotAvailableException(string fhe))

    /// Compiles the integer model of a fitted network for FHE on raw calibration rows; the raw feature range it is
    /// calibrated for is theirs, widened by the range margin.
    let compile (s: NeuralNetSettings) (f: FittedNetwork) (x: float32[][]) (options: CompileOptions) =
        checkFeatures "X" x (Some f.Network.Config.InputDim)
        match f.Integer with
        | Some model ->
            let circuit, roundingCost = Compiler.compileWithCost options model (FeatureScaler.transform f.Scaler x)
            FheSession(circuit, FeatureRange.ofRows options.RangeMargin x, s.Seed, roundingCost)
        | None -> raise (InvalidOperationException "A float twin has no integer model to compile; compile the quantized model.")

    /// The compile options from the reference's keyword arguments, and the range margin (the fraction by which
    /// every calibrated range widens on both sides; default 0.25, infinity for the worst case over all inputs).
    let compileOptions (pError: float option) (globalPError: float option) (roundingThresholdBits: int option) (rounding: RoundingMethod option) (rangeMargin: float option) =
        { PError = pError
          GlobalPError = globalPError
          RoundingThreshold = RoundingThreshold.ofBits roundingThresholdBits
          Rounding = defaultArg rounding RoundingMethod.Exact
          RangeMargin = defaultArg rangeMargin CompileOptions.Default.RangeMargin
          MemoryBudgetBytes = None }

    /// Per-layer bit-widths of the integer model on raw calibration rows.
    let bitWidths (f: FittedNetwork) (x: float32[][]) =
        checkFeatures "X" x (Some f.Network.Config.InputDim)
        match f.Integer with
        | Some m -> IntegerModel.bitWidths m (FeatureScaler.transform f.Scaler x)
        | None -> raise (InvalidOperationException "A float twin has no integer model.")

    /// The compiled form of a fitted network saved in a directory (see FheModelDev.LoadCompiledOf).
    let loadCompiled (s: NeuralNetSettings) (f: FittedNetwork) (directory: string) =
        match f.Integer with
        | Some model ->
            let dev = FheNet.Deploy.FheModelDev.LoadCompiledOf(model, f.Scaler, directory)
            FheSession(dev.Circuit, dev.ClientArtifact.Inputs.Range, s.Seed, None)
        | None -> raise (InvalidOperationException "A float twin has no integer model to compile.")

    /// The scaler of a fit: the one a pruned network was trained with, or one learned on the rows.
    let scalerFor (s: NeuralNetSettings) (start: (Network * FeatureScaler) option) (x: float32[][]) =
        match start with
        | Some(_, scaler) -> scaler
        | None -> FeatureScaler.fit s.Scaling x

    let compiledSession (session: FheSession option) =
        match session with
        | Some s -> s
        | None -> raise (FheNotAvailableException(string FheMode.Execute))

    /// What a deployed client needs of a fitted, compiled model's inputs.
    let inputs (f: FittedNetwork) (session: FheSession option) : InputContract =
        { Scaler = f.Scaler; Range = (compiledSession session).Range }

    /// Removes the given fraction of hidden neurons (by L2 norm of their incoming weights) from every hidden layer.
    let pruneNeurons (net: Network) (fraction: float) : Network =
        let hidden = net.Config.Hidden
        let remove = int (float hidden * fraction)
        let keepCount = hidden - remove
        let mutable layers = Array.map id net.Layers
        let clone (t: Tensor) = Ad.parameter t
        for l in 0 .. net.Layers.Length - 2 do
            let p = layers[l]
            let w = p.Weight.Value
            let norms = Array.init w.Rows (fun i -> Tensor.row w i |> Array.sumBy (fun v -> float v * float v))
            let kept =
                Array.init w.Rows id
                |> Array.sortWith (fun i j -> compare (norms[j], i) (norms[i], j))
                |> Array.take keepCount
                |> Array.sort
            let rows (t: Tensor) = Tensor.gatherRows t (ReadOnlySpan kept)
            let maskOf (mask: float32[]) (t: Tensor) =
                if mask.Length = 0 then mask else (rows (Tensor.ofArray t.Rows t.Cols mask)).Data
            layers[l] <-
                { p with
                    Weight = clone (rows w)
                    Bias = clone (Tensor.ofArray 1 keepCount (kept |> Array.map (fun i -> p.Bias.Value.Data[i])))
                    Mask = maskOf p.Mask w }
            let next = layers[l + 1]
            let nw = next.Weight.Value
            let columns (t: Tensor) = Tensor.transpose (rows (Tensor.transpose t))
            layers[l + 1] <-
                { next with
                    Weight = clone (columns nw)
                    Mask = if next.Mask.Length = 0 then next.Mask else (columns (Tensor.ofArray nw.Rows nw.Cols next.Mask)).Data }
        Network.copy { Config = { net.Config with Hidden = keepCount }; Layers = layers }

    let checkFraction (fraction: float) =
        if not (fraction >= 0.0 && fraction < 1.0) then
            raise (ParameterOutOfRangeException("fraction", fraction, "a fraction of hidden neurons in [0, 1)"))

/// The serialized form of a fitted model (System.Text.Json, versioned).
type ModelDocument =
    { Format: string
      Version: int
      Kind: string
      Settings: (string * string)[]
      Classes: string[]
      InputDim: int
      Hidden: int
      Outputs: int
      Quantized: bool
      Weights: float32[][]
      Biases: float32[][]
      InputLog2Scales: float32[]
      WeightLog2Scales: float32[]
      Masks: float32[][]
      TargetMean: float[]
      TargetStd: float[]
      /// The feature scaler (version 2; version 1 models took features as they were).
      ScalerCenter: float[]
      ScalerScale: float[] }

module internal Documents =

    [<Literal>]
    let FormatName = "FheNet.NeuralNet"

    [<Literal>]
    let CurrentVersion = 2

    let dump (kind: string) (s: NeuralNetSettings) (classes: string[]) (f: FittedNetwork) =
        let net = f.Network
        let doc =
            { Format = FormatName
              Version = CurrentVersion
              Kind = kind
              Settings = NeuralNetSettings.toPairs s
              Classes = classes
              InputDim = net.Config.InputDim
              Hidden = net.Config.Hidden
              Outputs = net.Config.Outputs
              Quantized = net.Config.Quant.IsSome
              Weights = net.Layers |> Array.map (fun p -> p.Weight.Value.Data)
              Biases = net.Layers |> Array.map (fun p -> p.Bias.Value.Data)
              InputLog2Scales = net.Layers |> Array.map (fun p -> p.InputLog2Scale.Value.Data[0])
              WeightLog2Scales = net.Layers |> Array.map (fun p -> p.WeightLog2Scale.Value.Data[0])
              Masks = net.Layers |> Array.map (fun p -> p.Mask)
              TargetMean = f.TargetMean
              TargetStd = f.TargetStd
              ScalerCenter = f.Scaler.Center
              ScalerScale = f.Scaler.Scale }
        JsonSerializer.Serialize doc

    let load (kind: string) (json: string) =
        let doc =
            try
                match JsonSerializer.Deserialize<ModelDocument> json with
                | null -> raise (InvalidShapeException("json", "is null"))
                | d -> d
            with :? JsonException as e ->
                raise (InvalidShapeException("json", $"is not a dumped model: %s{e.Message}"))
        if doc.Format <> FormatName then
            raise (InvalidShapeException("json", $"is not a %s{FormatName} document"))
        if doc.Version < 1 || doc.Version > CurrentVersion then
            raise (ParameterOutOfRangeException("json.Version", doc.Version, $"a format version from 1 to %d{CurrentVersion}"))
        if doc.Kind <> kind then
            raise (InvalidShapeException("json", $"holds a %s{doc.Kind}, not a %s{kind}"))
        let settings =
            NeuralNetSettings.setMany (doc.Settings |> Array.map (fun (k, v: string) -> k, (v :> objnull))) NeuralNetSettings.defaults
        let settings, scaler =
            if doc.Version = 1 then
                { settings with Scaling = FeatureScaling.None }, FeatureScaler.identity doc.InputDim
            else
                let scaler = { Center = doc.ScalerCenter; Scale = doc.ScalerScale }
                if isNull (box scaler.Center) || isNull (box scaler.Scale) || scaler.Center.Length <> doc.InputDim || scaler.Scale.Length <> doc.InputDim
                   || scaler.Scale |> Array.exists (fun v -> not (Double.IsFinite v && v > 0.0))
                   || scaler.Center |> Array.exists (Double.IsFinite >> not) then
                    raise (InvalidShapeException("json", $"has no valid feature scaler for its %d{doc.InputDim} features"))
                settings, scaler
        let config = Fitting.networkConfig settings doc.InputDim doc.Outputs doc.Quantized
        let config = { config with Hidden = doc.Hidden }
        let widths = config.Widths
        let net =
            { Config = config
              Layers =
                Array.init config.Layers (fun l ->
                    { Weight = Ad.parameter (Tensor.ofArray widths[l + 1] widths[l] doc.Weights[l])
                      Bias = Ad.parameter (Tensor.ofArray 1 widths[l + 1] doc.Biases[l])
                      InputLog2Scale = Ad.parameter (Tensor.scalar doc.InputLog2Scales[l])
                      WeightLog2Scale = Ad.parameter (Tensor.scalar doc.WeightLog2Scales[l])
                      Mask = doc.Masks[l]
                      Buffers = LinearBuffers() }) }
        settings, doc.Classes, Fitting.fitted net [] None scaler doc.TargetMean doc.TargetStd

/// A classifier trained with quantization-aware training; predicts with its integer model (the program FHE runs).
/// Labels may be of any type with equality and ordering; predict returns them. Not thread-safe while fitting.
type NeuralNetClassifier<'Label when 'Label: comparison>(settings: NeuralNetSettings) =
    do NeuralNetSettings.validate settings
    let mutable state: (FittedNetwork * 'Label[]) option = None
    let mutable session: FheSession option = None

    let fittedState (what: string) =
        match state with
        | Some s -> s
        | None -> raise (NotFittedException what)

    /// An estimator with the documented defaults.
    new() = NeuralNetClassifier<'Label>(NeuralNetSettings.defaults)

    /// The settings.
    member _.Settings = settings

    /// The sorted class labels seen by fit.
    member _.Classes = snd (fittedState "Classes")

    /// The integer model (None for a float twin).
    member _.IntegerModel = (fst (fittedState "IntegerModel")).Integer

    /// The trained network (float values, scales, masks).
    member _.Network = (fst (fittedState "Network")).Network

    /// The feature scaler learned by fit, applied to raw features before the integer model.
    member _.Scaler = (fst (fittedState "Scaler")).Scaler

    /// The training log.
    member _.History = (fst (fittedState "History")).History

    /// The quantized model against its float path on the training rows (a collapse, and whether a scale re-fit
    /// recovered from it); None for a loaded model.
    member _.QuantizationCheck = (fst (fittedState "QuantizationCheck")).QuantizationCheck

    /// True after fit or load.
    member _.IsFitted = state.IsSome

    /// True after compile or LoadCompiled (a new fit discards the circuit).
    member _.IsCompiled = session.IsSome

    /// Fits the quantized network or its float twin, from scratch or from <c>start</c>.
    member internal _.FitCore(x: float32[][], y: 'Label[], quantized: bool, start: (Network * FeatureScaler) option) =
        Fitting.checkFeatures "X" x None
        let scaler = Fitting.scalerFor settings start x
        if isNull (box y) then raise (InvalidShapeException("y", "is null"))
        Guard.sameLength "y" x.Length y.Length
        let classes = Array.distinct y |> Array.sort
        if classes.Length < 2 then
            raise (InvalidShapeException("y", $"has %d{classes.Length} class; a classifier needs at least 2 classes"))
        let labels = y |> Array.map (fun v -> Array.BinarySearch(classes, v))
        let weights =
            match settings.ClassWeights with
            | ClassWeights.Uniform -> Array.create classes.Length 1.0f
            | ClassWeights.Balanced ->
                let counts = Array.countBy id labels |> Map.ofArray
                Array.init classes.Length (fun c -> float32 (float y.Length / float classes.Length / float counts[c]))
            | ClassWeights.Explicit w ->
                Guard.sameLength "criterion__weight" classes.Length w.Length
                w |> Array.iteri (fun i v -> if not (v >= 0.0 && Double.IsFinite v) then raise (ParameterOutOfRangeException($"criterion__weight[%d{i}]", v, "a finite weight >= 0")))
                w |> Array.map float32
        let net, history, check =
            Fitting.train settings (FeatureScaler.transform scaler x) (Targets.Classes(labels, weights)) classes.Length quantized (Option.map fst start)
        state <- Some(Fitting.fitted net history check scaler [||] [||], classes)
        session <- None

    /// Trains on rows of features and their labels; returns this estimator.
    member this.Fit(x: float32[][], y: 'Label[]) =
        this.FitCore(x, y, true, None)
        this

    /// Trains on float64 features.
    member this.Fit(x: float[][], y: 'Label[]) = this.Fit(Fitting.toSingle x, y)

    /// Class probabilities (rows sum to 1; the softmax of the dequantized outputs).
    member _.PredictProba(x: float32[][], ?fhe: FheMode) : float[][] =
        let f, _ = fittedState "PredictProba"
        let out = Fitting.outputs settings f session (defaultArg fhe FheMode.Disable) x
        let p = Ad.softmaxRows (Tensor.ofRows out)
        Array.init p.Rows (fun i -> Tensor.row p i |> Array.map float)

    /// Predicted labels: the class of the largest output.
    member _.Predict(x: float32[][], ?fhe: FheMode) : 'Label[] =
        let f, classes = fittedState "Predict"
        Fitting.outputs settings f session (defaultArg fhe FheMode.Disable) x
        |> Array.map (fun r -> classes[Array.IndexOf(r, Array.max r)])

    /// Predicted labels for float64 features.
    member this.Predict(x: float[][], ?fhe: FheMode) = this.Predict(Fitting.toSingle x, defaultArg fhe FheMode.Disable)

    /// Accuracy on (x, y).
    member this.Score(x: float32[][], y: 'Label[]) =
        let p = this.Predict x
        Guard.sameLength "y" p.Length y.Length
        float (Array.fold2 (fun n a b -> if a = b then n + 1 else n) 0 p y) / float y.Length

    /// Compiles the model for FHE on calibration rows (e.g. the training set): p_error per lookup (default 2^-40)
    /// or global_p_error per inference, an optional rounding threshold for every lookup, exact rounding unless
    /// asked otherwise. Returns the circuit; predict with FheMode.Simulate or FheMode.Execute afterwards.
    member _.Compile(x: float32[][], ?pError: float, ?globalPError: float, ?roundingThresholdBits: int, ?rounding: RoundingMethod, ?rangeMargin: float) =
        let f, _ = fittedState "Compile"
        let compiled =
            Fitting.compile settings f x (Fitting.compileOptions pError globalPError roundingThresholdBits rounding rangeMargin)
        session <- Some compiled
        compiled.Circuit

    /// The compiled circuit.
    member _.Circuit = (Fitting.compiledSession session).Circuit

    /// The FHE keys of the compiled circuit (generated once and cached; `force` makes new ones).
    member _.Keygen(?force: bool) = fst ((Fitting.compiledSession session).Keygen(defaultArg force false))

    /// Per-layer lookups, bits, parameters, key sizes and (after keygen / an encrypted run) times.
    member _.CircuitReport() = (Fitting.compiledSession session).Report()

    /// Per-layer accumulator and lookup-input bit-widths on calibration rows.
    member _.BitWidths(x: float32[][]) = Fitting.bitWidths (fst (fittedState "BitWidths")) x

    /// Fits this quantized model and its float twin (same settings, no quantization or pruning); returns both.
    member this.FitBenchmark(x: float32[][], y: 'Label[]) =
        this.Fit(x, y) |> ignore
        let twin = NeuralNetClassifier<'Label>(settings)
        twin.FitCore(x, y, false, None)
        this, twin

    /// A new classifier with the given fraction of every hidden layer's neurons removed (smallest L2 norm first),
    /// fine-tuned on (x, y) for max_epochs.
    member _.Prune(x: float32[][], y: 'Label[], fraction: float) =
        Fitting.checkFraction fraction
        let f, _ = fittedState "Prune"
        let pruned = Fitting.pruneNeurons f.Network fraction
        let result = NeuralNetClassifier<'Label>(settings)
        result.FitCore(x, y, f.Network.Config.Quant.IsSome, Some(pruned, f.Scaler))
        result

    /// The fitted model as JSON (labels are stored as JSON values).
    member _.Dump() =
        let f, classes = fittedState "Dump"
        Documents.dump "classifier" settings (classes |> Array.map (fun c -> JsonSerializer.Serialize c)) f

    member internal _.Restore(f: FittedNetwork, classes: 'Label[]) = state <- Some(f, classes)

    /// A classifier restored from <c>Dump</c>'s JSON.
    static member Load(json: string) : NeuralNetClassifier<'Label> =
        let settings, classes, f = Documents.load "classifier" json
        let c = NeuralNetClassifier<'Label>(settings)
        let label (text: string) : 'Label =
            match JsonSerializer.Deserialize(text, typeof<'Label>) with
            | null -> raise (InvalidShapeException("json", $"class label %s{text} does not read as the label type"))
            | v -> unbox<'Label> v
        c.Restore(f, classes |> Array.map label)
        c

    // Deployment (issue 6): the artifacts of the compiled model, and its compiled form restored from them.

    /// Restores the compiled circuit saved by <c>FheModelDev(this).Save(directory)</c> (after <c>Load</c> of the
    /// dumped model), so that predict runs in every FHE mode exactly as before saving. Returns the circuit.
    member _.LoadCompiled(directory: string) =
        let compiled = Fitting.loadCompiled settings (fst (fittedState "LoadCompiled")) directory
        session <- Some compiled
        compiled.Circuit

    interface FheNet.Deploy.ICompiledFheModel with
        member this.Circuit = this.Circuit
        member this.Task = FheNet.Deploy.ModelTask.Classification(this.Classes |> Array.map string)
        member _.Inputs = Fitting.inputs (fst (fittedState "Inputs")) session

/// A regressor trained with quantization-aware training on one or several targets (standardized internally);
/// predicts with its integer model.
type NeuralNetRegressor(settings: NeuralNetSettings) =
    do NeuralNetSettings.validate settings
    let mutable state: FittedNetwork option = None
    let mutable session: FheSession option = None

    let fittedState (what: string) =
        match state with
        | Some s -> s
        | None -> raise (NotFittedException what)

    /// An estimator with the documented defaults.
    new() = NeuralNetRegressor(NeuralNetSettings.defaults)

    /// The settings.
    member _.Settings = settings
    /// The integer model (None for a float twin).
    member _.IntegerModel = (fittedState "IntegerModel").Integer
    /// The trained network (float values, scales, masks).
    member _.Network = (fittedState "Network").Network
    /// The feature scaler learned by fit, applied to raw features before the integer model.
    member _.Scaler = (fittedState "Scaler").Scaler
    /// The training log.
    member _.History = (fittedState "History").History
    /// The quantized model against its float path on the training rows (a collapse, and whether a scale re-fit
    /// recovered from it); None for a loaded model.
    member _.QuantizationCheck = (fittedState "QuantizationCheck").QuantizationCheck
    /// True after fit or load.
    member _.IsFitted = state.IsSome

    /// True after compile or LoadCompiled (a new fit discards the circuit).
    member _.IsCompiled = session.IsSome

    member internal _.FitCore(x: float32[][], y: float[][], quantized: bool, start: (Network * FeatureScaler) option) =
        Fitting.checkFeatures "X" x None
        let scaler = Fitting.scalerFor settings start x
        if isNull (box y) then raise (InvalidShapeException("y", "is null"))
        Guard.sameLength "y" x.Length y.Length
        let outputs = y[0].Length
        y
        |> Array.iteri (fun i r ->
            if r.Length <> outputs || outputs = 0 then
                raise (InvalidShapeException($"y[%d{i}]", $"has %d{r.Length} targets but y[0] has %d{outputs}"))
            r |> Array.iteri (fun j v -> Guard.finite $"y[%d{i}][%d{j}]" v))
        let mean = Array.init outputs (fun j -> y |> Array.averageBy (fun r -> r[j]))
        let std =
            Array.init outputs (fun j ->
                let s = sqrt (y |> Array.averageBy (fun r -> (r[j] - mean[j]) ** 2.0))
                if s > 0.0 then s else 1.0)
        let standardized = Tensor.init y.Length outputs (fun i j -> float32 ((y[i][j] - mean[j]) / std[j]))
        let net, history, check =
            Fitting.train settings (FeatureScaler.transform scaler x) (Targets.Values standardized) outputs quantized (Option.map fst start)
        state <- Some(Fitting.fitted net history check scaler mean std)
        session <- None

    /// Trains on rows of features and several targets per row; returns this estimator.
    member this.Fit(x: float32[][], y: float[][]) =
        this.FitCore(x, y, true, None)
        this

    /// Trains on rows of features and one target per row.
    member this.Fit(x: float32[][], y: float[]) = this.Fit(x, y |> Array.map (fun v -> [| v |]))

    /// Trains on float64 features and one target per row.
    member this.Fit(x: float[][], y: float[]) = this.Fit(Fitting.toSingle x, y)

    /// Predictions, one array of targets per row.
    member _.PredictMulti(x: float32[][], ?fhe: FheMode) : float[][] =
        let f = fittedState "Predict"
        Fitting.outputs settings f session (defaultArg fhe FheMode.Disable) x
        |> Array.map (fun r -> r |> Array.mapi (fun j v -> float v * f.TargetStd[j] + f.TargetMean[j]))

    /// Predictions of the first (or only) target.
    member this.Predict(x: float32[][], ?fhe: FheMode) : float[] =
        this.PredictMulti(x, defaultArg fhe FheMode.Disable) |> Array.map (fun r -> r[0])

    /// R² of the first target on (x, y).
    member this.Score(x: float32[][], y: float[]) =
        let p = this.Predict x
        Guard.sameLength "y" p.Length y.Length
        let mean = Array.average y
        let ssTot = y |> Array.sumBy (fun v -> (v - mean) ** 2.0)
        let ssRes = Array.fold2 (fun acc a b -> acc + (a - b) ** 2.0) 0.0 p y
        if ssTot = 0.0 then 0.0 else 1.0 - ssRes / ssTot

    /// Compiles the model for FHE on calibration rows (see NeuralNetClassifier.Compile).
    member _.Compile(x: float32[][], ?pError: float, ?globalPError: float, ?roundingThresholdBits: int, ?rounding: RoundingMethod, ?rangeMargin: float) =
        let f = fittedState "Compile"
        let compiled =
            Fitting.compile settings f x (Fitting.compileOptions pError globalPError roundingThresholdBits rounding rangeMargin)
        session <- Some compiled
        compiled.Circuit

    /// The compiled circuit.
    member _.Circuit = (Fitting.compiledSession session).Circuit

    /// The FHE keys of the compiled circuit (generated once and cached; `force` makes new ones).
    member _.Keygen(?force: bool) = fst ((Fitting.compiledSession session).Keygen(defaultArg force false))

    /// Per-layer lookups, bits, parameters, key sizes and (after keygen / an encrypted run) times.
    member _.CircuitReport() = (Fitting.compiledSession session).Report()

    /// Per-layer accumulator and lookup-input bit-widths on calibration rows.
    member _.BitWidths(x: float32[][]) = Fitting.bitWidths (fittedState "BitWidths") x

    /// Fits this quantized model and its float twin; returns both.
    member this.FitBenchmark(x: float32[][], y: float[]) =
        this.Fit(x, y) |> ignore
        let twin = NeuralNetRegressor(settings)
        twin.FitCore(x, y |> Array.map (fun v -> [| v |]), false, None)
        this, twin

    /// A new regressor with the given fraction of hidden neurons removed, fine-tuned on (x, y).
    member _.Prune(x: float32[][], y: float[], fraction: float) =
        Fitting.checkFraction fraction
        let f = fittedState "Prune"
        let result = NeuralNetRegressor(settings)
        result.FitCore(x, y |> Array.map (fun v -> [| v |]), f.Network.Config.Quant.IsSome, Some(Fitting.pruneNeurons f.Network fraction, f.Scaler))
        result

    /// The fitted model as JSON.
    member _.Dump() = Documents.dump "regressor" settings [||] (fittedState "Dump")

    /// A regressor restored from <c>Dump</c>'s JSON.
    static member Load(json: string) =
        let settings, _, f = Documents.load "regressor" json
        let r = NeuralNetRegressor(settings)
        r.Restore f
        r

    member internal _.Restore(f: FittedNetwork) = state <- Some f

    // Deployment (issue 6): the artifacts of the compiled model, and its compiled form restored from them.

    /// Restores the compiled circuit saved by <c>FheModelDev(this).Save(directory)</c> (see the classifier's).
    member _.LoadCompiled(directory: string) =
        let compiled = Fitting.loadCompiled settings (fittedState "LoadCompiled") directory
        session <- Some compiled
        compiled.Circuit

    interface FheNet.Deploy.ICompiledFheModel with
        member this.Circuit = this.Circuit
        member _.Task =
            let f = fittedState "Task"
            FheNet.Deploy.ModelTask.Regression(Array.copy f.TargetMean, Array.copy f.TargetStd)
        member _.Inputs = Fitting.inputs (fittedState "Inputs") session
