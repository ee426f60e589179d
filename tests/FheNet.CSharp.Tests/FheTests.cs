using Xunit;

namespace FheNet.CSharp.Tests;

/// <summary>A small moons classifier (one hidden layer of 4 neurons) compiled for FHE, with keys.</summary>
public sealed class CompiledMoonsFixture
{
    public DataSplit Data { get; } = DataSets.Split("moons");

    public NeuralNetClassifier<int> Model { get; }

    public FheCircuitReport Report { get; }

    public CompiledMoonsFixture()
    {
        Model = NeuralNet.Classifier().Layers(2).HiddenMultiplier(2).Epochs(15).Build()
            .Fit(Data.XTrain, Data.ClassesTrain);
        Report = Model.CompileAsync(Data.XTrain).GetAwaiter().GetResult();
        Model.Keygen();
    }
}

public class FheTests(CompiledMoonsFixture moons) : IClassFixture<CompiledMoonsFixture>
{
    [Fact]
    public void EncryptedPredictionsEqualTheClearOnes()
    {
        var rows = DataSets.Head(moons.Data.XTest, 2);

        Assert.Equal(moons.Model.Predict(rows), moons.Model.Predict(rows, FheMode.Execute));
    }

    [Fact]
    public void SimulationAtTheDefaultPErrorEqualsTheClearModel()
    {
        Assert.Equal(moons.Model.PredictProba(moons.Data.XTest), moons.Model.PredictProba(moons.Data.XTest, FheMode.Simulate));
    }

    [Fact]
    public void TheCircuitReportDescribesEveryLayer()
    {
        Assert.All(moons.Report.Layers, l => Assert.Null(l.EstimatedMilliseconds)); // compiled, no keys yet
        moons.Model.Predict(DataSets.Head(moons.Data.XTest, 1), FheMode.Execute);

        var report = moons.Model.CircuitReport();

        Assert.Equal(moons.Report.BootstrapsPerSample, report.BootstrapsPerSample);
        Assert.Equal(2, report.Layers.Count);
        Assert.Equal(4, report.Layers[0].Lookups);
        Assert.Equal(0, report.Layers[1].Lookups);
        Assert.Equal(report.Layers.Sum(l => l.Bootstraps), report.BootstrapsPerSample);
        Assert.Equal(-40.0, report.Log2PError, 6);
        Assert.True(report.CompressedEvaluationKeyBytes > 0 && report.EvaluationKeyBytes > report.CompressedEvaluationKeyBytes);
        Assert.True(report.Parameters.PolynomialSize >= 256);
        Assert.Contains("bootstraps per sample", report.ToString());
        Assert.All(report.Layers, l => Assert.True(l.EstimatedMilliseconds >= 0 && l.MeasuredMilliseconds > 0));
    }

    [Fact]
    public async Task EncryptedPredictAsyncReportsEveryRow()
    {
        var recorder = new Recorder<InferenceProgress>();
        var rows = DataSets.Head(moons.Data.XTest, 2);

        var probabilities = await moons.Model.PredictProbaAsync(rows, FheMode.Execute, recorder);

        Assert.Equal(moons.Model.PredictProba(rows), probabilities);
        Assert.Equal([1, 2], recorder.Items.Select(r => r.Done));
        Assert.All(recorder.Items, r => Assert.Equal(2, r.Total));
        Assert.All(recorder.Items, r => Assert.True(r.SecondsPerSample > 0));
    }

    [Fact]
    public async Task CancellingAnEncryptedPredictionStopsBeforeTheNextRow()
    {
        using var cancel = new CancellationTokenSource();
        var recorder = new Recorder<InferenceProgress>(_ => cancel.Cancel());

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => moons.Model.PredictAsync(DataSets.Head(moons.Data.XTest, 3), FheMode.Execute, recorder, cancel.Token));

        Assert.Single(recorder.Items);
    }
}
