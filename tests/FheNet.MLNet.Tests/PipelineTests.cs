using System.Runtime.CompilerServices;
using FheNet.CSharp;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using Xunit;

namespace FheNet.MLNet.Tests;

/// <summary>One iris flower as ML.NET loads it from the repository's CSV (raw measurements, species as a number).</summary>
public sealed class Flower
{
    [LoadColumn(0)] public float F0;
    [LoadColumn(1)] public float F1;
    [LoadColumn(2)] public float F2;
    [LoadColumn(3)] public float F3;
    [LoadColumn(4)] public float Target;
}

/// <summary>The FheNet estimators inside real ML.NET pipelines.</summary>
public class PipelineTests
{
    private static readonly MLContext Ml = new(seed: 0);

    private static string Data(string file, [CallerFilePath] string here = "") =>
        Path.Combine(Path.GetDirectoryName(here)!, "..", "..", "data", file);

    private static IDataView Iris(string split) =>
        Ml.Data.LoadFromTextFile<Flower>(Data($"iris_{split}.csv"), hasHeader: true, separatorChar: ',');

    private static readonly FheNetOptions Small = new() { Network = NeuralNetOptions.Defaults with { Layers = 2 } };

    private static IEstimator<ITransformer> Prepare() =>
        Ml.Transforms.Concatenate("Features", nameof(Flower.F0), nameof(Flower.F1), nameof(Flower.F2), nameof(Flower.F3))
            .Append(Ml.Transforms.Conversion.MapValueToKey("Label", nameof(Flower.Target)));

    [Fact]
    public void APipelinePredictsWhatTheEstimatorPredicts()
    {
        var train = Iris("train");
        var test = Iris("test");
        var pipeline = Prepare().Append(Ml.MulticlassClassification.Trainers.FheNet(Small));

        var model = pipeline.Fit(train);
        var scored = model.Transform(test);

        // The same settings fitted directly on the same rows, keys as labels.
        var prepare = Prepare().Fit(train);
        var prepared = prepare.Transform(train);
        var direct = NeuralNet.Classifier(Small.Network).Build<uint>()
            .Fit(prepared.ReadFeatures(), prepared.GetColumn<uint>("Label").ToArray());
        var testFeatures = prepare.Transform(test).ReadFeatures();
        // Keys read as their raw values (1-based), as the Label column was read.
        Assert.Equal(direct.Predict(testFeatures), scored.GetColumn<uint>("PredictedLabel").ToArray());
        var scores = scored.GetColumn<float[]>("Score").ToArray();
        var probabilities = direct.PredictProba(testFeatures);
        for (var i = 0; i < scores.Length; i++)
            Assert.Equal(probabilities[i].Select(p => (float)p), scores[i]);

        // ML.NET's own evaluator reads the predicted keys as the label's keys (a shifted key would score near 0).
        var metrics = Ml.MulticlassClassification.Evaluate(scored);
        Assert.True(metrics.MacroAccuracy > 0.7, $"macro accuracy {metrics.MacroAccuracy}");
        // The predicted keys keep the label's values, so ML.NET maps them back.
        var species = Ml.Transforms.Conversion.MapKeyToValue("Species", "PredictedLabel").Fit(scored).Transform(scored)
            .GetColumn<float>("Species").ToArray();
        Assert.Equal(Ml.Data.CreateEnumerable<Flower>(test, false).Count(), species.Length);
        Assert.All(species, s => Assert.InRange(s, 0f, 2f));
    }

    [Fact]
    public void SimulatedAndEncryptedTransformsEqualTheClearOne()
    {
        var train = Prepare().Fit(Iris("train")).Transform(Iris("train"));
        var transformer = new FheNetClassificationEstimator(Small).Fit(train);
        var head = Ml.Data.TakeRows(train, 2);

        var clear = transformer.Transform(head).GetColumn<uint>("PredictedLabel").ToArray();
        var simulated = transformer.WithMode(FheMode.Simulate, train).Transform(head).GetColumn<uint>("PredictedLabel").ToArray();
        var encrypted = transformer.WithMode(FheMode.Execute, train).Transform(head).GetColumn<uint>("PredictedLabel").ToArray();

        Assert.Equal(clear, simulated);
        Assert.Equal(clear, encrypted);
    }

    [Fact]
    public void ASavedTransformerLoadsAndPredictsTheSame()
    {
        var root = Directory.CreateTempSubdirectory("fhenet-mlnet-");
        try
        {
            var train = Prepare().Fit(Iris("train")).Transform(Iris("train"));
            var options = Small with { Mode = FheMode.Simulate, ScoreColumnName = "Probabilities" };
            var transformer = new FheNetClassificationEstimator(options).Fit(train);

            transformer.Save(root.FullName);
            var loaded = FheNetClassificationTransformer.Load(root.FullName);

            Assert.Equal(FheMode.Simulate, loaded.Mode);
            Assert.Equal(
                transformer.Transform(train).GetColumn<float[]>("Probabilities").ToArray(),
                loaded.Transform(train).GetColumn<float[]>("Probabilities").ToArray());
            Assert.Throws<NotSupportedException>(() => Ml.Model.Save(loaded, train.Schema, Path.Combine(root.FullName, "ml.zip")));
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }

    [Fact]
    public void TheRegressorTrainsAndScoresInAPipeline()
    {
        var root = Directory.CreateTempSubdirectory("fhenet-mlnet-");
        try
        {
            var data = Ml.Data.LoadFromTextFile(Data("diabetes_train.csv"),
                [new TextLoader.Column("X", DataKind.Single, 0, 9), new TextLoader.Column("Label", DataKind.Single, 10)],
                separatorChar: ',', hasHeader: true);
            var pipeline = Ml.Transforms.CopyColumns("Features", "X")
                .Append(Ml.Regression.Trainers.FheNet(Small with { Network = Small.Network with { Epochs = 20 } }));

            var model = pipeline.Fit(data);
            var metrics = Ml.Regression.Evaluate(model.Transform(data));

            Assert.True(metrics.RSquared > 0.3, $"R² {metrics.RSquared}");
            var regressor = model.LastTransformer;
            regressor.Save(root.FullName);
            var loaded = FheNetRegressionTransformer.Load(root.FullName);
            Assert.Equal(
                regressor.Transform(model.Transform(data)).GetColumn<float>("Score").ToArray(),
                loaded.Transform(model.Transform(data)).GetColumn<float>("Score").ToArray());
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }

    [Fact]
    public void BadColumnsAreTypedErrorsThatSayWhatToDo()
    {
        var raw = Iris("train");
        var prepared = Prepare().Fit(raw).Transform(raw);

        var labelled = Ml.Transforms.Conversion.MapValueToKey("Label", nameof(Flower.Target)).Fit(raw).Transform(raw);
        var noFeatures = Assert.Throws<ArgumentException>(() => new FheNetClassificationEstimator().Fit(labelled));
        var scalar = Assert.Throws<ArgumentException>(() =>
            new FheNetClassificationEstimator(new FheNetOptions { FeatureColumnName = nameof(Flower.F0) }).Fit(prepared));
        var vectorLabel = Assert.Throws<ArgumentException>(() =>
            new FheNetClassificationEstimator(new FheNetOptions { LabelColumnName = "Features" }).Fit(prepared));
        var keyTarget = Assert.Throws<ArgumentException>(() => new FheNetRegressionEstimator().Fit(prepared));

        Assert.Contains("no column 'Features'", noFeatures.Message);
        Assert.Contains("Concatenate", scalar.Message);
        Assert.Contains("MapValueToKey", vectorLabel.Message);
        Assert.Contains("Single targets", keyTarget.Message);
    }

    [Fact]
    public void DataFrameColumnsBecomeFeaturesAndLabels()
    {
        var frame = new DataFrame(
            new PrimitiveDataFrameColumn<double>("a", [1.5, 2.5, 3.5]),
            new PrimitiveDataFrameColumn<int>("b", [1, 2, 3]),
            new StringDataFrameColumn("species", ["setosa", "virginica", "setosa"]));

        Assert.Equal(new[] { new[] { 1f, 1.5f }, new[] { 2f, 2.5f }, new[] { 3f, 3.5f } }, frame.ReadFeatures("b", "a"));
        Assert.Equal(new[] { new[] { 1.5f, 1f }, new[] { 2.5f, 2f }, new[] { 3.5f, 3f } }, frame.ReadFeatures());
        Assert.Equal(new[] { "setosa", "virginica", "setosa" }, frame.ReadLabels<string>("species"));
        Assert.Contains("not numbers", Assert.Throws<ArgumentException>(() => frame.ReadFeatures("a", "species")).Message);
        Assert.Contains("no column 'c'", Assert.Throws<ArgumentException>(() => frame.ReadFeatures("c")).Message);
        var missing = new DataFrame(new PrimitiveDataFrameColumn<double>("a", [1.0, null]));
        Assert.Contains("row 1", Assert.Throws<ArgumentException>(() => missing.ReadFeatures()).Message);
        Assert.Contains("row 0", Assert.Throws<ArgumentException>(() => frame.ReadLabels<int>("species")).Message);
    }

    [Fact]
    public void ADataFrameTrainsAClassifierThroughItsDataView()
    {
        var frame = new DataFrame(
            new PrimitiveDataFrameColumn<float>("x", Enumerable.Range(0, 40).Select(i => (float)i)),
            new PrimitiveDataFrameColumn<float>("y", Enumerable.Range(0, 40).Select(i => (float)(i % 7))),
            new StringDataFrameColumn("Label", Enumerable.Range(0, 40).Select(i => i < 20 ? "low" : "high")));
        var pipeline = Ml.Transforms.Concatenate("Features", "x", "y")
            .Append(Ml.MulticlassClassification.Trainers.FheNet(Small with { Network = Small.Network with { Epochs = 30 } }));

        var scored = pipeline.Fit(frame).Transform(frame);
        var predicted = scored.GetColumn<ReadOnlyMemory<char>>("PredictedLabel").Select(v => v.ToString()).ToArray();

        var labels = frame.ReadLabels<string>("Label");
        Assert.True(predicted.Zip(labels).Count(p => p.First == p.Second) >= 36, string.Join(",", predicted));
    }
}
