using Xunit;

namespace FheNet.CSharp.Tests;

public class RegressorTests
{
    private static readonly DataSplit Diabetes = DataSets.Split("diabetes");

    [Fact]
    public void FitsDiabetesExplainsPartOfTheVarianceAndRunsEncrypted()
    {
        var model = NeuralNet.Regressor().Layers(2).HiddenMultiplier(1).Epochs(30).Build()
            .Fit(Diabetes.XTrain, Diabetes.YTrain);

        Assert.True(model.Score(Diabetes.XTest, Diabetes.YTest) > 0.3);
        Assert.Equal(1, model.TargetCount);
        Assert.Equal(10, model.FeatureCount);

        model.Compile(Diabetes.XTrain);
        var row = DataSets.Head(Diabetes.XTest, 1);
        Assert.Equal(model.Predict(row), model.Predict(row, FheMode.Execute));
    }

    [Fact]
    public void SeveralTargetsArePredictedTogether()
    {
        var y = Diabetes.YTrain.Select(v => new[] { v, -2.0 * v }).ToArray();
        var model = NeuralNet.Regressor().Layers(2).Epochs(5).Build().Fit(Diabetes.XTrain, y);

        var predicted = model.PredictTargets(Diabetes.XTest);

        Assert.Equal(2, model.TargetCount);
        Assert.All(predicted, r => Assert.Equal(2, r.Length));
        Assert.Equal(model.Predict(Diabetes.XTest), predicted.Select(r => r[0]));
    }

    [Fact]
    public async Task FitAsyncReportsEveryEpochAndCancelsBetweenEpochs()
    {
        var builder = NeuralNet.Regressor().Layers(2).Epochs(4);
        var recorder = new Recorder<TrainingProgress>();

        var model = await builder.Build().FitAsync(Diabetes.XTrain, Diabetes.YTrain, recorder);

        Assert.Equal([1, 2, 3, 4], recorder.Items.Where(r => !r.Refit).Select(r => r.Epoch));
        Assert.Equal(recorder.Items.Select(r => (r.TrainLoss, r.Refit)), model.History.Select(e => (e.TrainLoss, e.Refit)));

        using var cancel = new CancellationTokenSource();
        var stopped = new Recorder<TrainingProgress>(_ => cancel.Cancel());
        var before = model.Predict(Diabetes.XTest);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => model.FitAsync(Diabetes.XTrain, Diabetes.YTrain, stopped, cancel.Token));
        Assert.Single(stopped.Items);
        Assert.Equal(before, model.Predict(Diabetes.XTest)); // the previous model is kept
    }

    [Fact]
    public void SavedAndReloadedRegressorsPredictIdentically()
    {
        var model = NeuralNet.Regressor().Layers(2).Epochs(3).Build().Fit(Diabetes.XTrain, Diabetes.YTrain);

        var reloaded = NeuralNetRegressor.Load(model.Dump());

        Assert.Equal(model.Predict(Diabetes.XTest), reloaded.Predict(Diabetes.XTest));
        Assert.Empty(reloaded.History);
    }
}
