using FheNet.CSharp;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace FheNet.MLNet;

/// <summary>
/// An ML.NET estimator that trains an FheNet regressor from an <see cref="IDataView"/>: a vector feature column and
/// a Single label column. Its transformer writes the predicted value to the score column, in the clear, simulated
/// or encrypted.
/// </summary>
public sealed class FheNetRegressionEstimator : IEstimator<FheNetRegressionTransformer>
{
    private readonly FheNetOptions _options;

    /// <summary>An estimator with the given settings.</summary>
    /// <param name="options">Columns, network settings and mode; null for the defaults.</param>
    public FheNetRegressionEstimator(FheNetOptions? options = null) => _options = options ?? new FheNetOptions();

    /// <summary>Trains the regressor on every row of <paramref name="input"/>.</summary>
    /// <param name="input">Rows with the feature and label columns.</param>
    /// <exception cref="ArgumentException">A missing column, a feature column that is not a known-size Single
    /// vector, or a label column that is not Single.</exception>
    public FheNetRegressionTransformer Fit(IDataView input)
    {
        var (features, label) = DataViewColumns.Training(input, _options, label =>
            label.Type == NumberDataViewType.Single
                ? label.Type
                : throw new ArgumentException(
                    $"Label column '{label.Name}' is {label.Type}; a regressor reads Single targets (use ConvertType).",
                    nameof(input)));
        var targets = input.GetColumn<float>(label).Select(v => (double)v).ToArray();
        var model = NeuralNet.Regressor(_options.Network).Build().Fit(features, targets);
        if (_options.Mode != FheMode.Disable)
            model.Compile(features);
        return new FheNetRegressionTransformer(model, _options);
    }

    /// <summary>The columns the fitted transformer will add to rows of this schema.</summary>
    /// <param name="inputSchema">The schema of the data to transform.</param>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema) =>
        Mappings.OutputShape<RegressorRow>(
            inputSchema, _options, output => output[nameof(RegressorRow.Score)].ColumnName = _options.ScoreColumnName);
}

/// <summary>The row output of a regressor mapping.</summary>
internal sealed class RegressorRow
{
    public float Score;
}

/// <summary>
/// A fitted FheNet regressor as an ML.NET transformer: adds the predicted value. Save it with <see cref="Save"/> and
/// restore it with <see cref="Load"/>; ML.NET's own model files cannot hold transformers of other libraries.
/// </summary>
public sealed class FheNetRegressionTransformer : ITransformer
{
    private readonly NeuralNetRegressor _model;
    private readonly FheNetOptions _options;
    private readonly ITransformer _inner;
    private readonly object _gate = new();

    internal FheNetRegressionTransformer(NeuralNetRegressor model, FheNetOptions options)
    {
        _model = model;
        _options = options;
        if (options.Mode == FheMode.Execute) model.Keygen();
        _inner = Mappings.Build<RegressorRow>(
            options, model.FeatureCount, Map,
            output => output[nameof(RegressorRow.Score)].ColumnName = options.ScoreColumnName);
    }

    /// <summary>The fitted regressor.</summary>
    public NeuralNetRegressor Model => _model;

    /// <summary>Where the transformer predicts.</summary>
    public FheMode Mode => _options.Mode;

    /// <summary>The same model predicting in another mode (compiled on <paramref name="calibration"/> if needed).</summary>
    /// <param name="mode">Disable, Simulate or Execute.</param>
    /// <param name="calibration">Rows to compile on, read from the feature column.</param>
    public FheNetRegressionTransformer WithMode(FheMode mode, IDataView? calibration = null)
    {
        Mappings.CompileFor(_model, mode, calibration, _options.FeatureColumnName);
        return new(_model, _options with { Mode = mode });
    }

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => _inner.GetOutputSchema(inputSchema);

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => _inner.GetRowToRowMapper(inputSchema);

    /// <summary>Adds the score column to every row (lazily, as ML.NET reads them).</summary>
    /// <param name="input">Rows with the feature column.</param>
    public IDataView Transform(IDataView input) => _inner.Transform(input);

    /// <summary>Writes the model, the column settings and, when compiled, the FHE artifacts into a directory.</summary>
    /// <param name="directory">Created if needed.</param>
    public void Save(string directory) =>
        SavedTransformer.Write(directory, "regressor", _model, _options, "", 0, null, d => FheModelDev.Save(_model, d));

    /// <summary>A transformer saved by <see cref="Save"/>.</summary>
    /// <param name="directory">The directory <see cref="Save"/> wrote.</param>
    /// <exception cref="FileNotFoundException">No saved transformer there.</exception>
    public static FheNetRegressionTransformer Load(string directory)
    {
        var saved = SavedTransformer.Read(directory, "regressor");
        var model = NeuralNetRegressor.Load(saved.ModelJson);
        if (saved.Compiled) model.LoadCompiled(directory);
        return new(model, saved.Options with { Network = model.Options });
    }

    private void Map(FeatureRow row, RegressorRow output)
    {
        lock (_gate) output.Score = (float)_model.Predict(new[] { row.Features }, _options.Mode)[0];
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => throw new NotSupportedException(
        "ML.NET model files hold only ML.NET's own transformers: save this one with FheNetRegressionTransformer.Save(directory).");
}

/// <summary>The FheNet trainers in ML.NET's catalogs.</summary>
public static class FheNetCatalog
{
    /// <summary>An FheNet classifier: quantization-aware training of a small MLP that can predict encrypted.</summary>
    /// <param name="trainers">The catalog.</param>
    /// <param name="options">Columns, network settings and mode; null for the defaults.</param>
    public static FheNetClassificationEstimator FheNet(
        this MulticlassClassificationCatalog.MulticlassClassificationTrainers trainers, FheNetOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(trainers);
        return new(options);
    }

    /// <summary>An FheNet regressor: quantization-aware training of a small MLP that can predict encrypted.</summary>
    /// <param name="trainers">The catalog.</param>
    /// <param name="options">Columns, network settings and mode; null for the defaults.</param>
    public static FheNetRegressionEstimator FheNet(
        this RegressionCatalog.RegressionTrainers trainers, FheNetOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(trainers);
        return new(options);
    }
}
