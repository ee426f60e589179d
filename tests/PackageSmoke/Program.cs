// The README's C# example, from the FheNet.CSharp package: iris (data/iris_train.csv, data/iris_test.csv: raw
// features, the class column read as text), fit, predict, compile, simulate, two rows encrypted, save and
// reload, then the deployment round trip. Usage: PackageSmoke DATA_DIR
// Ends with "Package test: N passed, N failed, N skipped" and exits non-zero on any failure.
using FheNet.CSharp;

var dataDirectory = args.Length == 1 ? args[0] : throw new ArgumentException("usage: PackageSmoke DATA_DIR");
var train = CsvData.Read(Path.Combine(dataDirectory, "iris_train.csv"), label: "target");
var test = CsvData.Read(Path.Combine(dataDirectory, "iris_test.csv"), label: "target");

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
    classifier.FitAsync(train.Features, train.Labels, progress: null, cancellationToken).GetAwaiter().GetResult();
    clear = classifier.Predict(test.Features);
    var accuracy = clear.Zip(test.Labels).Count(p => p.First == p.Second) / (double)test.Labels.Length;
    Console.WriteLine($"  test accuracy {accuracy:F3} after {classifier.History.Count} epochs");
    return accuracy >= 0.8;
});
Check("predict_proba: one column per class, rows sum to 1, the largest is the predicted class", () =>
{
    var probabilities = classifier.PredictProba(test.Features);
    return classifier.Classes.Order().SequenceEqual(["0", "1", "2"])
        && probabilities.All(row => row.Length == 3 && Math.Abs(row.Sum() - 1.0) < 1e-6)
        && probabilities.Select(row => classifier.Classes[Array.IndexOf(row, row.Max())]).SequenceEqual(clear);
});
Check("compile: a circuit with a lookup layer and a TFHE parameter set", () =>
{
    var report = classifier.CompileAsync(train.Features, cancellationToken: cancellationToken).GetAwaiter().GetResult();
    Console.WriteLine($"  {report.Layers.Count} layers, {report.BootstrapsPerSample} bootstraps per sample");
    return report.Layers.Count == 3 && report.BootstrapsPerSample > 0 && report.Parameters.PolynomialSize > 0;
});
Check("simulate at the default p_error: the same labels as the clear model", () =>
    classifier.Predict(test.Features, FheMode.Simulate).SequenceEqual(clear));
Check("execute: two rows encrypted, decrypted to the clear model's labels", () =>
{
    classifier.KeygenAsync(cancellationToken: cancellationToken).GetAwaiter().GetResult();
    var encrypted = classifier.PredictAsync(test.Features[..2], FheMode.Execute, null, cancellationToken)
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
        return NeuralNetClassifier<string>.LoadFile(path).Predict(test.Features).SequenceEqual(clear);
    }
    finally { File.Delete(path); }
});

Check("deployment: the server evaluates an encrypted row; the client decrypts the clear model's class", () =>
{
    var root = Path.Combine(Path.GetTempPath(), $"fhenet-package-test-{Environment.ProcessId}");
    try
    {
        FheModelDev.Save(classifier, Path.Combine(root, "model"));
        var server = new FheModelServer(Path.Combine(root, "model"));
        var client = new FheModelClient(server.ClientArtifact, Path.Combine(root, "keys"));
        client.GenerateKeys();
        var keyId = server.RegisterKeys(client.EvaluationKeys());
        var answer = server.RunAsync(keyId, client.QuantizeEncryptSerialize(test.Features[0]), cancellationToken)
            .GetAwaiter().GetResult();
        var rowProbabilities = client.DeserializeDecryptDequantize(answer);
        var best = Array.IndexOf(rowProbabilities, rowProbabilities.Max());
        Console.WriteLine($"  row 0: class {classifier.Classes[best]}; clear {clear[0]}");
        return rowProbabilities.Length == 3 && classifier.Classes[best] == clear[0];
    }
    finally { if (Directory.Exists(root)) Directory.Delete(root, recursive: true); }
});

Console.WriteLine($"Package test: {passed} passed, {failed} failed, 0 skipped");
return failed == 0 ? 0 : 1;
