using FheNet.Estimators;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using CoreCircuitReport = FheNet.Fhe.CircuitReport;
using CoreEpochReport = FheNet.Nn.EpochReport;
using CoreFheMode = FheNet.Estimators.FheMode;
using CoreLayerBitWidths = FheNet.Integer.LayerBitWidths;
using CoreRegressor = FheNet.Estimators.NeuralNetRegressor;
using CoreRounding = FheNet.Fhe.RoundingMethod;

namespace FheNet.CSharp;

/// <summary>
/// A regressor trained with quantization-aware training on one or several targets (standardized internally).
/// It predicts with its integer model, the exact program that runs encrypted after
/// <see cref="NeuralNetEstimator.Compile"/>. Build one with <see cref="NeuralNet.Regressor()"/>.
/// </summary>
public sealed class NeuralNetRegressor : NeuralNetEstimator
{
    private CoreRegressor _core;

    /// <summary>The core estimator, for the deployment wrappers.</summary>
    internal CoreRegressor Core => _core;

    internal NeuralNetRegressor(NeuralNetOptions options) =>
        _core = new(options.ToCore(FSharpOption<FSharpFunc<CoreEpochReport, Unit>>.None));

    private NeuralNetRegressor(CoreRegressor core) => _core = core;

    /// <inheritdoc/>
    public override NeuralNetOptions Options => NeuralNetOptions.FromCore(_core.Settings);

    /// <inheritdoc/>
    public override bool IsFitted => _core.IsFitted;

    /// <inheritdoc/>
    public override bool IsCompiled => _core.IsCompiled;

    /// <inheritdoc/>
    public override int FeatureCount => _core.Network.Config.InputDim;

    /// <summary>The number of targets per row the model was fitted on.</summary>
    /// <exception cref="NotFittedException">Before Fit.</exception>
    public int TargetCount => _core.Network.Config.Outputs;

    /// <summary>
    /// Trains a new model on rows of features and one target per row. A failed or cancelled fit leaves the previous
    /// model in place; a successful one discards any compiled circuit.
    /// </summary>
    /// <param name="x">Training rows, all of the same width, finite.</param>
    /// <param name="y">One finite target per row.</param>
    /// <returns>This regressor.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="x"/> or <paramref name="y"/> is null.</exception>
    /// <exception cref="InvalidShapeException">Empty or ragged rows, or a target count different from the row count.</exception>
    /// <exception cref="ParameterOutOfRangeException">A NaN or infinite feature or target.</exception>
    public NeuralNetRegressor Fit(Features x, double[] y) => FitWith(x, Column(y), null, CancellationToken.None);

    /// <summary>Trains a new model on rows of features and several targets per row.</summary>
    /// <param name="x">Training rows.</param>
    /// <param name="y">One array of targets per row, all of the same length.</param>
    /// <returns>This regressor.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="x"/> or <paramref name="y"/> is null.</exception>
    /// <exception cref="InvalidShapeException">Empty or ragged rows or targets.</exception>
    public NeuralNetRegressor Fit(Features x, double[][] y) => FitWith(x, y, null, CancellationToken.None);

    /// <summary><see cref="Fit(Features, double[])"/> on the thread pool, reporting every epoch; cancellation takes
    /// effect between epochs.</summary>
    /// <param name="x">Training rows.</param>
    /// <param name="y">One target per row.</param>
    /// <param name="progress">Receives a report after every epoch.</param>
    /// <param name="cancellationToken">Stops training after the current epoch; the previous model is kept.</param>
    /// <returns>This regressor.</returns>
    /// <exception cref="OperationCanceledException">Training was cancelled.</exception>
    public Task<NeuralNetRegressor> FitAsync(
        Features x, double[] y, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default) =>
        Task.Run(() => FitWith(x, Column(y), progress, cancellationToken), cancellationToken);

    /// <summary><see cref="Fit(Features, double[][])"/> on the thread pool, reporting every epoch.</summary>
    /// <param name="x">Training rows.</param>
    /// <param name="y">One array of targets per row.</param>
    /// <param name="progress">Receives a report after every epoch.</param>
    /// <param name="cancellationToken">Stops training after the current epoch; the previous model is kept.</param>
    /// <returns>This regressor.</returns>
    /// <exception cref="OperationCanceledException">Training was cancelled.</exception>
    public Task<NeuralNetRegressor> FitAsync(
        Features x, double[][] y, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default) =>
        Task.Run(() => FitWith(x, y, progress, cancellationToken), cancellationToken);

    /// <summary>Predictions of the first (or only) target.</summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="mode">The integer model in the clear (default), its FHE simulation, or encrypted execution.</param>
    /// <exception cref="ArgumentNullException"><paramref name="x"/> is null.</exception>
    /// <exception cref="NotFittedException">Before Fit.</exception>
    /// <exception cref="FheNotAvailableException">Simulate or Execute before Compile.</exception>
    /// <exception cref="InvalidShapeException">Empty rows, or rows of another width than the fitted one.</exception>
    /// <exception cref="ParameterOutOfRangeException">A NaN or infinite feature.</exception>
    public double[] Predict(Features x, FheMode mode = FheMode.Disable) =>
        _core.Predict(x.Rows(nameof(x)), FSharpOption<CoreFheMode>.Some(mode.ToCore()));

    /// <summary>Predictions of every target, one array per row.</summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="mode">Where the network runs.</param>
    /// <exception cref="NotFittedException">Before Fit.</exception>
    /// <exception cref="FheNotAvailableException">Simulate or Execute before Compile.</exception>
    /// <exception cref="InvalidShapeException">Empty rows, or rows of another width than the fitted one.</exception>
    public double[][] PredictTargets(Features x, FheMode mode = FheMode.Disable) =>
        _core.PredictMulti(x.Rows(nameof(x)), FSharpOption<CoreFheMode>.Some(mode.ToCore()));

    /// <summary>
    /// <see cref="Predict"/> on the thread pool. Encrypted rows run one by one with a report after each (keys are
    /// generated first if needed) and cancellation between rows; clear and simulated rows run as one batch.
    /// </summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="mode">Where the network runs.</param>
    /// <param name="progress">Receives rows done and seconds per sample.</param>
    /// <param name="cancellationToken">Stops before the next row.</param>
    /// <exception cref="OperationCanceledException">Prediction was cancelled.</exception>
    public Task<double[]> PredictAsync(
        Features x, FheMode mode = FheMode.Disable, IProgress<InferenceProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var rows = x.Rows(nameof(x));
        return Task.Run(
            () => PredictRows(
                rows, mode, (r, m) => _core.Predict(r, FSharpOption<CoreFheMode>.Some(m)), progress, cancellationToken),
            cancellationToken);
    }

    /// <summary>R² of the integer model's first target on (x, y).</summary>
    /// <param name="x">Rows of the fitted width.</param>
    /// <param name="y">Their true targets.</param>
    /// <exception cref="NotFittedException">Before Fit.</exception>
    /// <exception cref="InvalidShapeException">Wrong widths, or a target count different from the row count.</exception>
    public double Score(Features x, double[] y)
    {
        ArgumentNullException.ThrowIfNull(y);
        return _core.Score(x.Rows(nameof(x)), y);
    }

    /// <summary>
    /// Fits this quantized model and its float twin (same settings and scaling, no quantization or pruning) on the
    /// same rows and one target, to measure what quantization costs.
    /// </summary>
    /// <param name="x">Training rows.</param>
    /// <param name="y">One target per row.</param>
    /// <returns>This regressor, and the float twin (which predicts only with <see cref="FheMode.Disable"/>).</returns>
    public (NeuralNetRegressor Quantized, NeuralNetRegressor Float) FitBenchmark(Features x, double[] y)
    {
        var rows = x.Rows(nameof(x));
        ArgumentNullException.ThrowIfNull(y);
        var (quantized, twin) = new CoreRegressor(_core.Settings).FitBenchmark(rows, y);
        _core = quantized;
        return (this, new NeuralNetRegressor(twin));
    }

    /// <summary>
    /// A new regressor with <paramref name="fraction"/> of every hidden layer's neurons removed, fine-tuned on
    /// (x, y) with this model's feature scaling. This regressor is unchanged.
    /// </summary>
    /// <param name="x">Rows to fine-tune on (raw features).</param>
    /// <param name="y">One target per row.</param>
    /// <param name="fraction">The fraction of hidden neurons to remove, in [0, 1).</param>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    /// <exception cref="ParameterOutOfRangeException"><paramref name="fraction"/> outside [0, 1).</exception>
    public NeuralNetRegressor Prune(Features x, double[] y, double fraction)
    {
        var rows = x.Rows(nameof(x));
        ArgumentNullException.ThrowIfNull(y);
        return new(_core.Prune(rows, y, fraction));
    }

    /// <summary>A regressor restored from <see cref="NeuralNetEstimator.Dump"/>'s JSON.</summary>
    /// <param name="json">The dumped model.</param>
    /// <exception cref="InvalidShapeException">Not a dumped regressor.</exception>
    /// <exception cref="ParameterOutOfRangeException">A format version this library does not read.</exception>
    public static NeuralNetRegressor Load(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        return new(CoreRegressor.Load(json));
    }

    /// <summary>A regressor restored from a file written by <see cref="NeuralNetEstimator.Save"/>.</summary>
    /// <param name="path">The file.</param>
    /// <exception cref="InvalidShapeException">Not a dumped regressor.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static NeuralNetRegressor LoadFile(string path) => Load(File.ReadAllText(path));

    private static double[][] Column(double[] y)
    {
        ArgumentNullException.ThrowIfNull(y);
        return Array.ConvertAll(y, v => new[] { v });
    }

    private NeuralNetRegressor FitWith(
        Features x, double[][] y, IProgress<TrainingProgress>? progress, CancellationToken cancellationToken)
    {
        var rows = x.Rows(nameof(x));
        ArgumentNullException.ThrowIfNull(y);
        var options = Options;
        var fresh = new CoreRegressor(options.ToCore(EpochHook(options.Epochs, progress, cancellationToken)));
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
