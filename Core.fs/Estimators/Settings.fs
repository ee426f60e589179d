namespace FheNet.Estimators

open System
open System.Collections
open System.Globalization
open FheNet
open FheNet.Autodiff
open FheNet.Quantization
open FheNet.Nn
open FheNet.Preprocessing

/// How classes weigh in the cross-entropy.
[<RequireQualifiedAccess>]
type ClassWeights =
    | Uniform
    /// n_samples / (n_classes · count(class)), as scikit-learn's compute_class_weight("balanced").
    | Balanced
    /// One weight per class, in the order of the sorted class labels.
    | Explicit of float[]

/// Where predict runs: the integer model in the clear, its FHE simulation, or encrypted execution.
[<RequireQualifiedAccess>]
type FheMode =
    | Disable
    | Simulate
    | Execute

/// Immutable estimator settings. Defaults are those documented by Concrete ML (3/3 bits, unbounded accumulator,
/// power-of-two scales, 10 epochs, lr 0.001, ReLU, multiplier 4), plus the choices it leaves open, made so that
/// these defaults train well: mini-batches small enough for about 100 steps per epoch, Adam, shuffling, hidden
/// biases centring each unit on the training data, and scales initialised by MSE-optimal calibration on it.
type NeuralNetSettings =
    { /// module__n_layers: linear layers (>= 1); 2 = one hidden layer.
      Layers: int
      /// module__n_hidden_neurons_multiplier: hidden width = int(n_features × multiplier).
      HiddenMultiplier: float
      /// module__activation_function.
      Activation: Activation
      /// module__n_w_bits.
      WeightBits: int
      /// module__n_a_bits.
      ActivationBits: int
      /// module__n_accum_bits; None = unbounded.
      AccumulatorBits: int option
      /// module__power_of_two_scaling.
      PowerOfTwoScaling: bool
      MaxEpochs: int
      /// pretrain_epochs: epochs of float training (the same network without quantization) before the
      /// quantization-aware epochs, from which the scales are calibrated; with a validation split, the float epoch
      /// of lowest validation loss is kept (and the refit pre-trains that many). None = automatic: as many as
      /// MaxEpochs up to 30 epochs, none beyond; 0 = quantization-aware training from the random initialisation,
      /// as Concrete ML does.
      PretrainEpochs: int option
      Lr: float
      /// None = automatic: clamp(n_train / 100, 1, 64), i.e. about 100 steps per epoch below 6400 rows.
      BatchSize: int option
      Optimizer: Optimizer
      /// optimizer__momentum (SGD only).
      Momentum: float
      /// optimizer__weight_decay.
      WeightDecay: float
      /// iterator_train__shuffle.
      Shuffle: bool
      /// Fraction of the fit data held out for per-epoch validation, stratified by class; it picks the epoch of
      /// lowest validation loss (see Refit). 0 = none: train on every row for MaxEpochs.
      ValidationFraction: float
      /// Early stopping: epochs without improvement of the validation loss (needs ValidationFraction > 0).
      Patience: int option
      /// With a validation split: true trains the final model again on every row for the best epoch count; false
      /// keeps the best epoch of the run on the other rows.
      Refit: bool
      /// criterion__weight (classifier only).
      ClassWeights: ClassWeights
      /// random_state.
      Seed: int
      /// One line per epoch on standard output.
      Verbose: bool
      /// n_jobs: threads for training and prediction (results never depend on it).
      Threads: int
      /// Called after every epoch.
      OnEpoch: (EpochReport -> unit) option
      /// preprocessing: the scaling of raw features that fit learns and every prediction path applies.
      Scaling: FeatureScaling }

module NeuralNetSettings =

    /// The documented defaults.
    let defaults =
        { Layers = 3
          HiddenMultiplier = 4.0
          Activation = Activation.ReLU
          WeightBits = 3
          ActivationBits = 3
          AccumulatorBits = None
          PowerOfTwoScaling = true
          MaxEpochs = 10
          // Quantization-aware training from a random start learns slowly: a weight's 3-bit code moves only when
          // Adam has carried it across a rounding boundary, and the scales were calibrated on random weights.
          // Starting from a float-trained network gained on every one of ten data sets at the defaults (iris
          // 0.860 -> 0.965, moons 0.875 -> 0.924; BENCHMARKS "Training accuracy").
          PretrainEpochs = None
          Lr = 0.001
          BatchSize = None
          Optimizer = Optimizer.Adam
          Momentum = 0.9
          WeightDecay = 0.0
          Shuffle = true
          // The reference's split (skorch ValidSplit(5): a fifth held out). Its best epoch count keeps long runs on
          // small data from overfitting (diabetes at 100 epochs), and the refit on every row gives the held-out rows
          // back, which short runs on small data need (iris at 10 epochs).
          ValidationFraction = 0.2
          Patience = None
          Refit = true
          ClassWeights = ClassWeights.Uniform
          Seed = 0
          Verbose = false
          Threads = Environment.ProcessorCount
          OnEpoch = None
          Scaling = FeatureScaling.Standard }

    /// The longest run that pre-trains by default.
    [<Literal>]
    let AutomaticPretrainMaxEpochs = 30

    /// Epochs of float training before the quantization-aware ones: the explicit setting; automatically, as many
    /// as MaxEpochs for a short run (up to AutomaticPretrainMaxEpochs) and none for a longer one, which has steps
    /// enough to learn from the random start and where pre-training measured no general gain (iris at 4/4 bits and
    /// 100 epochs fell from 0.974 to 0.886; BENCHMARKS "Training accuracy").
    let pretrainEpochs (s: NeuralNetSettings) =
        match s.PretrainEpochs with
        | Some epochs -> epochs
        | None when s.MaxEpochs <= AutomaticPretrainMaxEpochs -> s.MaxEpochs
        | None -> 0

    /// Rows per mini-batch for a training set of <c>rows</c> rows: the explicit setting, or about 100 optimizer steps
    /// per epoch, clamp(rows / 100, 1, 64). Adam moves each weight by about lr per step whatever the batch, so at
    /// the documented 10 epochs a small data set gains more from steps than from averaging (iris, 112 rows, trains
    /// on single rows).
    let batchSize (s: NeuralNetSettings) (rows: int) =
        match s.BatchSize with
        | Some b -> b
        | None -> Math.Clamp(rows / 100, 1, 64)

    let private toInt (name: string) (value: objnull) =
        try
            Convert.ToInt32(value, CultureInfo.InvariantCulture)
        with :? FormatException | :? InvalidCastException | :? OverflowException ->
            raise (ParameterOutOfRangeException(name, string value, "an integer"))

    let private toFloat (name: string) (value: objnull) =
        try
            Convert.ToDouble(value, CultureInfo.InvariantCulture)
        with :? FormatException | :? InvalidCastException ->
            raise (ParameterOutOfRangeException(name, string value, "a number"))

    let private toBool (name: string) (value: objnull) =
        match value with
        | :? bool as b -> b
        | :? string as s when Boolean.TryParse s |> fst -> Boolean.Parse s
        | :? int as i -> i <> 0
        | _ -> raise (ParameterOutOfRangeException(name, string value, "true or false"))

    let private optionalInt (name: string) (value: objnull) =
        match value with
        | _ when Object.ReferenceEquals(value, null) -> None
        | :? string as s when s.Equals("none", StringComparison.OrdinalIgnoreCase) -> None
        | v -> Some(toInt name v)

    let private optimizerOf (value: objnull) =
        let text = string value
        let bare = if text.Contains '.' then text.Substring(text.LastIndexOf '.' + 1) else text
        match bare.ToLowerInvariant() with
        | "adam" -> Optimizer.Adam
        | "adamw" -> Optimizer.AdamW
        | "sgd" -> Optimizer.SgdMomentum
        | _ -> raise (ParameterOutOfRangeException("optimizer", string value, "Adam, AdamW or SGD"))

    let private classWeightsOf (value: objnull) =
        match value with
        | _ when Object.ReferenceEquals(value, null) -> ClassWeights.Uniform
        | :? string as s when s.Equals("balanced", StringComparison.OrdinalIgnoreCase) -> ClassWeights.Balanced
        | :? string as s when s.Equals("none", StringComparison.OrdinalIgnoreCase) -> ClassWeights.Uniform
        | :? string as s ->
            ClassWeights.Explicit [| for v in s.Split(',', StringSplitOptions.TrimEntries) -> toFloat "criterion__weight" v |]
        | :? ClassWeights as w -> w
        | :? IEnumerable as items when not (value :? string) ->
            ClassWeights.Explicit [| for v in items -> toFloat "criterion__weight" v |]
        | _ -> raise (ParameterOutOfRangeException("criterion__weight", string value, "a list of class weights or \"balanced\""))

    let private scalingOf (value: objnull) =
        match value with
        | :? FeatureScaling as f -> f
        | v -> FeatureScaling.parse (string v)

    /// The names accepted by <c>set</c> (Concrete ML / skorch spellings, and short forms).
    let names =
        [ "module__n_layers"; "module__n_hidden_neurons_multiplier"; "module__activation_function"
          "module__n_w_bits"; "n_w_bits"; "module__n_a_bits"; "n_a_bits"; "module__n_accum_bits"; "n_accum_bits"
          "module__power_of_two_scaling"; "power_of_two_scaling"; "max_epochs"; "pretrain_epochs"; "lr"; "batch_size"; "optimizer"
          "optimizer__momentum"; "optimizer__weight_decay"; "iterator_train__shuffle"; "validation_fraction"
          "patience"; "refit"; "criterion__weight"; "class_weight"; "random_state"; "verbose"; "n_jobs"; "preprocessing" ]

    /// Sets one setting by its Concrete ML / skorch name (e.g. "module__n_layers", "max_epochs", "lr",
    /// "criterion__weight"), for ported code and grid searches. Unknown names raise, listing the known ones.
    let set (name: string) (value: objnull) (s: NeuralNetSettings) : NeuralNetSettings =
        match name with
        | "module__n_layers" -> { s with Layers = toInt name value }
        | "module__n_hidden_neurons_multiplier" -> { s with HiddenMultiplier = toFloat name value }
        | "module__activation_function" ->
            { s with
                Activation =
                    match value with
                    | :? Activation as a -> a
                    | v -> Activation.parse (string v) }
        | "module__n_w_bits"
        | "n_w_bits" -> { s with WeightBits = toInt name value }
        | "module__n_a_bits"
        | "n_a_bits" -> { s with ActivationBits = toInt name value }
        | "module__n_accum_bits"
        | "n_accum_bits" -> { s with AccumulatorBits = optionalInt name value }
        | "module__power_of_two_scaling"
        | "power_of_two_scaling" -> { s with PowerOfTwoScaling = toBool name value }
        | "max_epochs" -> { s with MaxEpochs = toInt name value }
        | "pretrain_epochs" -> { s with PretrainEpochs = optionalInt name value }
        | "lr" -> { s with Lr = toFloat name value }
        | "batch_size" -> { s with BatchSize = optionalInt name value }
        | "optimizer" -> { s with Optimizer = optimizerOf value }
        | "optimizer__momentum" -> { s with Momentum = toFloat name value }
        | "optimizer__weight_decay" -> { s with WeightDecay = toFloat name value }
        | "iterator_train__shuffle" -> { s with Shuffle = toBool name value }
        | "validation_fraction" -> { s with ValidationFraction = toFloat name value }
        | "patience" -> { s with Patience = optionalInt name value }
        | "refit" -> { s with Refit = toBool name value }
        | "criterion__weight"
        | "class_weight" -> { s with ClassWeights = classWeightsOf value }
        | "random_state" -> { s with Seed = toInt name value }
        | "verbose" -> { s with Verbose = toBool name value }
        | "n_jobs" -> { s with Threads = max 1 (toInt name value) }
        | "preprocessing" -> { s with Scaling = scalingOf value }
        | _ ->
            let known = String.concat ", " names
            raise (ParameterOutOfRangeException("name", name, $"one of %s{known}"))

    /// Applies several named settings in order.
    let setMany (pairs: (string * objnull) seq) (s: NeuralNetSettings) = pairs |> Seq.fold (fun acc (n, v) -> set n v acc) s

    /// Every setting as (name, invariant text) pairs that <c>setMany</c> reads back to the same settings, except the
    /// epoch callback (code) and n_jobs (the machine's, not the model's: a model fitted on 1 or 8 threads is the
    /// same): what a dumped model stores.
    let toPairs (s: NeuralNetSettings) : (string * string)[] =
        let number (v: float) = v.ToString("R", CultureInfo.InvariantCulture)
        let optional (v: int option) = v |> Option.map string |> Option.defaultValue "none"
        [| "module__n_layers", string s.Layers
           "module__n_hidden_neurons_multiplier", number s.HiddenMultiplier
           "module__activation_function", Activation.name s.Activation
           "module__n_w_bits", string s.WeightBits
           "module__n_a_bits", string s.ActivationBits
           "module__n_accum_bits", optional s.AccumulatorBits
           "module__power_of_two_scaling", string s.PowerOfTwoScaling
           "max_epochs", string s.MaxEpochs
           "pretrain_epochs", optional s.PretrainEpochs
           "lr", number s.Lr
           "batch_size", optional s.BatchSize
           "optimizer",
           (match s.Optimizer with
            | Optimizer.Adam -> "Adam"
            | Optimizer.AdamW -> "AdamW"
            | Optimizer.SgdMomentum -> "SGD")
           "optimizer__momentum", number s.Momentum
           "optimizer__weight_decay", number s.WeightDecay
           "iterator_train__shuffle", string s.Shuffle
           "validation_fraction", number s.ValidationFraction
           "patience", optional s.Patience
           "refit", string s.Refit
           "criterion__weight",
           (match s.ClassWeights with
            | ClassWeights.Uniform -> "none"
            | ClassWeights.Balanced -> "balanced"
            | ClassWeights.Explicit w -> w |> Array.map number |> String.concat ",")
           "random_state", string s.Seed
           "verbose", string s.Verbose
           "preprocessing", FeatureScaling.name s.Scaling |]

    /// Checks every setting; raises a typed exception naming the first bad one.
    let validate (s: NeuralNetSettings) =
        Guard.inRange "module__n_layers" 1 64 s.Layers
        Guard.inRange "module__n_w_bits" 2 16 s.WeightBits
        Guard.inRange "module__n_a_bits" 2 16 s.ActivationBits
        Guard.positiveFinite "module__n_hidden_neurons_multiplier" s.HiddenMultiplier
        Guard.inRange "max_epochs" 1 1_000_000 s.MaxEpochs
        s.PretrainEpochs |> Option.iter (Guard.inRange "pretrain_epochs" 0 1_000_000)
        Guard.positiveFinite "lr" s.Lr
        s.BatchSize |> Option.iter (Guard.inRange "batch_size" 1 Int32.MaxValue)
        if not (s.ValidationFraction >= 0.0 && s.ValidationFraction < 1.0) then
            raise (ParameterOutOfRangeException("validation_fraction", s.ValidationFraction, "a fraction in [0, 1)"))
        s.Patience |> Option.iter (Guard.inRange "patience" 1 Int32.MaxValue)
        if s.Patience.IsSome && s.ValidationFraction = 0.0 then
            raise (ParameterOutOfRangeException("patience", s.Patience.Value, "None unless validation_fraction > 0"))
        if not (s.WeightDecay >= 0.0 && Double.IsFinite s.WeightDecay) then
            raise (ParameterOutOfRangeException("optimizer__weight_decay", s.WeightDecay, "a finite number >= 0"))
        if not (s.Momentum >= 0.0 && s.Momentum < 1.0) then
            raise (ParameterOutOfRangeException("optimizer__momentum", s.Momentum, "a number in [0, 1)"))
        match s.AccumulatorBits with
        | None -> ()
        | Some bits ->
            Guard.inRange "module__n_accum_bits" 2 62 bits
            // Every layer must hold at least one weight × input product beside a bias; the bias codes take a
            // quarter of the budget, so test against the product limits with the rest.
            let weights = Codes.range (Codes.weight s.WeightBits)
            for signed in [ true; false ] do
                let inputs = Codes.range (Codes.activation s.ActivationBits signed)
                let smallest =
                    seq { 3..62 }
                    |> Seq.find (fun n ->
                        try
                            Pruning.maxFanIn weights inputs n (1L <<< (n - 2)) >= 1
                        with :? AccumulatorTooSmallException ->
                            false)
                if bits < smallest then
                    raise (AccumulatorTooSmallException(bits, smallest))
