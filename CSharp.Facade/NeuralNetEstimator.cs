using System.Diagnostics;
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
/// What classifiers and regressors share: training log, FHE compilation, keys, bit-width report and persistence.
/// An estimator is not thread-safe: do not call it from several threads at once, nor while one of its
/// <c>...Async</c> methods is running.
/// </summary>
public abstract class NeuralNetEstimator
{
    private protected NeuralNetEstimator() { }

    /// <summary>The settings the estimator was built (or loaded) with.</summary>
    public abstract NeuralNetOptions Options { get; }

    /// <summary>True after <c>Fit</c> or <c>Load</c>.</summary>
    public abstract bool IsFitted { get; }

    /// <summary>True after <see cref="Compile"/> or <see cref="LoadCompiled"/> (a new Fit discards the circuit).</summary>
    public abstract bool IsCompiled { get; }

    /// <summary>The number of features per row the model was fitted on.</summary>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    public abstract int FeatureCount { get; }

    /// <summary>The training log of the last fit, one entry per epoch (empty for a loaded model).</summary>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    public IReadOnlyList<EpochSummary> History => HistoryCore.Select(EpochSummary.FromCore).ToArray();

    /// <summary>The quantized model against its float path on the training rows of the last fit; null for a loaded
    /// model or a float twin.</summary>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    public QuantizationCheck? QuantizationCheck =>
        QuantizationCheckCore is { } check ? CSharp.QuantizationCheck.FromCore(check.Value) : null;

    /// <summary>
    /// Compiles the fitted model to an FHE circuit: bounds every accumulator on the calibration rows (the training
    /// rows are a good choice), sizes the table lookups and picks the TFHE parameters. Afterwards predict with
    /// <see cref="FheMode.Simulate"/> or <see cref="FheMode.Execute"/>. A new Fit discards the circuit.
    /// </summary>
    /// <param name="x">Calibration rows (at least 8).</param>
    /// <param name="pError">Failure probability of each table lookup (default 2^-40); not with <paramref name="globalPError"/>.</param>
    /// <param name="globalPError">Failure probability of a whole prediction, spread over its bootstraps.</param>
    /// <param name="roundingThresholdBits">Round every hidden accumulator to at most this many bits before its
    /// lookup (faster, less exact); null chooses a threshold for layers without the model's own exact rounding
    /// (the widest lookup whose keys fit the memory budget at a sane cost; its accuracy cost is in the report);
    /// 0 keeps only the model's own rounding.</param>
    /// <param name="rounding">How the dropped bits are rounded in FHE (default exact).</param>
    /// <param name="rangeMargin">How far beyond the calibration rows the circuit stays exact: every accumulator
    /// range, and the feature range the deployed client checks rows against, widens by this fraction of its width
    /// on both sides (default 0.25; <see cref="double.PositiveInfinity"/> for every possible input).</param>
    /// <returns>The circuit's report (also available from <see cref="CircuitReport"/>).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="x"/> is null.</exception>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    /// <exception cref="InvalidShapeException">Too few rows, or rows of the wrong width.</exception>
    /// <exception cref="ParameterOutOfRangeException">A probability outside (0, 1), or both given.</exception>
    /// <exception cref="FheNet.Fhe.CircuitTooWideException">A layer is too wide for any parameter set; the message
    /// names the layer and the fixes (AccumulatorBits, roundingThresholdBits, fewer bits).</exception>
    /// <exception cref="FheNet.Fhe.FheResourceException">No automatic rounding threshold gives keys within the memory
    /// budget (FHENET_MEMORY_BUDGET, default half the memory available); the message names the sizes and the fixes.</exception>
    public FheCircuitReport Compile(
        Features x, double? pError = null, double? globalPError = null, int? roundingThresholdBits = null,
        RoundingMethod rounding = RoundingMethod.Exact, double? rangeMargin = null) =>
        CompileThenReport(
            x.Rows(nameof(x)), pError.ToOption(), globalPError.ToOption(), roundingThresholdBits.ToOption(),
            FSharpOption<CoreRounding>.Some(rounding.ToCore()), rangeMargin.ToOption());

    /// <summary>
    /// <see cref="Compile"/> on the thread pool. Compilation is one step: the token is checked before it starts.
    /// </summary>
    /// <param name="x">Calibration rows (at least 8).</param>
    /// <param name="pError">Failure probability of each table lookup (default 2^-40).</param>
    /// <param name="globalPError">Failure probability of a whole prediction.</param>
    /// <param name="roundingThresholdBits">Round every hidden accumulator to at most this many bits (null: automatic;
    /// 0: only the model's own rounding).</param>
    /// <param name="rounding">How the dropped bits are rounded in FHE.</param>
    /// <param name="rangeMargin">The fraction by which calibrated ranges widen (default 0.25).</param>
    /// <param name="cancellationToken">Cancels the compilation if it has not started.</param>
    /// <returns>The circuit's report.</returns>
    /// <exception cref="OperationCanceledException">The token was cancelled before compilation started.</exception>
    public Task<FheCircuitReport> CompileAsync(
        Features x, double? pError = null, double? globalPError = null, int? roundingThresholdBits = null,
        RoundingMethod rounding = RoundingMethod.Exact, double? rangeMargin = null,
        CancellationToken cancellationToken = default) =>
        Task.Run(() => Compile(x, pError, globalPError, roundingThresholdBits, rounding, rangeMargin), cancellationToken);

    /// <summary>
    /// Restores the compiled circuit saved by <see cref="FheModelDev"/> in <paramref name="directory"/> for this
    /// fitted (or loaded) model, so that Simulate and Execute run exactly as before saving, without compiling again.
    /// </summary>
    /// <param name="directory">A model directory written by <see cref="FheModelDev"/>.</param>
    /// <returns>The circuit's report.</returns>
    /// <exception cref="NotFittedException">Before <c>Fit</c> or <c>Load</c>.</exception>
    /// <exception cref="FileNotFoundException">The directory holds no saved model.</exception>
    /// <exception cref="ArgumentException">The directory holds another network's model, or one that scales its
    /// features differently.</exception>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">The artifacts are damaged.</exception>
    public FheCircuitReport LoadCompiled(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        LoadCompiledCore(directory);
        return CircuitReport();
    }

    /// <summary>
    /// The report of the compiled circuit: per layer lookups, bits and bootstraps; parameters; key sizes. Once keys
    /// exist it also estimates each layer's time from a bootstrap timed now on this machine, and after an encrypted
    /// prediction it gives each layer's measured mean time.
    /// </summary>
    /// <exception cref="FheNotAvailableException">Before <see cref="Compile"/>.</exception>
    public FheCircuitReport CircuitReport() => FheCircuitReport.FromCore(ReportCore());

    /// <summary>
    /// Generates the FHE keys of the compiled circuit (client key and evaluation key). Keys are cached: encrypted
    /// predictions generate them on first use; call this to pay that cost up front, or with
    /// <paramref name="force"/> for fresh keys.
    /// </summary>
    /// <param name="force">Replace existing keys.</param>
    /// <exception cref="FheNotAvailableException">Before <see cref="Compile"/>.</exception>
    /// <exception cref="FheNet.Fhe.FheResourceException">The keys would not fit the memory budget
    /// (FHENET_MEMORY_BUDGET, default half the memory available); raised before any key is made.</exception>
    public void Keygen(bool force = false) => KeygenCore(force);

    /// <summary><see cref="Keygen"/> on the thread pool; the token is checked before it starts.</summary>
    /// <param name="force">Replace existing keys.</param>
    /// <param name="cancellationToken">Cancels key generation if it has not started.</param>
    /// <exception cref="OperationCanceledException">The token was cancelled before key generation started.</exception>
    public Task KeygenAsync(bool force = false, CancellationToken cancellationToken = default) =>
        Task.Run(() => Keygen(force), cancellationToken);

    /// <summary>Per-layer accumulator and lookup-input bit-widths of the integer model on calibration rows.</summary>
    /// <param name="x">Calibration rows.</param>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    /// <exception cref="InvalidShapeException">Empty or wrong-width rows.</exception>
    public IReadOnlyList<LayerBitWidths> BitWidths(Features x) =>
        BitWidthsCore(x.Rows(nameof(x))).Select(LayerBitWidths.FromCore).ToArray();

    /// <summary>
    /// The fitted model as versioned JSON (network, scales, masks, classes, settings). A compiled circuit and its keys
    /// are not included: compile again after loading.
    /// </summary>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    public string Dump() => DumpCore();

    /// <summary>Writes <see cref="Dump"/>'s JSON to a file.</summary>
    /// <param name="path">The file to create or overwrite.</param>
    /// <exception cref="NotFittedException">Before <c>Fit</c>.</exception>
    public void Save(string path) => File.WriteAllText(path, Dump());

    private protected abstract FSharpList<CoreEpochReport> HistoryCore { get; }

    private protected abstract FSharpOption<FheNet.Nn.QuantizationCheck>? QuantizationCheckCore { get; }

    /// <summary>Compiles and returns the new circuit's report.</summary>
    private protected abstract FheCircuitReport CompileThenReport(
        float[][] x, FSharpOption<double> pError, FSharpOption<double> globalPError,
        FSharpOption<int> roundingThresholdBits, FSharpOption<CoreRounding> rounding, FSharpOption<double> rangeMargin);

    private protected abstract void LoadCompiledCore(string directory);

    private protected abstract CoreCircuitReport ReportCore();

    private protected abstract void KeygenCore(bool force);

    private protected abstract FSharpList<CoreLayerBitWidths> BitWidthsCore(float[][] x);

    private protected abstract string DumpCore();

    /// <summary>
    /// The core's per-epoch callback for one fit: reports progress, then stops training by throwing if the token
    /// was cancelled (the core keeps its previous state when a fit throws).
    /// </summary>
    private protected static FSharpOption<FSharpFunc<CoreEpochReport, Unit>> EpochHook(
        int epochs, IProgress<TrainingProgress>? progress, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (progress is null && !cancellationToken.CanBeCanceled)
            return FSharpOption<FSharpFunc<CoreEpochReport, Unit>>.None;
        var watch = Stopwatch.StartNew();
        var run = TimeSpan.Zero; // when the current run (validation run or refit) started
        var (bestLoss, bestEpoch) = (double.PositiveInfinity, epochs);
        return FSharpOption<FSharpFunc<CoreEpochReport, Unit>>.Some(FuncConvert.FromAction<CoreEpochReport>(r =>
        {
            var elapsed = watch.Elapsed;
            if (r.Refit && r.Epoch == 1)
                run = elapsed - TimeSpan.FromSeconds(r.Seconds);
            if (r.ValidLoss is { } valid && valid.Value < bestLoss)
                (bestLoss, bestEpoch) = (valid.Value, r.Epoch);
            // The refit trains for the validation run's best epoch count.
            var budget = r.Refit ? bestEpoch : epochs;
            var eta = (elapsed - run) / r.Epoch * Math.Max(0, budget - r.Epoch);
            progress?.Report(new TrainingProgress(
                r.Epoch, budget, r.TrainLoss, r.ValidLoss.ToNullable(), r.ValidMetric.ToNullable(), elapsed, eta,
                r.Refit));
            cancellationToken.ThrowIfCancellationRequested();
        }));
    }

    /// <summary>
    /// Predicts rows with progress and cancellation: an encrypted run row by row (keys generated first, so
    /// seconds per sample are those of inference), a clear or simulated one as a single batch.
    /// </summary>
    private protected T[] PredictRows<T>(
        float[][] rows, FheMode mode, Func<float[][], CoreFheMode, T[]> predict, IProgress<InferenceProgress>? progress,
        CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var watch = Stopwatch.StartNew();
        if (mode != FheMode.Execute)
        {
            var all = predict(rows, mode.ToCore());
            var perRow = watch.Elapsed.TotalSeconds / rows.Length;
            progress?.Report(new InferenceProgress(rows.Length, rows.Length, perRow, watch.Elapsed));
            return all;
        }
        // The clear run checks the fitted state and every row with the core's messages before keys are paid for.
        predict(rows, CoreFheMode.Disable);
        KeygenCore(false);
        watch.Restart();
        var results = new T[rows.Length];
        for (var i = 0; i < rows.Length; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            results[i] = predict([rows[i]], CoreFheMode.Execute)[0];
            var perRow = watch.Elapsed.TotalSeconds / (i + 1);
            progress?.Report(new InferenceProgress(i + 1, rows.Length, perRow, watch.Elapsed));
        }
        return results;
    }
}
