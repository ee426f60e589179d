using System.Globalization;
using System.Text.Json;
using FheNet.CSharp;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace FheNet.MLNet;

/// <summary>
/// An ML.NET estimator that trains an FheNet classifier (quantization-aware training of a small MLP) from an
/// <see cref="IDataView"/>: a vector feature column and a label column. Its transformer writes the predicted label
/// (of the label column's type) and the class probabilities, in the clear, simulated or encrypted.
/// </summary>
/// <example>
/// <code>
/// var pipeline = mlContext.Transforms.Concatenate("Features", "SepalLength", "SepalWidth", "PetalLength", "PetalWidth")
///     .Append(mlContext.Transforms.Conversion.MapValueToKey("Label", "Species"))
///     .Append(mlContext.MulticlassClassification.Trainers.FheNet());
/// var model = pipeline.Fit(train);
/// var scored = model.Transform(test);
/// </code>
/// </example>
public sealed class FheNetClassificationEstimator : IEstimator<FheNetClassificationTransformer>
{
    private readonly FheNetOptions _options;

    /// <summary>An estimator with the given settings.</summary>
    /// <param name="options">Columns, network settings and mode; null for the defaults.</param>
    public FheNetClassificationEstimator(FheNetOptions? options = null) => _options = options ?? new FheNetOptions();

    /// <summary>Trains the classifier on every row of <paramref name="input"/>.</summary>
    /// <param name="input">Rows with the feature and label columns.</param>
    /// <exception cref="ArgumentException">A missing column, a feature column that is not a known-size Single
    /// vector, or a label column of an unsupported type.</exception>
    public FheNetClassificationTransformer Fit(IDataView input)
    {
        var (features, label) = DataViewColumns.Training(input, _options, LabelKind.Of);
        return LabelKind.Of(label) switch
        {
            LabelKind.Key => Train(features, input.GetColumn<uint>(label).ToArray(), label),
            LabelKind.Text => Train(features, input.GetColumn<ReadOnlyMemory<char>>(label).Select(v => v.ToString()).ToArray(), label),
            LabelKind.Single => Train(features, input.GetColumn<float>(label).ToArray(), label),
            LabelKind.Double => Train(features, input.GetColumn<double>(label).ToArray(), label),
            LabelKind.Int32 => Train(features, input.GetColumn<int>(label).ToArray(), label),
            LabelKind.Boolean => Train(features, input.GetColumn<bool>(label).ToArray(), label),
            _ => throw new InvalidOperationException("unreachable: LabelKind.Of names every kind"),
        };
    }

    /// <summary>The columns the fitted transformer will add to rows of this schema.</summary>
    /// <param name="inputSchema">The schema of the data to transform.</param>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var label = Mappings.Find(inputSchema, _options.LabelColumnName);
        // Only the kinds of the columns matter here: the key count and the number of classes are known after Fit.
        DataViewType labelType = label.IsKey ? new KeyDataViewType(typeof(uint), 2) : label.ItemType;
        return labelType.RawType switch
        {
            var t when t == typeof(uint) => Shape<uint>(inputSchema, labelType),
            var t when t == typeof(ReadOnlyMemory<char>) => Shape<string>(inputSchema, labelType),
            var t when t == typeof(float) => Shape<float>(inputSchema, labelType),
            var t when t == typeof(double) => Shape<double>(inputSchema, labelType),
            var t when t == typeof(int) => Shape<int>(inputSchema, labelType),
            var t when t == typeof(bool) => Shape<bool>(inputSchema, labelType),
            _ => throw new ArgumentException(
                $"Label column '{label.Name}' holds {labelType}; FheNet reads keys (MapValueToKey), text, Single, " +
                "Double, Int32 or Boolean labels.", nameof(inputSchema)),
        };
    }

    private SchemaShape Shape<TLabel>(SchemaShape inputSchema, DataViewType labelType) =>
        Mappings.OutputShape<ClassifierRow<TLabel>>(inputSchema, _options, output =>
        {
            var predicted = output[nameof(ClassifierRow<TLabel>.PredictedLabel)];
            predicted.ColumnName = _options.PredictedLabelColumnName;
            predicted.ColumnType = labelType;
            var score = output[nameof(ClassifierRow<TLabel>.Score)];
            score.ColumnName = _options.ScoreColumnName;
            score.ColumnType = new VectorDataViewType(NumberDataViewType.Single, 2);
        });

    private FheNetClassificationTransformer Train<TLabel>(float[][] features, TLabel[] labels, DataViewSchema.Column label)
        where TLabel : notnull, IComparable
    {
        if (label.Type is KeyDataViewType)
        {
            var missing = Array.IndexOf(labels, default(TLabel)!);
            if (missing >= 0)
                throw new ArgumentException(
                    $"Column '{label.Name}' has a missing key in row {missing}; drop unlabelled rows first.", nameof(label));
        }
        var model = NeuralNet.Classifier(_options.Network).Build<TLabel>().Fit(features, labels);
        if (_options.Mode != FheMode.Disable)
            model.Compile(features);
        return new FheNetClassificationTransformer(
            new ClassifierMapping<TLabel>(model, _options, LabelKind.Of(label), label.Type, KeyNames.Of(label)));
    }
}

/// <summary>
/// A fitted FheNet classifier as an ML.NET transformer: adds the predicted label and the class probabilities.
/// Save it with <see cref="Save"/> (the model, its settings and, when compiled, its FHE artifacts) and restore it
/// with <see cref="Load"/>; ML.NET's own model files cannot hold transformers of other libraries.
/// </summary>
public sealed class FheNetClassificationTransformer : ITransformer
{
    private readonly IClassifierMapping _mapping;

    internal FheNetClassificationTransformer(IClassifierMapping mapping) => _mapping = mapping;

    /// <summary>The fitted classifier (its labels are the label column's values).</summary>
    public NeuralNetEstimator Model => _mapping.Model;

    /// <summary>Where the transformer predicts.</summary>
    public FheMode Mode => _mapping.Options.Mode;

    /// <summary>The same model predicting in another mode (the model is compiled on <paramref name="calibration"/>
    /// if it is not yet and the mode needs it).</summary>
    /// <param name="mode">Disable, Simulate or Execute.</param>
    /// <param name="calibration">Rows to compile on (e.g. the training data), read from the feature column.</param>
    public FheNetClassificationTransformer WithMode(FheMode mode, IDataView? calibration = null) =>
        new(_mapping.WithMode(mode, calibration));

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => _mapping.Inner.GetOutputSchema(inputSchema);

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => _mapping.Inner.GetRowToRowMapper(inputSchema);

    /// <summary>Adds the predicted label and score columns to every row (lazily, as ML.NET reads them).</summary>
    /// <param name="input">Rows with the feature column.</param>
    public IDataView Transform(IDataView input) => _mapping.Inner.Transform(input);

    /// <summary>Writes the model, the column settings and, when compiled, the FHE artifacts into a directory.</summary>
    /// <param name="directory">Created if needed.</param>
    public void Save(string directory) => _mapping.Save(directory);

    /// <summary>A transformer saved by <see cref="Save"/>.</summary>
    /// <param name="directory">The directory <see cref="Save"/> wrote.</param>
    /// <exception cref="FileNotFoundException">No saved transformer there.</exception>
    public static FheNetClassificationTransformer Load(string directory)
    {
        var saved = SavedTransformer.Read(directory, "classifier");
        return saved.LabelKind switch
        {
            LabelKind.Key => Restore<uint>(saved, directory),
            LabelKind.Text => Restore<string>(saved, directory),
            LabelKind.Single => Restore<float>(saved, directory),
            LabelKind.Double => Restore<double>(saved, directory),
            LabelKind.Int32 => Restore<int>(saved, directory),
            LabelKind.Boolean => Restore<bool>(saved, directory),
            var other => throw new InvalidDataException($"{directory}: unknown label kind {other}."),
        };
    }

    private static FheNetClassificationTransformer Restore<TLabel>(SavedTransformer saved, string directory)
        where TLabel : notnull, IComparable
    {
        var model = NeuralNetClassifier<TLabel>.Load(saved.ModelJson);
        if (saved.Compiled) model.LoadCompiled(directory);
        return new(new ClassifierMapping<TLabel>(
            model, saved.Options with { Network = model.Options }, saved.LabelKind,
            LabelKind.TypeOf(saved.LabelKind, saved.KeyCount), saved.KeyNames));
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => throw new NotSupportedException(
        "ML.NET model files hold only ML.NET's own transformers: save this one with FheNetClassificationTransformer.Save(directory).");
}

/// <summary>The label column types a classifier reads, and the types its predicted label has.</summary>
internal static class LabelKind
{
    internal const string Key = "key", Text = "text", Single = "single", Double = "double", Int32 = "int32", Boolean = "boolean";

    internal static string Of(DataViewSchema.Column label) => label.Type switch
    {
        KeyDataViewType { RawType: var t } when t == typeof(uint) => Key,
        TextDataViewType => Text,
        NumberDataViewType n when n.RawType == typeof(float) => Single,
        NumberDataViewType n when n.RawType == typeof(double) => Double,
        NumberDataViewType n when n.RawType == typeof(int) => Int32,
        BooleanDataViewType => Boolean,
        var other => throw new ArgumentException(
            $"Label column '{label.Name}' is {other}; FheNet reads keys (MapValueToKey), text, Single, Double, Int32 " +
            "or Boolean labels.", nameof(label)),
    };

    internal static DataViewType TypeOf(string kind, ulong keyCount) => kind switch
    {
        Key => new KeyDataViewType(typeof(uint), keyCount),
        Text => TextDataViewType.Instance,
        Single => NumberDataViewType.Single,
        Double => NumberDataViewType.Double,
        Int32 => NumberDataViewType.Int32,
        Boolean => BooleanDataViewType.Instance,
        _ => throw new ArgumentException($"unknown label kind {kind}", nameof(kind)),
    };
}

/// <summary>What a classifier transformer does, whatever its label type.</summary>
internal interface IClassifierMapping
{
    NeuralNetEstimator Model { get; }
    FheNetOptions Options { get; }
    ITransformer Inner { get; }
    IClassifierMapping WithMode(FheMode mode, IDataView? calibration);
    void Save(string directory);
}

/// <summary>The row input of the mapping: the feature vector.</summary>
internal sealed class FeatureRow
{
    public float[] Features = [];
}

/// <summary>The row output of a classifier mapping.</summary>
internal sealed class ClassifierRow<TLabel>
{
    public TLabel PredictedLabel = default!;
    public float[] Score = [];
}

internal sealed class ClassifierMapping<TLabel> : IClassifierMapping where TLabel : notnull, IComparable
{
    private readonly NeuralNetClassifier<TLabel> _model;
    private readonly string _labelKind;
    private readonly DataViewType _labelType;
    private readonly KeyNames? _keyNames;
    // The estimators are not thread-safe and ML.NET may read rows from several cursors at once.
    private readonly object _gate = new();
    // ML.NET reads a key column as its raw value (1-based, 0 missing) but writes a key from a row object's 0-based
    // index: a predicted key goes out one lower than the key it was trained on.
    private readonly Func<TLabel, TLabel> _written;

    internal ClassifierMapping(
        NeuralNetClassifier<TLabel> model, FheNetOptions options, string labelKind, DataViewType labelType,
        KeyNames? keyNames)
    {
        _model = model;
        Options = options;
        _labelKind = labelKind;
        _labelType = labelType;
        _keyNames = keyNames;
        _written = labelKind == LabelKind.Key ? key => (TLabel)(object)((uint)(object)key - 1) : label => label;
        if (options.Mode == FheMode.Execute) model.Keygen();
        Inner = Mappings.Build<ClassifierRow<TLabel>>(
            options, model.FeatureCount, Map, output =>
            {
                var predicted = output[nameof(ClassifierRow<TLabel>.PredictedLabel)];
                predicted.ColumnName = options.PredictedLabelColumnName;
                predicted.ColumnType = labelType;
                keyNames?.Annotate(predicted);
                var score = output[nameof(ClassifierRow<TLabel>.Score)];
                score.ColumnName = options.ScoreColumnName;
                score.ColumnType = new VectorDataViewType(NumberDataViewType.Single, model.Classes.Count);
            });
    }

    public NeuralNetEstimator Model => _model;
    public FheNetOptions Options { get; }
    public ITransformer Inner { get; }

    private void Map(FeatureRow row, ClassifierRow<TLabel> output)
    {
        double[] probabilities;
        lock (_gate) probabilities = _model.PredictProba(new[] { row.Features }, Options.Mode)[0];
        output.Score = Array.ConvertAll(probabilities, p => (float)p);
        output.PredictedLabel = _written(_model.Classes[Array.IndexOf(probabilities, probabilities.Max())]);
    }

    public IClassifierMapping WithMode(FheMode mode, IDataView? calibration)
    {
        Mappings.CompileFor(_model, mode, calibration, Options.FeatureColumnName);
        return new ClassifierMapping<TLabel>(_model, Options with { Mode = mode }, _labelKind, _labelType, _keyNames);
    }

    public void Save(string directory)
    {
        var keyCount = _labelType is KeyDataViewType k ? k.Count : 0;
        SavedTransformer.Write(
            directory, "classifier", _model, Options, _labelKind, keyCount, _keyNames, d => FheModelDev.Save(_model, d));
    }
}

/// <summary>Builds the row mapping that a transformer runs, and compiles models for the modes that need it.</summary>
internal static class Mappings
{
    /// <summary>The annotation kind of a key column's values (ML.NET's AnnotationUtils.Kinds.KeyValues).</summary>
    internal const string KeyValues = "KeyValues";

    internal static SchemaShape.Column Find(SchemaShape schema, string name) =>
        schema.Where(c => c.Name == name).Cast<SchemaShape.Column?>().FirstOrDefault()
        ?? throw new ArgumentException(
            $"The data has no column '{name}'; it has {string.Join(", ", schema.Select(c => c.Name))}.", nameof(schema));

    /// <summary>The schema shape a mapping with this output makes of an input shape.</summary>
    internal static SchemaShape OutputShape<TOut>(
        SchemaShape inputSchema, FheNetOptions options, Action<SchemaDefinition> shapeOutput) where TOut : class, new()
    {
        Find(inputSchema, options.FeatureColumnName);
        var (input, output) = Definitions<TOut>(options, 1, shapeOutput);
        return new MLContext().Transforms.CustomMapping<FeatureRow, TOut>((_, _) => { }, null, input, output)
            .GetOutputSchema(inputSchema);
    }

    private static (SchemaDefinition Input, SchemaDefinition Output) Definitions<TOut>(
        FheNetOptions options, int features, Action<SchemaDefinition> shapeOutput)
    {
        var input = SchemaDefinition.Create(typeof(FeatureRow));
        input[nameof(FeatureRow.Features)].ColumnName = options.FeatureColumnName;
        input[options.FeatureColumnName].ColumnType = new VectorDataViewType(NumberDataViewType.Single, features);
        var output = SchemaDefinition.Create(typeof(TOut));
        shapeOutput(output);
        return (input, output);
    }

    internal static ITransformer Build<TOut>(
        FheNetOptions options, int features, Action<FeatureRow, TOut> map, Action<SchemaDefinition> shapeOutput)
        where TOut : class, new()
    {
        var context = new MLContext();
        var (input, output) = Definitions<TOut>(options, features, shapeOutput);
        var empty = context.Data.LoadFromEnumerable(Array.Empty<FeatureRow>(), input);
        return context.Transforms.CustomMapping(map, contractName: null, input, output).Fit(empty);
    }

    internal static void CompileFor(NeuralNetEstimator model, FheMode mode, IDataView? calibration, string featureColumn)
    {
        if (mode == FheMode.Disable || model.IsCompiled) return;
        if (calibration is null)
            throw new FheNotAvailableException(mode.ToString());
        model.Compile(calibration.ReadFeatures(featureColumn));
    }
}

/// <summary>The files of a saved transformer: its settings, the dumped model, and the FHE artifacts if compiled.</summary>
internal sealed record SavedTransformer(
    string Kind, FheNetOptions Options, string LabelKind, ulong KeyCount, KeyNames? KeyNames, bool Compiled, string ModelJson)
{
    private const string SettingsFile = "fhenet-mlnet.json", ModelFile = "model.json";

    private sealed record Settings(
        string Kind, string FeatureColumnName, string LabelColumnName, string PredictedLabelColumnName,
        string ScoreColumnName, FheMode Mode, string LabelKind, ulong KeyCount, KeyNames? KeyNames, bool Compiled);

    /// <summary>Writes the files; <paramref name="saveArtifacts"/> writes the FHE artifacts of a compiled model.</summary>
    internal static void Write(
        string directory, string kind, NeuralNetEstimator model, FheNetOptions options, string labelKind, ulong keyCount,
        KeyNames? keyNames, Action<string> saveArtifacts)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        var compiled = model.IsCompiled;
        if (compiled) saveArtifacts(directory);
        File.WriteAllText(Path.Combine(directory, ModelFile), model.Dump());
        var settings = new Settings(
            kind, options.FeatureColumnName, options.LabelColumnName, options.PredictedLabelColumnName,
            options.ScoreColumnName, options.Mode, labelKind, keyCount, keyNames, compiled);
        File.WriteAllText(Path.Combine(directory, SettingsFile), JsonSerializer.Serialize(settings));
    }

    internal static SavedTransformer Read(string directory, string kind)
    {
        ArgumentNullException.ThrowIfNull(directory);
        var path = Path.Combine(directory, SettingsFile);
        if (!File.Exists(path))
            throw new FileNotFoundException($"No saved FheNet transformer in {directory}: save one with Save(directory).", path);
        var s = JsonSerializer.Deserialize<Settings>(File.ReadAllText(path))
            ?? throw new InvalidDataException($"{path} is empty.");
        if (s.Kind != kind)
            throw new InvalidDataException($"{directory} holds a {s.Kind} transformer, not a {kind}.");
        var options = new FheNetOptions
        {
            Network = NeuralNetOptions.Defaults,
            FeatureColumnName = s.FeatureColumnName, LabelColumnName = s.LabelColumnName,
            PredictedLabelColumnName = s.PredictedLabelColumnName, ScoreColumnName = s.ScoreColumnName, Mode = s.Mode,
        };
        return new(kind, options, s.LabelKind, s.KeyCount, s.KeyNames, s.Compiled,
            File.ReadAllText(Path.Combine(directory, ModelFile)));
    }
}

/// <summary>
/// The values behind a key label column (ML.NET's KeyValues annotation, of text or numbers), carried to the predicted
/// label so that MapKeyToValue maps predictions back, and saved as invariant text.
/// </summary>
internal sealed record KeyNames(string ItemKind, string[] Values)
{
    internal static KeyNames? Of(DataViewSchema.Column label)
    {
        if (label.Annotations.Schema.GetColumnOrNull(Mappings.KeyValues) is not { Type: VectorDataViewType { ItemType: var item } })
            return null;
        return item switch
        {
            TextDataViewType => new(LabelKind.Text, Read<ReadOnlyMemory<char>>(label).Select(v => v.ToString()).ToArray()),
            NumberDataViewType n when n.RawType == typeof(float) =>
                new(LabelKind.Single, Read<float>(label).Select(v => v.ToString("R", CultureInfo.InvariantCulture)).ToArray()),
            NumberDataViewType n when n.RawType == typeof(double) =>
                new(LabelKind.Double, Read<double>(label).Select(v => v.ToString("R", CultureInfo.InvariantCulture)).ToArray()),
            _ => null,
        };
    }

    internal void Annotate(SchemaDefinition.Column column)
    {
        switch (ItemKind)
        {
            case LabelKind.Text:
                Add(column, Values.Select(v => v.AsMemory()).ToArray(), TextDataViewType.Instance);
                break;
            case LabelKind.Single:
                Add(column, Values.Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray(), NumberDataViewType.Single);
                break;
            case LabelKind.Double:
                Add(column, Values.Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray(), NumberDataViewType.Double);
                break;
        }
    }

    private static T[] Read<T>(DataViewSchema.Column label)
    {
        VBuffer<T> values = default;
        label.Annotations.GetValue(Mappings.KeyValues, ref values);
        return values.DenseValues().ToArray();
    }

    private void Add<T>(SchemaDefinition.Column column, T[] values, PrimitiveDataViewType item) =>
        column.AddAnnotation(Mappings.KeyValues, new VBuffer<T>(values.Length, values), new VectorDataViewType(item, values.Length));
}
