using FheNet.Quantization;
using Xunit;

namespace FheNet.CSharp.Tests;

/// <summary>Bad calls raise the documented exception types, which derive from the usual .NET ones.</summary>
public class ErrorTests
{
    private static readonly double[,] X = { { 0.0, 1.0 }, { 1.0, 0.0 }, { 0.5, 0.5 }, { -1.0, 0.2 } };
    private static readonly int[] Y = [0, 1, 0, 1];

    [Fact]
    public void PredictBeforeFitRaisesNotFitted()
    {
        var model = NeuralNet.Classifier().Build();

        var e = Assert.Throws<NotFittedException>(() => model.Predict(X));

        Assert.IsAssignableFrom<InvalidOperationException>(e);
        Assert.False(model.IsFitted);
        Assert.Throws<NotFittedException>(() => model.Dump());
    }

    [Fact]
    public void AWrongFeatureCountRaisesInvalidShapeNamingBothWidths()
    {
        var model = NeuralNet.Classifier().Layers(2).Epochs(2).Build().Fit(X, Y);

        var e = Assert.Throws<InvalidShapeException>(() => model.Predict(new[] { new[] { 1f, 2f, 3f } }));

        Assert.IsAssignableFrom<ArgumentException>(e);
        Assert.Contains("3 features", e.Message);
        Assert.Contains("fitted on 2", e.Message);
    }

    [Theory]
    [InlineData(1, "module__n_w_bits")]
    [InlineData(17, "module__n_w_bits")]
    public void BitsOutOfRangeRaiseParameterOutOfRangeAtBuild(int bits, string name)
    {
        var e = Assert.Throws<ParameterOutOfRangeException>(() => NeuralNet.Classifier().WeightBits(bits).Build());

        Assert.Equal(name, e.ParamName);
        Assert.IsAssignableFrom<ArgumentOutOfRangeException>(e);
    }

    [Fact]
    public void AnAccumulatorTooSmallForAnyWeightNamesTheSmallestThatWorks()
    {
        var e = Assert.Throws<AccumulatorTooSmallException>(() => NeuralNet.Regressor().AccumulatorBits(3).Build());

        Assert.IsAssignableFrom<ArgumentException>(e);
        Assert.Equal(7, e.SmallestThatWorks); // 3-bit weights and activations
        Assert.Contains(">= 7", e.Message);
    }

    [Fact]
    public void EncryptedModesBeforeCompileRaiseFheNotAvailable()
    {
        var model = NeuralNet.Classifier().Layers(2).Epochs(2).Build().Fit(X, Y);

        Assert.Throws<FheNotAvailableException>(() => model.Predict(X, FheMode.Execute));
        Assert.Throws<FheNotAvailableException>(() => model.PredictProba(X, FheMode.Simulate));
        Assert.Throws<FheNotAvailableException>(() => model.Keygen());
        Assert.Throws<FheNotAvailableException>(() => model.CircuitReport());
    }

    [Fact]
    public void NullArgumentsRaiseArgumentNullNamingThem()
    {
        var model = NeuralNet.Classifier().Build();

        Assert.Equal("x", Assert.Throws<ArgumentNullException>(() => model.Fit((double[,]?)null, Y)).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentNullException>(() => model.Fit(X, null!)).ParamName);
    }

    [Fact]
    public void RaggedRowsRaiseInvalidShapeNamingTheRow()
    {
        double[][] ragged = [[0.0, 1.0], [1.0, 0.0], [0.5]];

        var e = Assert.Throws<InvalidShapeException>(() => NeuralNet.Classifier().Build().Fit(ragged, [0, 1, 0]));

        Assert.Equal("X[2]", e.ParamName);
    }

    [Fact]
    public async Task AsyncCallsWithAnAlreadyCancelledTokenDoNotStart()
    {
        var model = NeuralNet.Classifier().Layers(2).Epochs(2).Build().Fit(X, Y);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => model.CompileAsync(X, cancellationToken: new CancellationToken(canceled: true)));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => model.FitAsync(X, Y, cancellationToken: new CancellationToken(canceled: true)));
        Assert.Throws<FheNotAvailableException>(() => model.CircuitReport());
    }

    [Fact]
    public void OneClassRaisesInvalidShape()
    {
        var model = NeuralNet.Classifier().Build<string>();

        Assert.Throws<InvalidShapeException>(() => model.Fit(X, ["a", "a", "a", "a"]));
    }

    [Fact]
    public void LoadingAnotherKindOfDocumentRaisesInvalidShape()
    {
        var regressor = NeuralNet.Regressor().Layers(2).Epochs(2).Build().Fit(X, [0.0, 1.0, 0.5, 0.25]);

        Assert.Throws<InvalidShapeException>(() => NeuralNetClassifier<int>.Load(regressor.Dump()));
        Assert.Throws<InvalidShapeException>(() => NeuralNetRegressor.Load("{ not json"));
    }
}
