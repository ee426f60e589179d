using FheNet.Estimators;
using Microsoft.FSharp.Core;
using CoreClassWeights = FheNet.Estimators.ClassWeights;
using CoreEpochReport = FheNet.Nn.EpochReport;

namespace FheNet.CSharp;

/// <summary>
/// Every setting of a neural-network estimator, immutable. <see cref="Defaults"/> holds the documented defaults
/// (Concrete ML's: 3-bit weights and activations, unbounded accumulator, power-of-two scales, 3 layers, ReLU,
/// 10 epochs, learning rate 0.001). The fluent builders of <see cref="NeuralNet"/> edit a copy; they and
/// <c>Build</c> validate.
/// </summary>
public sealed record NeuralNetOptions
{
    /// <summary>Linear layers (≥ 1); 2 means one hidden layer.</summary>
    public int Layers { get; init; }

    /// <summary>Hidden width = int(features × multiplier).</summary>
    public double HiddenMultiplier { get; init; }

    /// <summary>Activation of the hidden layers.</summary>
    public Activation Activation { get; init; }

    /// <summary>Bits of the weight codes (2 to 16).</summary>
    public int WeightBits { get; init; }

    /// <summary>Bits of the input and activation codes (2 to 16).</summary>
    public int ActivationBits { get; init; }

    /// <summary>Bound on every accumulator, enforced by pruning during training; null for unbounded.</summary>
    public int? AccumulatorBits { get; init; }

    /// <summary>Power-of-two scales, which make requantization an exact rounding shift (fast in FHE).</summary>
    public bool PowerOfTwoScaling { get; init; }

    /// <summary>Training epochs (the most, with early stopping).</summary>
    public int Epochs { get; init; }

    /// <summary>Epochs of float training (the network without quantization) before the quantization-aware epochs;
    /// null for automatic: as many as <see cref="Epochs"/> for runs of up to 30 epochs, none beyond; 0 for none
    /// (quantization-aware training from the random initialisation, as Concrete ML).</summary>
    public int? PretrainEpochs { get; init; }

    /// <summary>Learning rate of the optimizer.</summary>
    public double LearningRate { get; init; }

    /// <summary>Rows per mini-batch; null for automatic: clamp(rows / 100, 1, 64).</summary>
    public int? BatchSize { get; init; }

    /// <summary>The optimizer.</summary>
    public Optimizer Optimizer { get; init; }

    /// <summary>Momentum of <see cref="CSharp.Optimizer.Sgd"/>.</summary>
    public double Momentum { get; init; }

    /// <summary>Weight decay (L2 for Adam and SGD, decoupled for AdamW).</summary>
    public double WeightDecay { get; init; }

    /// <summary>Shuffle the rows every epoch.</summary>
    public bool Shuffle { get; init; }

    /// <summary>Fraction of the rows held out for per-epoch validation, stratified by class; it picks the epoch of
    /// lowest validation loss (see <see cref="Refit"/>). 0: none, every row trains for <see cref="Epochs"/>.</summary>
    public double ValidationFraction { get; init; }

    /// <summary>Early stopping after this many epochs without a better validation loss; null for none.</summary>
    public int? Patience { get; init; }

    /// <summary>With a validation split: true trains the final model again on every row for the best epoch count;
    /// false keeps the best epoch of the run on the other rows.</summary>
    public bool Refit { get; init; }

    /// <summary>How classes weigh in the loss (classifiers only).</summary>
    public ClassWeighting ClassWeighting { get; init; }

    /// <summary>The weights of <see cref="CSharp.ClassWeighting.Explicit"/>, one per sorted class label; else null.</summary>
    public IReadOnlyList<double>? ClassWeights { get; init; }

    /// <summary>Seed of initialization, shuffling and the validation split: same seed, bit-identical model.</summary>
    public int Seed { get; init; }

    /// <summary>Print one line per epoch on standard output.</summary>
    public bool Verbose { get; init; }

    /// <summary>Threads for training and prediction (results never depend on it).</summary>
    public int Threads { get; init; }

    /// <summary>The scaling of raw features that Fit learns and every prediction path applies (default
    /// <see cref="FeatureScaling.Standard"/>; the reference's <c>preprocessing</c>).</summary>
    public FeatureScaling Scaling { get; init; }

    /// <summary>The documented defaults.</summary>
    public static NeuralNetOptions Defaults { get; } = FromCore(NeuralNetSettingsModule.defaults);

    /// <summary>
    /// A copy with one setting changed by its Concrete ML / skorch name (<c>module__n_layers</c>,
    /// <c>module__activation_function</c>, <c>n_w_bits</c>, <c>max_epochs</c>, <c>lr</c>, <c>criterion__weight</c>,
    /// ...), for code ported from Python and for grid searches.
    /// </summary>
    /// <param name="name">The reference's parameter name.</param>
    /// <param name="value">Its value: a number, a string, a bool, a list of class weights or null.</param>
    /// <exception cref="ParameterOutOfRangeException">Unknown name (the message lists the known ones), or a value of
    /// the wrong kind.</exception>
    public NeuralNetOptions Set(string name, object? value) =>
        FromCore(NeuralNetSettingsModule.set(name, value, ToCore(FSharpOption<FSharpFunc<CoreEpochReport, Unit>>.None)));

    /// <summary>Checks every setting; throws on the first bad one.</summary>
    /// <exception cref="ParameterOutOfRangeException">A setting is out of its range; the message names it.</exception>
    /// <exception cref="FheNet.Quantization.AccumulatorTooSmallException">AccumulatorBits cannot hold even one
    /// weight × input product; the message gives the smallest width that works.</exception>
    public void Validate() =>
        NeuralNetSettingsModule.validate(ToCore(FSharpOption<FSharpFunc<CoreEpochReport, Unit>>.None));

    internal static NeuralNetOptions FromCore(NeuralNetSettings s) => new()
    {
        Layers = s.Layers,
        HiddenMultiplier = s.HiddenMultiplier,
        Activation = CoreMapping.FromCore(s.Activation),
        WeightBits = s.WeightBits,
        ActivationBits = s.ActivationBits,
        AccumulatorBits = s.AccumulatorBits.ToNullable(),
        PowerOfTwoScaling = s.PowerOfTwoScaling,
        Epochs = s.MaxEpochs,
        PretrainEpochs = s.PretrainEpochs.ToNullable(),
        LearningRate = s.Lr,
        BatchSize = s.BatchSize.ToNullable(),
        Optimizer = CoreMapping.FromCore(s.Optimizer),
        Momentum = s.Momentum,
        WeightDecay = s.WeightDecay,
        Shuffle = s.Shuffle,
        ValidationFraction = s.ValidationFraction,
        Patience = s.Patience.ToNullable(),
        Refit = s.Refit,
        ClassWeighting =
            s.ClassWeights.IsBalanced ? ClassWeighting.Balanced
            : s.ClassWeights.IsExplicit ? ClassWeighting.Explicit
            : ClassWeighting.Uniform,
        ClassWeights = s.ClassWeights is CoreClassWeights.Explicit e ? e.Item.ToArray() : null,
        Seed = s.Seed,
        Verbose = s.Verbose,
        Threads = s.Threads,
        Scaling = CoreMapping.FromCore(s.Scaling),
    };

    internal NeuralNetSettings ToCore(FSharpOption<FSharpFunc<CoreEpochReport, Unit>> onEpoch) => new(
        Layers,
        HiddenMultiplier,
        Activation.ToCore(),
        WeightBits,
        ActivationBits,
        AccumulatorBits.ToOption(),
        PowerOfTwoScaling,
        Epochs,
        PretrainEpochs.ToOption(),
        LearningRate,
        BatchSize.ToOption(),
        Optimizer.ToCore(),
        Momentum,
        WeightDecay,
        Shuffle,
        ValidationFraction,
        Patience.ToOption(),
        Refit,
        ClassWeighting switch
        {
            ClassWeighting.Uniform => CoreClassWeights.Uniform,
            ClassWeighting.Balanced => CoreClassWeights.Balanced,
            ClassWeighting.Explicit when ClassWeights is not null => CoreClassWeights.NewExplicit(ClassWeights.ToArray()),
            ClassWeighting.Explicit => throw new ParameterOutOfRangeException(
                nameof(ClassWeights), "null", "one weight per class when ClassWeighting is Explicit"),
            _ => throw new ParameterOutOfRangeException(
                nameof(ClassWeighting), ClassWeighting, "Uniform, Balanced or Explicit"),
        },
        Seed,
        Verbose,
        Threads,
        onEpoch,
        Scaling.ToCore());
}
