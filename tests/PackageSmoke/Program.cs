// The README's C# example, from the FheNet.CSharp package: iris (data/iris_train.csv, data/iris_test.csv), fit,
// predict, compile, simulate, two rows encrypted, save and reload. Usage: PackageSmoke DATA_DIR
// Ends with "Package test: N passed, N failed, N skipped" and exits non-zero on any failure.
using System.Globalization;
using FheNet.CSharp;

var dataDirectory = args.Length == 1 ? args[0] : throw new ArgumentException("usage: PackageSmoke DATA_DIR");
string[] names = ["setosa", "versicolor", "virginica"];

// Rows of features and the class name of the last column of a data/ CSV file.
(double[][] Features, string[] Labels) Read(string file)
{
    var rows = File.ReadLines(Path.Combine(dataDirectory, file)).Skip(1).Where(line => line.Length > 0)
        .Select(line => line.Split(',').Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray())
        .ToArray();
    return (rows.Select(r => r[..^1]).ToArray(), rows.Select(r => names[(int)r[^1]]).ToArray());
}

var (trainRows, yTrain) = Read("iris_train.csv");
var (testRows, yTest) = Read("iris_test.csv");
// Standardized with the training split's statistics.
var width = trainRows[0].Length;
var mean = Enumerable.Range(0, width).Select(j => trainRows.Average(r => r[j])).ToArray();
var std = Enumerable.Range(0, width)
    .Select(j => Math.Sqrt(trainRows.Average(r => (r[j] - mean[j]) * (r[j] - mean[j])))).ToArray();
double[][] Standardize(double[][] rows) => rows.Select(r => r.Select((v, j) => (v - mean[j]) / std[j]).ToArray()).ToArray();
var xTrain = Standardize(trainRows);
var xTest = Standardize(testRows);

var passed = 0;
var failed = 0;
void Check(string name, Func<bool> holds)
{
    bool ok;
    try { ok = holds(); }
    catch (Exception e) { Console.WriteLine($"  {e.GetType().Name}: {e.Message}"); ok = false; }
    Console.WriteLine($"{(ok ? "passed" : "FAILED")}: {name}");
    if (ok) passed++; else failed++;
}

var cancellationToken = CancellationToken.None;
var classifier = NeuralNet.Classifier()
    .Layers(3).Activation(Activation.ReLU)
    .WeightBits(3).ActivationBits(3).AccumulatorBits(8)
    .Epochs(100).LearningRate(1e-3).ValidationFraction(0.15).Seed(0)
    .Build<string>();

string[] clear = [];
Check("fit and predict: the 3-bit model classifies at least 80% of the iris test rows", () =>
{
    classifier.FitAsync(xTrain, yTrain, null, cancellationToken).GetAwaiter().GetResult();
    clear = classifier.Predict(xTest);
    var accuracy = clear.Zip(yTest).Count(p => p.First == p.Second) / (double)yTest.Length;
    Console.WriteLine($"  test accuracy {accuracy:F3} after {classifier.History.Count} epochs");
    return accuracy >= 0.8;
});
Check("predict_proba: one column per class, rows sum to 1, the largest is the predicted class", () =>
{
    var probabilities = classifier.PredictProba(xTest);
    return classifier.Classes.Order().SequenceEqual(names)
        && probabilities.All(row => row.Length == names.Length && Math.Abs(row.Sum() - 1.0) < 1e-6)
        && probabilities.Select(row => classifier.Classes[Array.IndexOf(row, row.Max())]).SequenceEqual(clear);
});
Check("compile: a circuit with a lookup layer and a TFHE parameter set", () =>
{
    var report = classifier.CompileAsync(xTrain, cancellationToken: cancellationToken).GetAwaiter().GetResult();
    Console.WriteLine($"  {report.Layers.Count} layers, {report.BootstrapsPerSample} bootstraps per sample");
    return report.Layers.Count == 3 && report.BootstrapsPerSample > 0 && report.Parameters.PolynomialSize > 0;
});
Check("simulate at the default p_error: the same labels as the clear model", () =>
    classifier.Predict(xTest, FheMode.Simulate).SequenceEqual(clear));
Check("execute: two rows encrypted, decrypted to the clear model's labels", () =>
{
    classifier.KeygenAsync(cancellationToken: cancellationToken).GetAwaiter().GetResult();
    var encrypted = classifier.PredictAsync(xTest[..2], FheMode.Execute, null, cancellationToken)
        .GetAwaiter().GetResult();
    Console.WriteLine($"  encrypted {string.Join(", ", encrypted)}; clear {string.Join(", ", clear[..2])}");
    return encrypted.SequenceEqual(clear[..2]);
});
Check("save and load: the reloaded model predicts the same labels", () =>
{
    var path = Path.Combine(Path.GetTempPath(), $"fhenet-package-test-{Environment.ProcessId}.json");
    try
    {
        classifier.Save(path);
        return NeuralNetClassifier<string>.LoadFile(path).Predict(xTest).SequenceEqual(clear);
    }
    finally { File.Delete(path); }
});

Console.WriteLine($"Package test: {passed} passed, {failed} failed, 0 skipped");
return failed == 0 ? 0 : 1;
