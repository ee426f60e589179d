using System.Runtime.CompilerServices;

namespace FheNet.CSharp.Tests;

/// <summary>A split of one of the repository's datasets (data/), raw features as in the files: the estimators scale
/// them.</summary>
public sealed record DataSplit(double[,] XTrain, double[] YTrain, double[,] XTest, double[] YTest)
{
    public int[] ClassesTrain => YTrain.Select(v => (int)v).ToArray();
    public int[] ClassesTest => YTest.Select(v => (int)v).ToArray();
}

public static class DataSets
{
    public static string DataFolder([CallerFilePath] string here = "") =>
        Path.Combine(Path.GetDirectoryName(here)!, "..", "..", "data");

    /// <summary>A CSV file of data/: every column but <c>target</c> is a feature.</summary>
    public static CsvData Read(string file) => CsvData.Read(Path.Combine(DataFolder(), file), label: "target");

    public static DataSplit Split(string name)
    {
        var train = Read($"{name}_train.csv");
        var test = Read($"{name}_test.csv");
        return new DataSplit(Matrix(train.Features), train.NumericLabels(), Matrix(test.Features), test.NumericLabels());
    }

    private static double[,] Matrix(float[][] rows)
    {
        var m = new double[rows.Length, rows[0].Length];
        for (var i = 0; i < rows.Length; i++)
            for (var j = 0; j < rows[i].Length; j++) m[i, j] = rows[i][j];
        return m;
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
