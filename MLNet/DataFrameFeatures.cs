using Microsoft.Data.Analysis;

namespace FheNet.MLNet;

/// <summary>Reads feature and label columns of a <see cref="DataFrame"/> into the arrays FheNet takes.</summary>
public static class DataFrameFeatures
{
    /// <summary>The rows of the named numeric columns (every numeric column but none when null), as float32.</summary>
    /// <param name="frame">The data frame.</param>
    /// <param name="columns">The feature columns by name, in the order wanted; null for every numeric column.</param>
    /// <exception cref="ArgumentException">An unknown or non-numeric column, or a missing (null) value; the
    /// message names the column and the row.</exception>
    public static float[][] ReadFeatures(this DataFrame frame, params string[]? columns)
    {
        ArgumentNullException.ThrowIfNull(frame);
        var chosen = columns is { Length: > 0 }
            ? columns.Select(name => Column(frame, name)).ToArray()
            : frame.Columns.Where(IsNumeric).ToArray();
        if (chosen.Length == 0)
            throw new ArgumentException("The data frame has no numeric column to read as features.", nameof(columns));
        foreach (var column in chosen.Where(c => !IsNumeric(c)))
            throw new ArgumentException(
                $"Column '{column.Name}' holds {column.DataType.Name}, not numbers; pick numeric feature columns.",
                nameof(columns));
        var rows = new float[frame.Rows.Count][];
        for (var i = 0; i < rows.Length; i++)
        {
            rows[i] = new float[chosen.Length];
            for (var j = 0; j < chosen.Length; j++)
                rows[i][j] = chosen[j][i] is { } value
                    ? Convert.ToSingle(value, System.Globalization.CultureInfo.InvariantCulture)
                    : throw new ArgumentException(
                        $"Column '{chosen[j].Name}' has no value in row {i}; fill or drop missing values first.",
                        nameof(frame));
        }
        return rows;
    }

    /// <summary>The values of a label column, converted to <typeparamref name="TLabel"/> (string labels from any
    /// column; numbers from numeric columns).</summary>
    /// <param name="frame">The data frame.</param>
    /// <param name="column">The label column's name.</param>
    /// <exception cref="ArgumentException">An unknown column, a missing value or a value that does not convert; the
    /// message names the row.</exception>
    public static TLabel[] ReadLabels<TLabel>(this DataFrame frame, string column)
    {
        ArgumentNullException.ThrowIfNull(frame);
        var labels = Column(frame, column);
        var values = new TLabel[frame.Rows.Count];
        for (var i = 0; i < values.Length; i++)
        {
            var value = labels[i] ?? throw new ArgumentException(
                $"Column '{column}' has no value in row {i}; drop unlabelled rows first.", nameof(column));
            try
            {
                values[i] = (TLabel)Convert.ChangeType(value, typeof(TLabel), System.Globalization.CultureInfo.InvariantCulture);
            }
            catch (Exception e) when (e is InvalidCastException or FormatException or OverflowException)
            {
                throw new ArgumentException(
                    $"Column '{column}', row {i}: '{value}' is not a {typeof(TLabel).Name}.", nameof(column), e);
            }
        }
        return values;
    }

    private static DataFrameColumn Column(DataFrame frame, string name) =>
        frame.Columns.IndexOf(name) is var index and >= 0
            ? frame.Columns[index]
            : throw new ArgumentException(
                $"The data frame has no column '{name}'; it has {string.Join(", ", frame.Columns.Select(c => c.Name))}.",
                nameof(name));

    private static bool IsNumeric(DataFrameColumn column) =>
        Type.GetTypeCode(column.DataType) is >= TypeCode.SByte and <= TypeCode.Decimal;
}
