using Microsoft.ML;
using Microsoft.ML.Data;

namespace FheNet.MLNet;

/// <summary>Reads the feature and label columns of an <see cref="IDataView"/> into arrays.</summary>
public static class DataViewColumns
{
    /// <summary>The rows of a feature column: a known-size vector of <see cref="float"/>, as <c>Concatenate</c>
    /// makes. Use these rows wherever FheNet takes features.</summary>
    /// <param name="data">The data.</param>
    /// <param name="column">The vector column.</param>
    /// <exception cref="ArgumentException">No such column, or not a known-size vector of Single (the message says
    /// how to make one).</exception>
    public static float[][] ReadFeatures(this IDataView data, string column = "Features")
    {
        ArgumentNullException.ThrowIfNull(data);
        FeatureCount(data.Schema, column);
        return data.GetColumn<VBuffer<float>>(column).Select(v => v.DenseValues().ToArray()).ToArray();
    }

    /// <summary>The training rows and the label column of a data view, the label checked by
    /// <paramref name="checkLabel"/> (which throws for a label it cannot read) before the features are read.</summary>
    internal static (float[][] Features, DataViewSchema.Column Label) Training<T>(
        IDataView input, FheNetOptions options, Func<DataViewSchema.Column, T> checkLabel)
    {
        ArgumentNullException.ThrowIfNull(input);
        var label = Find(input.Schema, options.LabelColumnName);
        checkLabel(label);
        return (input.ReadFeatures(options.FeatureColumnName), label);
    }

    /// <summary>The width of a feature column; ArgumentException when it is not a known-size Single vector.</summary>
    internal static int FeatureCount(DataViewSchema schema, string column)
    {
        var type = Find(schema, column).Type;
        if (type is VectorDataViewType { ItemType: NumberDataViewType n, Size: > 0 } v && n.RawType == typeof(float))
            return v.Size;
        throw new ArgumentException(
            $"Column '{column}' is {type}; FheNet reads a known-size vector of Single: make one with " +
            "mlContext.Transforms.Concatenate (and ConvertType for other number types).", nameof(column));
    }

    /// <summary>The column of this name; ArgumentException listing the columns there are.</summary>
    internal static DataViewSchema.Column Find(DataViewSchema schema, string column) =>
        schema.GetColumnOrNull(column) ?? throw new ArgumentException(
            $"The data has no column '{column}'; it has {string.Join(", ", schema.Select(c => c.Name))}.",
            nameof(column));
}
