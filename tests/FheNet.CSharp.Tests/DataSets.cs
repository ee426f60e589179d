using System.Globalization;
using System.Runtime.CompilerServices;

namespace FheNet.CSharp.Tests;

/// <summary>A split of one of the repository's datasets (data/), standardized with the train split's statistics.</summary>
public sealed record DataSplit(double[,] XTrain, double[] YTrain, double[,] XTest, double[] YTest)
{
    public int[] ClassesTrain => YTrain.Select(v => (int)v).ToArray();
    public int[] ClassesTest => YTest.Select(v => (int)v).ToArray();
}

public static class DataSets
{
    private static string DataFolder([CallerFilePath] string here = "") =>
        Path.Combine(Path.GetDirectoryName(here)!, "..", "..", "data");

    /// <summary>Features (rows) and the last column (target) of a CSV file of data/.</summary>
    private static (double[][] Features, double[] Target) Read(string file)
    {
        var rows = File.ReadLines(Path.Combine(DataFolder(), file))
            .Skip(1)
            .Where(line => line.Length > 0)
            .Select(line => line.Split(',').Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray())
            .ToArray();
        return (rows.Select(r => r[..^1]).ToArray(), rows.Select(r => r[^1]).ToArray());
    }

    public static DataSplit Split(string name)
    {
        var (train, yTrain) = Read($"{name}_train.csv");
        var (test, yTest) = Read($"{name}_test.csv");
        var columns = train[0].Length;
        var mean = Enumerable.Range(0, columns).Select(j => train.Average(r => r[j])).ToArray();
        var std = Enumerable.Range(0, columns)
            .Select(j => Math.Max(1e-12, Math.Sqrt(train.Average(r => (r[j] - mean[j]) * (r[j] - mean[j])))))
            .ToArray();
        double[,] Standardize(double[][] rows)
        {
            var m = new double[rows.Length, columns];
            for (var i = 0; i < rows.Length; i++)
                for (var j = 0; j < columns; j++) m[i, j] = (rows[i][j] - mean[j]) / std[j];
            return m;
        }
        return new DataSplit(Standardize(train), yTrain, Standardize(test), yTest);
    }

    /// <summary>The first <paramref name="count"/> rows of a matrix.</summary>
    public static double[,] Head(double[,] x, int count)
    {
        var m = new double[count, x.GetLength(1)];
        for (var i = 0; i < count; i++)
            for (var j = 0; j < x.GetLength(1); j++) m[i, j] = x[i, j];
        return m;
    }
}

/// <summary>Collects reports synchronously (Progress&lt;T&gt; would post them later, racing the assertions).</summary>
public sealed class Recorder<T> : IProgress<T>
{
    private readonly List<T> _items = [];
    private readonly Action<T>? _then;

    public Recorder(Action<T>? then = null) => _then = then;

    public IReadOnlyList<T> Items { get { lock (_items) return _items.ToArray(); } }

    public void Report(T value)
    {
        lock (_items) _items.Add(value);
        _then?.Invoke(value);
    }
}
