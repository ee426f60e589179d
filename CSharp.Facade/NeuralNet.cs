namespace FheNet.CSharp;

/// <summary>
/// Entry point of the fluent API: start a builder, chain settings, <c>Build</c>.
/// </summary>
/// <example>
/// <code>
/// var classifier = NeuralNet.Classifier()
///     .Layers(3).Activation(Activation.ReLU)
///     .WeightBits(3).ActivationBits(3).AccumulatorBits(8)
///     .Epochs(100).LearningRate(1e-3).Seed(0)
///     .Build&lt;string&gt;();
/// classifier.Fit(xTrain, yTrain);
/// classifier.Compile(xTrain);
/// string[] labels = classifier.Predict(xTest, FheMode.Execute);
/// </code>
/// </example>
public static class NeuralNet
{
    /// <summary>A classifier builder with the documented defaults.</summary>
    public static ClassifierBuilder Classifier() => new(NeuralNetOptions.Defaults);

    /// <summary>A classifier builder starting from the given options.</summary>
    /// <param name="options">The settings to start from.</param>
    public static ClassifierBuilder Classifier(NeuralNetOptions options) =>
        new(options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>A regressor builder with the documented defaults.</summary>
    public static RegressorBuilder Regressor() => new(NeuralNetOptions.Defaults);

    /// <summary>A regressor builder starting from the given options.</summary>
    /// <param name="options">The settings to start from.</param>
    public static RegressorBuilder Regressor(NeuralNetOptions options) =>
        new(options ?? throw new ArgumentNullException(nameof(options)));
}

/// <summary>
/// The settings shared by both builders. Builders are immutable: every method returns a new builder, so one
/// partly configured builder can seed several estimators. Values are checked by <c>Build</c>.
/// </summary>
/// <typeparam name="TSelf">The concrete builder type, returned by every method.</typeparam>
public abstract record NeuralNetBuilder<TSelf> where TSelf : NeuralNetBuilder<TSelf>
{
    private protected NeuralNetBuilder(NeuralNetOptions options) => Options = options;

    /// <summary>The settings so far.</summary>
    public NeuralNetOptions Options { get; private init; }

    private protected TSelf With(NeuralNetOptions options) => (TSelf)(this with { Options = options });

    /// <summary>Linear layers (≥ 1; default 3); 2 means one hidden layer.</summary>
    /// <param name="layers">The number of linear layers.</param>
    public TSelf Layers(int layers) => With(Options with { Layers = layers });

    /// <summary>Hidden width = int(features × multiplier) (default 4).</summary>
    /// <param name="multiplier">A positive number.</param>
    public TSelf HiddenMultiplier(double multiplier) => With(Options with { HiddenMultiplier = multiplier });

    /// <summary>Activation of the hidden layers (default ReLU).</summary>
    /// <param name="activation">The activation function.</param>
    public TSelf Activation(Activation activation) => With(Options with { Activation = activation });

    /// <summary>Bits of the weight codes, 2 to 16 (default 3).</summary>
    /// <param name="bits">The bit-width.</param>
    public TSelf WeightBits(int bits) => With(Options with { WeightBits = bits });

    /// <summary>Bits of the input and activation codes, 2 to 16 (default 3).</summary>
    /// <param name="bits">The bit-width.</param>
    public TSelf ActivationBits(int bits) => With(Options with { ActivationBits = bits });

    /// <summary>Bound every accumulator to this many bits by pruning during training (default unbounded).</summary>
    /// <param name="bits">The bound, or null for unbounded.</param>
    public TSelf AccumulatorBits(int? bits) => With(Options with { AccumulatorBits = bits });

    /// <summary>Power-of-two scales (default true): exact, cheap requantization in FHE.</summary>
    /// <param name="enabled">Whether scales are powers of two.</param>
    public TSelf PowerOfTwoScaling(bool enabled = true) => With(Options with { PowerOfTwoScaling = enabled });

    /// <summary>Training epochs (default 10).</summary>
    /// <param name="epochs">The most epochs to train.</param>
    public TSelf Epochs(int epochs) => With(Options with { Epochs = epochs });

    /// <summary>Epochs of float training before the quantization-aware ones (default automatic: as many as the
    /// epochs for runs of up to 30 epochs, none beyond; 0 for none).</summary>
    /// <param name="epochs">The float epochs, or null for automatic.</param>
    public TSelf PretrainEpochs(int? epochs) => With(Options with { PretrainEpochs = epochs });

    /// <summary>Learning rate (default 0.001).</summary>
    /// <param name="rate">A positive number.</param>
    public TSelf LearningRate(double rate) => With(Options with { LearningRate = rate });

    /// <summary>Rows per mini-batch (default automatic: clamp(rows / 100, 1, 64)).</summary>
    /// <param name="rows">The batch size, or null for automatic.</param>
    public TSelf BatchSize(int? rows) => With(Options with { BatchSize = rows });

    /// <summary>The optimizer (default Adam).</summary>
    /// <param name="optimizer">Adam, AdamW or Sgd.</param>
    public TSelf Optimizer(Optimizer optimizer) => With(Options with { Optimizer = optimizer });

    /// <summary>Momentum of SGD (default 0.9).</summary>
    /// <param name="momentum">In [0, 1).</param>
    public TSelf Momentum(double momentum) => With(Options with { Momentum = momentum });

    /// <summary>Weight decay (default 0).</summary>
    /// <param name="decay">A finite number ≥ 0.</param>
    public TSelf WeightDecay(double decay) => With(Options with { WeightDecay = decay });

    /// <summary>Shuffle the rows every epoch (default true).</summary>
    /// <param name="enabled">Whether to shuffle.</param>
    public TSelf Shuffle(bool enabled = true) => With(Options with { Shuffle = enabled });

    /// <summary>Hold out this fraction of the rows (stratified by class) to pick the epoch of lowest validation
    /// loss (default 0.2, as the reference; 0: none).</summary>
    /// <param name="fraction">In [0, 1).</param>
    public TSelf ValidationFraction(double fraction) => With(Options with { ValidationFraction = fraction });

    /// <summary>With a validation split, train the final model again on every row for the best epoch count (default
    /// true); false keeps the best epoch of the run on the other rows.</summary>
    /// <param name="enabled">Whether to refit.</param>
    public TSelf Refit(bool enabled = true) => With(Options with { Refit = enabled });

    /// <summary>Stop after this many epochs without a better validation loss, keeping the best epoch's weights
    /// (default none; needs a validation fraction).</summary>
    /// <param name="epochs">The patience, or null for none.</param>
    public TSelf Patience(int? epochs) => With(Options with { Patience = epochs });

    /// <summary>Seed of initialization, shuffling and validation split (default 0).</summary>
    /// <param name="seed">Any integer; the same seed gives a bit-identical model.</param>
    public TSelf Seed(int seed) => With(Options with { Seed = seed });

    /// <summary>Print one line per epoch on standard output (default false).</summary>
    /// <param name="enabled">Whether to print.</param>
    public TSelf Verbose(bool enabled = true) => With(Options with { Verbose = enabled });

    /// <summary>How raw features are scaled before the network (default <see cref="FeatureScaling.Standard"/>):
    /// Fit learns the scaling, and every prediction, the saved model and the deployed client apply it.</summary>
    /// <param name="scaling">Standard, Robust (heavy-tailed columns) or None.</param>
    public TSelf Scaler(FeatureScaling scaling) => With(Options with { Scaling = scaling });

    /// <summary>Threads for training and prediction (default: the processor count).</summary>
    /// <param name="threads">At least 1.</param>
    public TSelf Threads(int threads) => With(Options with { Threads = threads });

    /// <summary>Sets one setting by its Concrete ML / skorch name (see <see cref="NeuralNetOptions.Set"/>).</summary>
    /// <param name="name">The reference's parameter name, e.g. <c>module__n_layers</c>.</param>
    /// <param name="value">Its value.</param>
    /// <exception cref="ParameterOutOfRangeException">Unknown name, or a value of the wrong kind.</exception>
    public TSelf Set(string name, object? value) => With(Options.Set(name, value));
}

/// <summary>Builds a <see cref="NeuralNetClassifier{TLabel}"/>.</summary>
public sealed record ClassifierBuilder : NeuralNetBuilder<ClassifierBuilder>
{
    internal ClassifierBuilder(NeuralNetOptions options) : base(options) { }

    /// <summary>Weigh classes inversely to their frequency (scikit-learn's "balanced").</summary>
    public ClassifierBuilder BalancedClassWeights() =>
        With(Options with { ClassWeighting = ClassWeighting.Balanced, ClassWeights = null });

    /// <summary>One loss weight per class, in the order of the sorted class labels.</summary>
    /// <param name="weights">Finite weights ≥ 0, as many as classes (checked by Fit).</param>
    /// <exception cref="ArgumentNullException"><paramref name="weights"/> is null.</exception>
    public ClassifierBuilder ClassWeights(params double[] weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        return With(Options with { ClassWeighting = ClassWeighting.Explicit, ClassWeights = weights.ToArray() });
    }

    /// <summary>Validates the settings and builds a classifier of labels of any comparable type.</summary>
    /// <typeparam name="TLabel">The label type (int, string, an enum...); Predict returns labels of this type.</typeparam>
    /// <exception cref="ParameterOutOfRangeException">A setting is out of range; the message names it.</exception>
    /// <exception cref="FheNet.Quantization.AccumulatorTooSmallException">AccumulatorBits is too small for any weight.</exception>
    public NeuralNetClassifier<TLabel> Build<TLabel>() where TLabel : notnull, IComparable
    {
        Options.Validate();
        return new NeuralNetClassifier<TLabel>(Options);
    }

    /// <summary>Validates the settings and builds a classifier of integer labels.</summary>
    /// <exception cref="ParameterOutOfRangeException">A setting is out of range; the message names it.</exception>
    /// <exception cref="FheNet.Quantization.AccumulatorTooSmallException">AccumulatorBits is too small for any weight.</exception>
    public NeuralNetClassifier<int> Build() => Build<int>();
}

/// <summary>Builds a <see cref="NeuralNetRegressor"/>.</summary>
public sealed record RegressorBuilder : NeuralNetBuilder<RegressorBuilder>
{
    internal RegressorBuilder(NeuralNetOptions options) : base(options) { }

    /// <summary>Validates the settings and builds a regressor.</summary>
    /// <exception cref="ParameterOutOfRangeException">A setting is out of range; the message names it.</exception>
    /// <exception cref="FheNet.Quantization.AccumulatorTooSmallException">AccumulatorBits is too small for any weight.</exception>
    public NeuralNetRegressor Build()
    {
        Options.Validate();
        return new NeuralNetRegressor(Options);
    }
}
