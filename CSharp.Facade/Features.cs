namespace FheNet.CSharp;

/// <summary>
/// Rows of features, one row per sample. Every method that takes features accepts a <c>float[][]</c>,
/// <c>double[][]</c>, <c>float[,]</c> or <c>double[,]</c> directly through the implicit conversions below; values
/// are used as 32-bit floats.
/// </summary>
/// <example>
/// <code>
/// double[,] x = { { 0.1, 1.2 }, { -0.4, 0.8 } };
/// int[] labels = classifier.Predict(x);
/// </code>
/// </example>
public readonly struct Features
{
    private readonly float[][]? _rows;

    private Features(float[][]? rows) => _rows = rows;

    /// <summary>The number of rows (0 for a null input).</summary>
    public int RowCount => _rows?.Length ?? 0;

    /// <summary>Uses jagged 32-bit rows as they are (not copied).</summary>
    /// <param name="rows">One array per sample, all of the same length.</param>
    public static implicit operator Features(float[][]? rows) => new(rows);

    /// <summary>Converts jagged 64-bit rows to 32-bit floats.</summary>
    /// <param name="rows">One array per sample, all of the same length.</param>
    public static implicit operator Features(double[][]? rows) =>
        new(rows?.Select(row => row is null ? null! : Array.ConvertAll(row, v => (float)v)).ToArray());

    /// <summary>Converts a rectangular 32-bit matrix (samples × features).</summary>
    /// <param name="matrix">One row per sample.</param>
    public static implicit operator Features(float[,]? matrix) => new(matrix is null ? null : RowsOf(matrix, v => v));

    /// <summary>Converts a rectangular 64-bit matrix (samples × features) to 32-bit floats.</summary>
    /// <param name="matrix">One row per sample.</param>
    public static implicit operator Features(double[,]? matrix) =>
        new(matrix is null ? null : RowsOf(matrix, v => (float)v));

    /// <summary>Features of a single sample.</summary>
    /// <param name="row">The sample's feature values.</param>
    public static Features FromRow(ReadOnlySpan<float> row) => new([row.ToArray()]);

    /// <summary>The rows, or ArgumentNullException naming the argument.</summary>
    internal float[][] Rows(string paramName) => _rows ?? throw new ArgumentNullException(paramName);

    private static float[][] RowsOf<T>(T[,] matrix, Func<T, float> convert)
    {
        var rows = new float[matrix.GetLength(0)][];
        for (var i = 0; i < rows.Length; i++)
        {
            rows[i] = new float[matrix.GetLength(1)];
            for (var j = 0; j < rows[i].Length; j++) rows[i][j] = convert(matrix[i, j]);
        }
        return rows;
    }
}
