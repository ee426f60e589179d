using FheNet.Estimators;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using CoreCircuitReport = FheNet.Fhe.CircuitReport;
using CoreEpochReport = FheNet.Nn.EpochReport;
using CoreFheMode = FheNet.Estimators.FheMode;
using CoreLayerBitWidths = FheNet.Integer.LayerBitWidths;
using CoreRounding = FheNet.Fhe.RoundingMethod;

namespace FheNet.CSharp;

/// <summary>
/// A classifier trained with quantization-aware training. It predicts with its integer model, the exact program
/// that runs encrypted after <see cref="NeuralNetEstimator.Compile"/>. Build one with
/// <see cref="NeuralNet.Classifier()"/>.
/// </summary>
/// <typeparam name="TLabel">The label type; labels given to Fit come back from Predict. Labels are stored as JSON
/// by Dump.</typeparam>
public sealed class NeuralNetClassifier<TLabel> : NeuralNetEstimator where TLabel : notnull, IComparable
{
    private FheNet.Estimators.NeuralNetClassifier<TLabel> _core;

    /// <summary>The core estimator, for the deployment wrappers.</summary>
    internal FheNet.Estimators.NeuralNetClassifier<TLabel> Core => _core;

    internal NeuralNetClassifier(NeuralNetOptions options) =>
        _core = new(options.ToCore(FSharpOption<FSharpFunc<CoreEpochReport, Unit>>.None));

    private NeuralNetClassifier(FheNet.Estimators.NeuralNetClassifier<TLabel> core) => _core = core;

    /// <inheritdoc/>
    public override NeuralNetOptions Options => NeuralNetOptions.FromCore(_core.Settings);

    /// <inheritdoc/>
    public override bool IsFitted => _core.IsFitted;

    /// <inheritdoc/>
    public override bool IsCompiled => _core.IsCompiled;

    /// <inheritdoc/>
    public override int FeatureCount => _core.Network.Config.InputDim;

    /// <summary>The sorted class labels seen by Fit.</summary>
    /// <exception cref="NotFittedException">Before Fit.</exception>
    public IReadOnlyList<TLabel> Classes => _core.Classes;

    /// <summary>
    /// Trains a new model on rows of raw features and their labels: the feature scaling of
    /// <see cref="NeuralNetOptions.Scaling"/> is learned here and applied by every prediction. A failed or
    /// cancelled fit leaves the previous model in place; a successful one discards any compiled circuit.
    /// </summary>
    /// <param name="x">Training rows, all of the same width, finite.</param>
    /// <param name="y">One label per row; at least two distinct labels.</param>
    /// <returns>This classifier.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="x"/> or <paramref name="y"/> is null.</exception>
    /// <exception cref="InvalidShapeException">Empty or ragged rows, a label count different from the row count,
    /// or fewer than two classes.</exception>
    /// <exception cref="ParameterOutOfRangeException">A NaN or infinite feature, or explicit class weights that do
    /// not match the classes.</exception>
    public NeuralNetClassifier<TLabel> Fit(Features x, TLabel[] y) => FitWith(x, y, null, CancellationToken.None);

    /// <summary>
    /// <see cref="Fit"/> on the thread pool, reporting every epoch; cancellation takes effect between epochs.
    /// </summary>
    /// <param name="x">Training rows.</param>
    /// <param name="y">One label per row.</param>
    /// <param name="progress">Receives a report after every epoch (loss, validation metric, elapsed time, ETA).</param>
    /// <param name="cancellationToken">Stops training after the current epoch; the previous model is kept.</param>
    /// <returns>This classifier.</returns>
    /// <exception cref="OperationCanceledException">Training was cancelled.</exception>
    public Task<NeuralNetClassifier<TLabel>> FitAsync(
        Features x, TLabel[] y, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default) =>
        Task.Run(() => FitWith(x, y, progress, cancellationToken), cancellationToken);

    /// <summary>Predicted labels: the class of the largest output.</summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="mode">The integer model in the clear (default), its FHE simulation, or encrypted execution.</param>
    /// <exception cref="ArgumentNullException"><paramref name="x"/> is null.</exception>
    /// <exception cref="NotFittedException">Before Fit.</exception>
    /// <exception cref="FheNotAvailableException">Simulate or Execute before Compile.</exception>
    /// <exception cref="InvalidShapeException">Empty rows, or rows of another width than the fitted one.</exception>
    /// <exception cref="ParameterOutOfRangeException">A NaN or infinite feature.</exception>
    public TLabel[] Predict(Features x, FheMode mode = FheMode.Disable) =>
        _core.Predict(x.Rows(nameof(x)), FSharpOption<CoreFheMode>.Some(mode.ToCore()));

    /// <summary>Class probabilities, one row per sample, columns in the order of <see cref="Classes"/>; rows sum to 1.</summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="mode">Where the network runs.</param>
    /// <exception cref="NotFittedException">Before Fit.</exception>
    /// <exception cref="FheNotAvailableException">Simulate or Execute before Compile.</exception>
    /// <exception cref="InvalidShapeException">Empty rows, or rows of another width than the fitted one.</exception>
    public double[][] PredictProba(Features x, FheMode mode = FheMode.Disable) =>
        _core.PredictProba(x.Rows(nameof(x)), FSharpOption<CoreFheMode>.Some(mode.ToCore()));

    /// <summary>
    /// <see cref="Predict"/> on the thread pool. Encrypted rows run one by one with a report after each (keys are
    /// generated first if needed) and cancellation between rows; clear and simulated rows run as one batch.
    /// </summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="mode">Where the network runs.</param>
    /// <param name="progress">Receives rows done and seconds per sample.</param>
    /// <param name="cancellationToken">Stops before the next row.</param>
    /// <exception cref="OperationCanceledException">Prediction was cancelled.</exception>
    public Task<TLabel[]> PredictAsync(
        Features x, FheMode mode = FheMode.Disable, IProgress<InferenceProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var rows = x.Rows(nameof(x));
        return Task.Run(
            () => PredictRows(
                rows, mode, (r, m) => _core.Predict(r, FSharpOption<CoreFheMode>.Some(m)), progress, cancellationToken),
            cancellationToken);
    }

    /// <summary><see cref="PredictProba"/> on the thread pool, as <see cref="PredictAsync"/>.</summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="mode">Where the network runs.</param>
    /// <param name="progress">Receives rows done and seconds per sample.</param>
    /// <param name="cancellationToken">Stops before the next row.</param>
    /// <exception cref="OperationCanceledException">Prediction was cancelled.</exception>
    public Task<double[][]> PredictProbaAsync(
        Features x, FheMode mode = FheMode.Disable, IProgress<InferenceProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var rows = x.Rows(nameof(x));
        return Task.Run(
            () => PredictRows(
                rows, mode, (r, m) => _core.PredictProba(r, FSharpOption<CoreFheMode>.Some(m)), progress,
                cancellationToken),
            cancellationToken);
    }

    /// <summary>Accuracy of the integer model on (x, y).</summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="y">Their true labels.</param>
    /// <exception cref="NotFittedException">Before Fit.</exception>
    /// <exception cref="InvalidShapeException">Wrong widths, or a label count different from the row count.</exception>
    public double Score(Features x, TLabel[] y)
    {
        ArgumentNullException.ThrowIfNull(y);
        return _core.Score(x.Rows(nameof(x)), y);
    }

    /// <summary>
    /// Fits this quantized model and its float twin (same settings and scaling, no quantization or pruning) on the
    /// same rows, to measure what quantization costs.
    /// </summary>
    /// <param name="x">Training rows.</param>
    /// <param name="y">One label per row.</param>
    /// <returns>This classifier, and the float twin (which predicts only with <see cref="FheMode.Disable"/>).</returns>
    /// <exception cref="InvalidShapeException">As <see cref="Fit"/>.</exception>
    public (NeuralNetClassifier<TLabel> Quantized, NeuralNetClassifier<TLabel> Float) FitBenchmark(Features x, TLabel[] y)
    {
        var rows = x.Rows(nameof(x));
        ArgumentNullException.ThrowIfNull(y);
        var fresh = new FheNet.Estimators.NeuralNetClassifier<TLabel>(_core.Settings);
        var (quantized, twin) = fresh.FitBenchmark(rows, y);
        _core = quantized;
        return (this, new NeuralNetClassifier<TLabel>(twin));
    }

    /// <summary>
    /// A new classifier with <paramref name="fraction"/> of every hidden layer's neurons removed (smallest L2 norm
    /// of incoming weights first), fine-tuned on (x, y) for <see cref="NeuralNetOptions.Epochs"/> epochs with this
    /// model's feature scaling. This classifier is unchanged.
    /// </summary>
    /// <param name="x">Rows to fine-tune on (raw features).</param>
    /// <param name="y">Their labels.</param>
    /// <param name="fraction">The fraction of hidden neurons to remove, in [0, 1).</param>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    /// <exception cref="ParameterOutOfRangeException"><paramref name="fraction"/> outside [0, 1).</exception>
    public NeuralNetClassifier<TLabel> Prune(Features x, TLabel[] y, double fraction)
    {
        var rows = x.Rows(nameof(x));
        ArgumentNullException.ThrowIfNull(y);
        return new(_core.Prune(rows, y, fraction));
    }

    /// <summary>A classifier restored from <see cref="NeuralNetEstimator.Dump"/>'s JSON.</summary>
    /// <param name="json">The dumped model.</param>
    /// <exception cref="InvalidShapeException">Not a dumped classifier, or labels that do not read as TLabel.</exception>
    /// <exception cref="ParameterOutOfRangeException">A format version this library does not read.</exception>
    public static NeuralNetClassifier<TLabel> Load(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        return new(FheNet.Estimators.NeuralNetClassifier<TLabel>.Load(json));
    }

    /// <summary>A classifier restored from a file written by <see cref="NeuralNetEstimator.Save"/>.</summary>
    /// <param name="path">The file.</param>
    /// <exception cref="InvalidShapeException">Not a dumped classifier.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static NeuralNetClassifier<TLabel> LoadFile(string path) => Load(File.ReadAllText(path));

    private NeuralNetClassifier<TLabel> FitWith(
        Features x, TLabel[] y, IProgress<TrainingProgress>? progress, CancellationToken cancellationToken)
    {
        var rows = x.Rows(nameof(x));
        ArgumentNullException.ThrowIfNull(y);
        var options = Options;
        var fresh = new FheNet.Estimators.NeuralNetClassifier<TLabel>(
            options.ToCore(EpochHook(options.Epochs, progress, cancellationToken)));
        fresh.Fit(rows, y);
        _core = fresh;
        return this;
    }

    private protected override FSharpList<CoreEpochReport> HistoryCore => _core.History;

    private protected override FSharpOption<FheNet.Nn.QuantizationCheck>? QuantizationCheckCore => _core.QuantizationCheck;

    private protected override FheCircuitReport CompileThenReport(
        float[][] x, FSharpOption<double> pError, FSharpOption<double> globalPError,
        FSharpOption<int> roundingThresholdBits, FSharpOption<CoreRounding> rounding, FSharpOption<double> rangeMargin)
    {
        _core.Compile(x, pError, globalPError, roundingThresholdBits, rounding, rangeMargin);
        return FheCircuitReport.FromCore(_core.CircuitReport());
    }

    private protected override CoreCircuitReport ReportCore() => _core.CircuitReport();

    private protected override void LoadCompiledCore(string directory) => _core.LoadCompiled(directory);

    private protected override void KeygenCore(bool force) => _core.Keygen(FSharpOption<bool>.Some(force));

    private protected override FSharpList<CoreLayerBitWidths> BitWidthsCore(float[][] x) => _core.BitWidths(x);

    private protected override string DumpCore() => _core.Dump();
}
