using FheNet.Preprocessing;
using Xunit;

namespace FheNet.CSharp.Tests;

/// <summary>
/// A new user's program: raw CSV columns in (no scaling by hand), the documented defaults with three layers,
/// predictions and a deployment out.
/// </summary>
public class RawDataTests
{
    private static (CsvData Train, CsvData Test) Files(string name) =>
        (DataSets.Read($"{name}_train.csv"), DataSets.Read($"{name}_test.csv"));

    [Theory]
    [InlineData("breast_cancer")]
    [InlineData("digits")]
    public void RawFeaturesAtTheDefaultsScoreAtLeast90Percent(string name)
    {
        var (train, test) = Files(name);
        var model = NeuralNet.Classifier().Layers(3).Build()
            .Fit(train.Features, train.IntegerLabels());

        var accuracy = model.Score(test.Features, test.IntegerLabels());

        Assert.True(accuracy >= 0.90, $"{name}: accuracy {accuracy:F3} on raw features");
    }

    [Fact]
    public void TheScalerIsASettingAndTravelsWithTheDumpedModel()
    {
        var (train, test) = Files("breast_cancer");
        var robust = NeuralNet.Classifier().Scaler(FeatureScaling.Robust).Epochs(2).Build()
            .Fit(train.Features, train.IntegerLabels());

        var loaded = NeuralNetClassifier<int>.Load(robust.Dump());

        Assert.Equal(FeatureScaling.Robust, loaded.Options.Scaling);
        Assert.Equal(robust.Predict(test.Features), loaded.Predict(test.Features));
        Assert.Equal(FeatureScaling.Standard, NeuralNetOptions.Defaults.Scaling);
        Assert.Equal(FeatureScaling.None, NeuralNetOptions.Defaults.Set("preprocessing", "none").Scaling);
    }

    [Fact]
    public void ANaNFeatureIsATypedErrorNamingItsRowAndColumn()
    {
        var (train, _) = Files("iris");
        var model = NeuralNet.Classifier().Epochs(1).Build<string>().Fit(train.Features, train.Labels);
        var rows = new[] { new float[] { 5.1f, 3.5f, 1.4f, 0.2f }, new float[] { 5.1f, 3.5f, float.NaN, 0.2f } };

        var error = Assert.Throws<NonFiniteFeatureException>(() => model.Predict(rows));

        Assert.Equal((1, 2), (error.Row, error.Column));
        Assert.Contains("row 1, column 2", error.Message);
    }

    [Fact]
    public void DeployedRawRowsWithWordLabelsDecryptToTheClearPredictions()
    {
        var root = Directory.CreateTempSubdirectory("fhenet-raw-");
        try
        {
            // Iris with its species as words, read by column name.
            var csv = Path.Combine(root.FullName, "iris_words.csv");
            var names = new[] { "setosa", "versicolor", "virginica" };
            var iris = DataSets.Read("iris_train.csv");
            File.WriteAllLines(csv, new[] { "sepal_length,sepal_width,petal_length,petal_width,species" }.Concat(
                iris.Features.Zip(iris.IntegerLabels(), (r, y) =>
                    string.Join(",", r.Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture))) + "," + names[y])));
            var train = CsvData.Read(csv, label: "species",
                features: ["sepal_length", "sepal_width", "petal_length", "petal_width"]);
            var model = NeuralNet.Classifier().Layers(3).Build<string>().Fit(train.Features, train.Labels);
            model.Compile(train.Features);
            FheModelDev.Save(model, Path.Combine(root.FullName, "model"));

            var server = new FheModelServer(Path.Combine(root.FullName, "model"));
            var client = new FheModelClient(server.ClientArtifact, Path.Combine(root.FullName, "keys"));
            client.GenerateKeys();
            var keyId = server.RegisterKeys(client.EvaluationKeys());
            var rows = train.Features.Take(2).ToArray();
            var clear = model.Predict(rows);
            for (var i = 0; i < rows.Length; i++)
            {
                Assert.True(client.CheckRange(rows[i]).InRange);
                var probabilities = client.DeserializeDecryptDequantize(server.Run(keyId, client.QuantizeEncryptSerialize(rows[i])));
                Assert.Equal(clear[i], client.Classes[Array.IndexOf(probabilities, probabilities.Max())]);
            }
            Assert.Equal(names, client.Classes);
            Assert.Contains(clear[0], names);
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }

    [Fact]
    public void CsvErrorsNameTheLineAndTheColumn()
    {
        static CsvFormatException Fails(string text, string label = "target", string[]? features = null) =>
            Assert.Throws<CsvFormatException>(() => CsvData.Parse(new StringReader(text), label, features));

        var ragged = Fails("a,b,target\n1,2,x\n3,4\n");
        var empty = Fails("a,b,target\n1,2,x\n3,,y\n");
        var text = Fails("a,b,target\n1,2,x\n3,4,y\n5,six,z\n");
        var comma = Fails("a,b,target\n\"1,5\",2,x\n");
        var missing = Fails("a,b,target\n1,2,x\n", features: ["a", "c"]);
        var noLabel = Fails("a,b,target\n1,2,x\n", label: "class");

        Assert.Equal((3, "target"), (ragged.Line, ragged.Column));
        Assert.Equal((3, "b"), (empty.Line, empty.Column));
        Assert.Equal((4, "b"), (text.Line, text.Column));
        Assert.Contains("'six'", text.Message);
        Assert.Equal((2, "a"), (comma.Line, comma.Column));
        Assert.Equal((1, "c"), (missing.Line, missing.Column));
        Assert.Equal((1, "class"), (noLabel.Line, noLabel.Column));
    }

    [Fact]
    public void CsvReadsChosenColumnsInTheirOrderAndTextOrNumericLabels()
    {
        var data = CsvData.Parse(new StringReader("a,b,c,species\n1.5,2,3,setosa\n\n-4e1,5,6,virginica\n"), "species", ["c", "a"]);

        Assert.Equal(new[] { "c", "a" }, data.Columns);
        Assert.Equal(new[] { new[] { 3f, 1.5f }, new[] { 6f, -40f } }, data.Features);
        Assert.Equal(new[] { "setosa", "virginica" }, data.Labels);
        var notANumber = Assert.Throws<CsvFormatException>(() => data.NumericLabels());
        Assert.Equal((2, "species"), (notANumber.Line, notANumber.Column));
    }
}

/// <summary>C# parity with the F# estimators: benchmark twin, pruning, a compiled model restored from its directory, the
/// range margin and the range the client checks.</summary>
public class ParityTests(CompiledMoonsFixture moons) : IClassFixture<CompiledMoonsFixture>
{
    [Fact]
    public void FitBenchmarkReturnsTheQuantizedModelAndItsFloatTwin()
    {
        var (quantized, twin) = NeuralNet.Classifier().Layers(2).Epochs(5).Build()
            .FitBenchmark(moons.Data.XTrain, moons.Data.ClassesTrain);

        Assert.True(quantized.Score(moons.Data.XTest, moons.Data.ClassesTest) > 0.8);
        Assert.True(twin.Score(moons.Data.XTest, moons.Data.ClassesTest) > 0.8);
        Assert.Throws<InvalidOperationException>(() => twin.Compile(moons.Data.XTrain));
    }

    [Fact]
    public void PruneRemovesHiddenNeuronsAndKeepsTheModelUsable()
    {
        var model = NeuralNet.Classifier().Layers(2).Epochs(5).Build().Fit(moons.Data.XTrain, moons.Data.ClassesTrain);

        var pruned = model.Prune(moons.Data.XTrain, moons.Data.ClassesTrain, 0.5);

        Assert.True(pruned.Score(moons.Data.XTest, moons.Data.ClassesTest) > 0.8);
        Assert.Throws<ParameterOutOfRangeException>(() => model.Prune(moons.Data.XTrain, moons.Data.ClassesTrain, 1.0));
    }

    [Fact]
    public void ACompiledModelIsRestoredFromItsSavedDirectory()
    {
        var root = Directory.CreateTempSubdirectory("fhenet-parity-");
        try
        {
            FheModelDev.Save(moons.Model, root.FullName);
            var restored = NeuralNetClassifier<int>.Load(moons.Model.Dump());
            Assert.False(restored.IsCompiled);

            var report = restored.LoadCompiled(root.FullName);

            Assert.True(restored.IsCompiled);
            Assert.Equal(moons.Report.Layers.Count, report.Layers.Count);
            var rows = DataSets.Head(moons.Data.XTest, 20);
            Assert.Equal(moons.Model.Predict(rows, FheMode.Simulate), restored.Predict(rows, FheMode.Simulate));
            var other = NeuralNet.Classifier().Layers(2).Epochs(1).Seed(7).Build().Fit(moons.Data.XTrain, moons.Data.ClassesTrain);
            Assert.Throws<ArgumentException>(() => other.LoadCompiled(root.FullName));
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }

    [Fact]
    public void TheClientFlagsRowsOutsideTheCalibratedRangeAndTheMarginWidensIt()
    {
        var root = Directory.CreateTempSubdirectory("fhenet-range-");
        try
        {
            var model = NeuralNet.Classifier().Layers(2).Epochs(2).Build().Fit(moons.Data.XTrain, moons.Data.ClassesTrain);
            var x = moons.Data.XTrain;
            var max0 = Enumerable.Range(0, x.GetLength(0)).Max(i => x[i, 0]);
            var min0 = Enumerable.Range(0, x.GetLength(0)).Min(i => x[i, 0]);
            var width = max0 - min0;
            var slightlyOutside = new[] { max0 + 0.1 * width, x[0, 1] };

            model.Compile(x, rangeMargin: 0.0);
            FheModelDev.Save(model, Path.Combine(root.FullName, "tight"));
            var tight = new FheModelClient(Path.Combine(root.FullName, "tight"), Path.Combine(root.FullName, "keys"));
            var flagged = tight.CheckRange(slightlyOutside);

            Assert.False(flagged.InRange);
            var feature = Assert.Single(flagged.Features);
            Assert.Equal(0, feature.Column);
            Assert.Equal(max0, feature.Max, 5);
            Assert.True(tight.CheckRange(new[] { x[0, 0], x[0, 1] }).InRange);

            model.Compile(x, rangeMargin: 0.25);
            FheModelDev.Save(model, Path.Combine(root.FullName, "wide"));
            var wide = new FheModelClient(Path.Combine(root.FullName, "wide"), Path.Combine(root.FullName, "keys"));
            Assert.True(wide.CheckRange(slightlyOutside).InRange);
            Assert.False(wide.CheckRange(new[] { max0 + 0.3 * width, x[0, 1] }).InRange);
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }
}
