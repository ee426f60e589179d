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
        // Compiled: estimated from the parameter set, nothing measured yet.
        Assert.All(moons.Report.Layers, l => Assert.NotNull(l.EstimatedMilliseconds));
        Assert.True(moons.Report.EstimatedSecondsPerSample > 0 && moons.Report.EstimatedKeygenSeconds > 0);
        Assert.Null(moons.Report.MeasuredSecondsPerSample);
        Assert.True(moons.Report.Memory.PeakBytes > moons.Report.Memory.PreparedBytes);
        Assert.Equal(moons.Report.EvaluationKeyBytes, moons.Report.Memory.ExpandedEvaluationKeyBytes);
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
        Assert.True(report.MeasuredKeygenSeconds > 0 && report.MeasuredSecondsPerSample > 0);
        Assert.True(report.MeasuredPeakBytes > report.Memory.PreparedBytes);
        Assert.Contains("measured", report.ToString());
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
