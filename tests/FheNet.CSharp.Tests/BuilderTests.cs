using Xunit;

namespace FheNet.CSharp.Tests;

public class BuilderTests
{
    [Fact]
    public void DefaultsAreTheDocumentedOnes()
    {
        var o = NeuralNet.Classifier().Options;

        Assert.Equal(
            (3, 4.0, Activation.ReLU, 3, 3, (int?)null, true, 10, 0.001, (int?)null, Optimizer.Adam),
            (o.Layers, o.HiddenMultiplier, o.Activation, o.WeightBits, o.ActivationBits, o.AccumulatorBits,
                o.PowerOfTwoScaling, o.Epochs, o.LearningRate, o.BatchSize, o.Optimizer));
        Assert.Equal((0.0, 0.2, (int?)null, true, ClassWeighting.Uniform, 0), (o.WeightDecay, o.ValidationFraction, o.Patience, o.Refit, o.ClassWeighting, o.Seed));
    }

    [Fact]
    public void BuildersAreImmutable()
    {
        var start = NeuralNet.Classifier();
        var changed = start.Layers(2).Activation(Activation.Tanh).AccumulatorBits(8);

        Assert.Equal(3, start.Options.Layers);
        Assert.Equal(Activation.ReLU, start.Options.Activation);
        Assert.Equal((2, Activation.Tanh, (int?)8), (changed.Options.Layers, changed.Options.Activation, changed.Options.AccumulatorBits));
    }

    [Fact]
    public void EveryFluentSettingReachesTheBuiltEstimator()
    {
        var model = NeuralNet.Classifier()
            .Layers(4).HiddenMultiplier(1.5).Activation(Activation.Sigmoid).WeightBits(4).ActivationBits(5)
            .AccumulatorBits(12).PowerOfTwoScaling(false).Epochs(7).LearningRate(0.01).BatchSize(16)
            .Optimizer(Optimizer.Sgd).Momentum(0.5).WeightDecay(1e-4).Shuffle(false).ValidationFraction(0.25)
            .Patience(3).Refit(false).ClassWeights(1.0, 2.0).Seed(42).Verbose(false).Threads(1)
            .Build<string>();

        var expected = NeuralNetOptions.Defaults with
        {
            Layers = 4, HiddenMultiplier = 1.5, Activation = Activation.Sigmoid, WeightBits = 4, ActivationBits = 5,
            AccumulatorBits = 12, PowerOfTwoScaling = false, Epochs = 7, LearningRate = 0.01, BatchSize = 16,
            Optimizer = Optimizer.Sgd, Momentum = 0.5, WeightDecay = 1e-4, Shuffle = false, ValidationFraction = 0.25,
            Patience = 3, Refit = false, ClassWeighting = ClassWeighting.Explicit, Seed = 42, Verbose = false, Threads = 1,
        };
        Assert.Equal(expected, model.Options with { ClassWeights = null });
        Assert.Equal([1.0, 2.0], model.Options.ClassWeights!);
    }

    [Fact]
    public void ReferenceParameterNamesSetTheSameOptions()
    {
        var byName = NeuralNet.Regressor()
            .Set("module__n_layers", 2).Set("module__activation_function", "nn.GELU").Set("n_w_bits", 4)
            .Set("max_epochs", 20).Set("lr", "0.005").Set("criterion__weight", "balanced");

        var fluent = NeuralNet.Regressor().Layers(2).Activation(Activation.GELU).WeightBits(4).Epochs(20)
            .LearningRate(0.005);

        Assert.Equal(fluent.Options with { ClassWeighting = ClassWeighting.Balanced }, byName.Options);
        Assert.Throws<ParameterOutOfRangeException>(() => NeuralNet.Regressor().Set("n_layers_typo", 2));
    }

    [Fact]
    public void EveryActivationMapsToTheCoreAndBack()
    {
        foreach (var activation in Enum.GetValues<Activation>())
        {
            var options = NeuralNet.Classifier().Activation(activation).Options;
            Assert.Equal(activation, options.Set("random_state", 1).Activation);
        }
        Assert.Equal(FheNet.Autodiff.ActivationModule.all.Length, Enum.GetValues<Activation>().Length);
    }
}
