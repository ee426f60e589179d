using CoreCsv = FheNet.Preprocessing.Csv;
using CoreCsvTable = FheNet.Preprocessing.CsvTableModule;
using Microsoft.FSharp.Core;

namespace FheNet.CSharp;

/// <summary>
/// Feature columns and a label column read from a CSV file with a header (comma-separated, RFC 4180 quoting,
/// invariant culture). Features are raw: the estimators scale them.
/// </summary>
/// <example>
/// <code>
/// var train = CsvData.Read("train.csv", label: "species");
/// var model = NeuralNet.Classifier().Build&lt;string&gt;().Fit(train.Features, train.Labels);
/// </code>
/// </example>
public sealed class CsvData
{
    private readonly FheNet.Preprocessing.CsvTable _table;
    private readonly string _source;

    private CsvData(FheNet.Preprocessing.CsvTable table, string source) => (_table, _source) = (table, source);

    /// <summary>The names of the feature columns, in the order of each row's values.</summary>
    public IReadOnlyList<string> Columns => _table.Columns;

    /// <summary>The feature rows.</summary>
    public float[][] Features => _table.Features;

    /// <summary>The label column's values as text (e.g. <c>setosa</c>, or <c>3</c>).</summary>
    public string[] Labels => _table.Labels;

    /// <summary>The label column's values as numbers (invariant culture): regression targets or integer classes.</summary>
    /// <exception cref="FheNet.Preprocessing.CsvFormatException">A label is not a number; the message names its line.</exception>
    public double[] NumericLabels() => CoreCsvTable.valueLabels(_source, _table);

    /// <summary>The label column's values as integers.</summary>
    /// <exception cref="FheNet.Preprocessing.CsvFormatException">A label is not an integer; the message names its line.</exception>
    public int[] IntegerLabels() =>
        NumericLabels().Select((v, i) => v == Math.Round(v) && Math.Abs(v) <= int.MaxValue
            ? (int)v
            : throw new FheNet.Preprocessing.CsvFormatException(_source, _table.Lines[i], _table.LabelColumn, $"'{Labels[i]}' is not an integer"))
            .ToArray();

    /// <summary>Reads a CSV file.</summary>
    /// <param name="path">The file.</param>
    /// <param name="label">The label column's name.</param>
    /// <param name="features">The feature columns' names, in the order wanted; null for every other column.</param>
    /// <exception cref="FheNet.Preprocessing.CsvFormatException">A missing column, a ragged row, an empty cell or a
    /// feature that is not a finite number; the message names the line and the column.</exception>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    public static CsvData Read(string path, string label, IEnumerable<string>? features = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(label);
        return new(CoreCsv.readFile(path, label, Chosen(features)), path);
    }

    /// <summary>Reads CSV text from a reader (see <see cref="Read"/>).</summary>
    /// <param name="reader">The text.</param>
    /// <param name="label">The label column's name.</param>
    /// <param name="features">The feature columns' names; null for every other column.</param>
    /// <param name="source">The name errors give the text.</param>
    public static CsvData Parse(TextReader reader, string label, IEnumerable<string>? features = null, string source = "csv")
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(label);
        return new(CoreCsv.read(source, reader, label, Chosen(features)), source);
    }

    private static FSharpOption<string[]> Chosen(IEnumerable<string>? features) =>
        features is null ? FSharpOption<string[]>.None : FSharpOption<string[]>.Some(features.ToArray());
}
