using Xunit;

namespace FheNet.CSharp.Tests;

/// <summary>Two iris classifiers with the same settings and seed: one with the integer labels, one with names.</summary>
public sealed class IrisFixture
{
    public static readonly string[] Names = ["setosa", "versicolor", "virginica"];

    public DataSplit Data { get; } = DataSets.Split("iris");

    public ClassifierBuilder Builder { get; } = NeuralNet.Classifier().Layers(3).Epochs(100).Seed(0);

    public NeuralNetClassifier<int> ByIndex { get; }

    public NeuralNetClassifier<string> ByName { get; }

    public IrisFixture()
    {
        ByIndex = Builder.Build().Fit(Data.XTrain, Data.ClassesTrain);
        ByName = Builder.Build<string>().Fit(Data.XTrain, Data.ClassesTrain.Select(c => Names[c]).ToArray());
    }
}

public class ClassifierTests(IrisFixture iris) : IClassFixture<IrisFixture>
{
    [Fact]
    public void FitsIrisAndPredictsMostTestRows()
    {
        var predicted = iris.ByIndex.Predict(iris.Data.XTest);

        Assert.Equal(iris.Data.YTest.Length, predicted.Length);
        var score = iris.ByIndex.Score(iris.Data.XTest, iris.Data.ClassesTest);
        Assert.True(score >= 0.85, $"accuracy {score}");
        // 100 validated epochs, then the refit on every row for the best epoch count.
        var history = iris.ByIndex.History;
        Assert.Equal(Enumerable.Range(1, 100), history.Where(e => !e.Refit).Select(e => e.Epoch));
        var best = history.Where(e => !e.Refit).MinBy(e => e.ValidLoss)!.Epoch;
        Assert.Equal(Enumerable.Range(1, best), history.Where(e => e.Refit).Select(e => e.Epoch));
        Assert.True(history[^1].TrainLoss < history[0].TrainLoss);
    }

    [Fact]
    public void TheFitReportsItsQuantizedModelAgainstItsFloatPath()
    {
        var check = iris.ByIndex.QuantizationCheck;

        Assert.NotNull(check);
        Assert.False(check.Collapsed, $"{check}");
        Assert.False(check.Recovered);
        Assert.True(check.Quantized > 0.85 && check.Float > 0.85, $"{check}");
        Assert.Null(NeuralNetClassifier<int>.Load(iris.ByIndex.Dump()).QuantizationCheck);
    }

    [Fact]
    public void PretrainEpochsIsASettingWithAnAutomaticDefault()
    {
        Assert.Null(NeuralNetOptions.Defaults.PretrainEpochs);
        Assert.Equal(0, NeuralNet.Classifier().PretrainEpochs(0).Options.PretrainEpochs);
        Assert.Equal(5, NeuralNetOptions.Defaults.Set("pretrain_epochs", 5).PretrainEpochs);
        Assert.Throws<ParameterOutOfRangeException>(() => NeuralNet.Classifier().PretrainEpochs(-1).Build());
    }

    [Fact]
    public void ProbabilitiesHaveOneColumnPerClassAndSumToOne()
    {
        var p = iris.ByIndex.PredictProba(iris.Data.XTest);
        var labels = iris.ByIndex.Predict(iris.Data.XTest);

        Assert.All(p, row => Assert.Equal(3, row.Length));
        Assert.All(p, row => Assert.Equal(1.0, row.Sum(), 6));
        // The predicted label is the most probable class.
        Assert.Equal(labels, p.Select(row => iris.ByIndex.Classes[Array.IndexOf(row, row.Max())]));
    }

    [Fact]
    public void StringLabelsComeBackFromPredict()
    {
        Assert.Equal(IrisFixture.Names, iris.ByName.Classes);
        // Sorted names keep the order of the indices, so the same seed trains the same network.
        var byIndex = iris.ByIndex.Predict(iris.Data.XTest).Select(c => IrisFixture.Names[c]);
        Assert.Equal(byIndex, iris.ByName.Predict(iris.Data.XTest));
    }

    [Fact]
    public void EveryFeatureContainerGivesTheSamePredictions()
    {
        var x = iris.Data.XTest;
        var jagged = Enumerable.Range(0, x.GetLength(0))
            .Select(i => Enumerable.Range(0, x.GetLength(1)).Select(j => x[i, j]).ToArray())
            .ToArray();
        var single = jagged.Select(r => r.Select(v => (float)v).ToArray()).ToArray();
        var matrix = new float[single.Length, single[0].Length];
        for (var i = 0; i < single.Length; i++)
            for (var j = 0; j < single[0].Length; j++) matrix[i, j] = single[i][j];
        var expected = iris.ByIndex.Predict(x);

        Assert.Equal(expected, iris.ByIndex.Predict(jagged));
        Assert.Equal(expected, iris.ByIndex.Predict(single));
        Assert.Equal(expected, iris.ByIndex.Predict(matrix));
        Assert.Equal(expected[0], iris.ByIndex.Predict(Features.FromRow(single[0]))[0]);
    }

    [Fact]
    public void SavedAndReloadedModelsPredictIdentically()
    {
        var path = Path.Combine(Path.GetTempPath(), $"fhenet-{Guid.NewGuid():N}.json");
        try
        {
            iris.ByName.Save(path);
            var fromFile = NeuralNetClassifier<string>.LoadFile(path);
            var fromJson = NeuralNetClassifier<string>.Load(iris.ByName.Dump());

            var expected = iris.ByName.PredictProba(iris.Data.XTest);
            Assert.Equal(expected, fromFile.PredictProba(iris.Data.XTest));
            Assert.Equal(iris.ByName.Predict(iris.Data.XTest), fromJson.Predict(iris.Data.XTest));
            Assert.Equal(IrisFixture.Names, fromFile.Classes);
            Assert.Equal(iris.ByName.Options.Layers, fromFile.Options.Layers);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void BitWidthsReportEveryLayerAndNoLookupAfterTheLast()
    {
        var widths = iris.ByIndex.BitWidths(iris.Data.XTrain);

        Assert.Equal(3, widths.Count);
        Assert.All(widths.Take(2), w => Assert.NotNull(w.LookupInputBits));
        Assert.Null(widths[2].LookupInputBits);
        Assert.All(widths, w => Assert.True(w.AccumulatorMin <= w.AccumulatorMax));
    }

    [Fact]
    public async Task FitAsyncReportsEveryEpochWithAShrinkingEta()
    {
        var recorder = new Recorder<TrainingProgress>();
        var model = iris.Builder.Epochs(5).ValidationFraction(0.2).Build();

        await model.FitAsync(iris.Data.XTrain, iris.Data.ClassesTrain, recorder);

        var validated = recorder.Items.Where(r => !r.Refit).ToArray();
        Assert.Equal([1, 2, 3, 4, 5], validated.Select(r => r.Epoch));
        Assert.All(validated, r => Assert.Equal(5, r.Epochs));
        Assert.All(validated, r => Assert.NotNull(r.ValidMetric));
        Assert.Equal(TimeSpan.Zero, validated[^1].Eta);
        // Then the refit on every row, for the epoch count of lowest validation loss.
        var best = validated.MinBy(r => r.ValidLoss)!.Epoch;
        var refit = recorder.Items.Skip(validated.Length).ToArray();
        Assert.Equal(Enumerable.Range(1, best), refit.Select(r => r.Epoch));
        Assert.All(refit, r => Assert.True(r.Refit && r.Epochs == best && r.ValidMetric is null));
        Assert.Equal(TimeSpan.Zero, refit[^1].Eta);
        Assert.True(model.IsFitted);
    }

    [Fact]
    public async Task CancellingFitAsyncStopsBetweenEpochsAndKeepsThePreviousModel()
    {
        using var cancel = new CancellationTokenSource();
        var recorder = new Recorder<TrainingProgress>(r => { if (r.Epoch == 2) cancel.Cancel(); });
        var fresh = iris.Builder.Epochs(50).Build();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => fresh.FitAsync(iris.Data.XTrain, iris.Data.ClassesTrain, recorder, cancel.Token));

        Assert.Equal(2, recorder.Items.Count);
        Assert.False(fresh.IsFitted);

        // A fitted model keeps its previous fit when a new one is cancelled.
        var fitted = iris.Builder.Epochs(3).Build().Fit(iris.Data.XTrain, iris.Data.ClassesTrain);
        var before = fitted.PredictProba(iris.Data.XTest);
        using var again = new CancellationTokenSource();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => fitted.FitAsync(
            iris.Data.XTrain, iris.Data.ClassesTrain, new Recorder<TrainingProgress>(_ => again.Cancel()), again.Token));
        Assert.Equal(before, fitted.PredictProba(iris.Data.XTest));
    }

    [Fact]
    public async Task AClearPredictAsyncReportsOnceForTheWholeBatch()
    {
        var recorder = new Recorder<InferenceProgress>();

        var labels = await iris.ByIndex.PredictAsync(iris.Data.XTest, FheMode.Disable, recorder);

        Assert.Equal(iris.ByIndex.Predict(iris.Data.XTest), labels);
        var report = Assert.Single(recorder.Items);
        Assert.Equal(iris.Data.YTest.Length, report.Done);
        Assert.Equal(iris.Data.YTest.Length, report.Total);
    }
}
