using CoreCircuitReport = FheNet.Fhe.CircuitReport;
using CoreEpochReport = FheNet.Nn.EpochReport;
using CoreLayerBitWidths = FheNet.Integer.LayerBitWidths;

namespace FheNet.CSharp;

/// <summary>One epoch of the training log.</summary>
/// <param name="Epoch">The epoch, from 1.</param>
/// <param name="TrainLoss">Mean loss over the training rows of the epoch.</param>
/// <param name="ValidLoss">Loss on the validation split; null without one (ValidationFraction 0).</param>
/// <param name="ValidMetric">Accuracy (classifier) or R² (regressor) on the validation split; null without one.</param>
/// <param name="Seconds">Wall time of the epoch.</param>
/// <param name="Refit">True for an epoch of the final run on every row that follows the validation run.</param>
public sealed record EpochSummary(int Epoch, double TrainLoss, double? ValidLoss, double? ValidMetric, double Seconds, bool Refit)
{
    internal static EpochSummary FromCore(CoreEpochReport r) =>
        new(r.Epoch, r.TrainLoss, r.ValidLoss.ToNullable(), r.ValidMetric.ToNullable(), r.Seconds, r.Refit);
}

/// <summary>The quantized model against its own float path (the same weights without quantization) on the training
/// rows, computed by <c>Fit</c>: a collapse is a quantized score far below the float path's.</summary>
/// <param name="Quantized">Accuracy (classifier) or R² (regressor) of the quantized model.</param>
/// <param name="Float">The same metric of the float path.</param>
/// <param name="Collapsed">True when the quantized model is more than 0.2 below its float path.</param>
/// <param name="Recovered">True when a re-fit of the scales after training recovered from a collapse (the figures
/// are those after it).</param>
public sealed record QuantizationCheck(double Quantized, double Float, bool Collapsed, bool Recovered)
{
    internal static QuantizationCheck FromCore(FheNet.Nn.QuantizationCheck c) =>
        new(c.Quantized, c.Float, c.Collapsed, c.Recovered);
}

/// <summary>Reported after every training epoch by <c>FitAsync</c>.</summary>
/// <param name="Epoch">Epochs done in this run, from 1.</param>
/// <param name="Epochs">This run's epoch budget: the settings' epochs (early stopping may end training before
/// them), or for the refit the best epoch count of the validation run.</param>
/// <param name="TrainLoss">Mean training loss of this epoch.</param>
/// <param name="ValidLoss">Validation loss; null without a validation split.</param>
/// <param name="ValidMetric">Validation accuracy or R²; null without a validation split.</param>
/// <param name="Elapsed">Time since the fit started.</param>
/// <param name="Eta">Estimated time to this run's last epoch, at its mean pace so far.</param>
/// <param name="Refit">True during the final run on every row that follows the validation run.</param>
public sealed record TrainingProgress(
    int Epoch, int Epochs, double TrainLoss, double? ValidLoss, double? ValidMetric, TimeSpan Elapsed, TimeSpan Eta,
    bool Refit);

/// <summary>Reported by <c>PredictAsync</c>: after every encrypted row, or once for a clear or simulated batch.</summary>
/// <param name="Done">Rows predicted so far.</param>
/// <param name="Total">Rows asked for.</param>
/// <param name="SecondsPerSample">Mean wall time per row so far (keys were generated before the first row).</param>
/// <param name="Elapsed">Time since the first row started.</param>
public sealed record InferenceProgress(int Done, int Total, double SecondsPerSample, TimeSpan Elapsed);

/// <summary>Accumulator and lookup-input bit-widths of one layer of the integer model over calibration rows.</summary>
/// <param name="Layer">The layer, from 0.</param>
/// <param name="AccumulatorMin">Smallest accumulator seen.</param>
/// <param name="AccumulatorMax">Largest accumulator seen.</param>
/// <param name="AccumulatorBits">Bits of the smallest integer type holding [min, max].</param>
/// <param name="RoundedBits">Low bits dropped (rounded) before the table lookup.</param>
/// <param name="LookupInputBits">Bits of the rounded value entering the lookup; null for the last layer (no lookup).</param>
public sealed record LayerBitWidths(
    int Layer, long AccumulatorMin, long AccumulatorMax, int AccumulatorBits, int RoundedBits, int? LookupInputBits)
{
    internal static LayerBitWidths FromCore(CoreLayerBitWidths b) =>
        new(b.Layer, b.AccumulatorMin, b.AccumulatorMax, b.AccumulatorBits, b.Shift, b.LookupInputBits.ToNullable());
}

/// <summary>The TFHE parameter set a circuit was compiled for.</summary>
/// <param name="Name">Name of the set.</param>
/// <param name="LweDimension">n: dimension of the small LWE key.</param>
/// <param name="GlweDimension">k: number of GLWE mask polynomials.</param>
/// <param name="PolynomialSize">N: polynomial size.</param>
/// <param name="PbsBaseLog">log2 of the bootstrapping gadget base.</param>
/// <param name="PbsLevel">Levels of the bootstrapping decomposition.</param>
/// <param name="KsBaseLog">log2 of the keyswitching gadget base.</param>
/// <param name="KsLevel">Levels of the keyswitching decomposition.</param>
public sealed record TfheParameterSet(
    string Name, int LweDimension, int GlweDimension, int PolynomialSize, int PbsBaseLog, int PbsLevel, int KsBaseLog,
    int KsLevel);

/// <summary>One layer of a compiled circuit.</summary>
/// <param name="Layer">The layer, from 0.</param>
/// <param name="Lookups">Table lookups (one per neuron; 0 for the last layer, decrypted by the client).</param>
/// <param name="Bootstraps">Programmable bootstraps: the lookups and those of exact rounding.</param>
/// <param name="AccumulatorBits">Bits of the encrypted accumulator.</param>
/// <param name="RoundedBits">Low bits rounded away before the lookup.</param>
/// <param name="LookupBits">Bits of the table's index (the rounded accumulator).</param>
/// <param name="WindowBits">For a table read in two steps, the bits of its window (the final lookup reads one more);
/// 0 when one lookup reads all of <paramref name="LookupBits"/>.</param>
/// <param name="Nu">Largest 2-norm of a neuron's integer weights: the noise growth of the layer.</param>
/// <param name="EstimatedMilliseconds">Bootstraps × a bootstrap timed on this machine / cores; null before keys exist.</param>
/// <param name="MeasuredMilliseconds">Mean wall time of the layer in the last encrypted run; null before one.</param>
public sealed record FheLayerReport(
    int Layer, int Lookups, int Bootstraps, int AccumulatorBits, int RoundedBits, int LookupBits, int WindowBits,
    double Nu, double? EstimatedMilliseconds, double? MeasuredMilliseconds);

/// <summary>The memory of a circuit's keys and tables, estimated from its parameter set before any key exists.</summary>
/// <param name="CompressedEvaluationKeyBytes">The seeded evaluation key a client sends to a server.</param>
/// <param name="ExpandedEvaluationKeyBytes">The evaluation key with its masks (as large as the Fourier key).</param>
/// <param name="PreparedBytes">What a server holds: the Fourier and keyswitching keys, the tables, the buffers.</param>
/// <param name="ClientKeyBytes">The client's secret keys.</param>
/// <param name="PeakBytes">Key generation then preparation in one process.</param>
public sealed record FheMemoryEstimate(
    long CompressedEvaluationKeyBytes, long ExpandedEvaluationKeyBytes, long PreparedBytes, long ClientKeyBytes,
    long PeakBytes);

/// <summary>The accuracy a rounding threshold costs: the rounded integer model against the unrounded one on the
/// calibration rows, in the model's real outputs (logits, or standardized targets).</summary>
/// <param name="ThresholdBits">Bits of each rounded lookup.</param>
/// <param name="Rows">Calibration rows compared.</param>
/// <param name="MeanAbsoluteChange">Mean absolute change of an output.</param>
/// <param name="MaxAbsoluteChange">Largest absolute change of an output.</param>
/// <param name="ArgmaxAgreement">Share of rows whose largest output (a classifier's class) is unchanged.</param>
public sealed record FheRoundingCost(
    int ThresholdBits, int Rows, double MeanAbsoluteChange, double MaxAbsoluteChange, double ArgmaxAgreement);

/// <summary>What a compiled circuit costs per sample, with its parameter set, its estimated memory and time (before
/// any key exists) and, after keys and an encrypted run, the measured figures beside them.</summary>
/// <param name="Layers">Per-layer figures.</param>
/// <param name="Parameters">The TFHE parameter set.</param>
/// <param name="BootstrapsPerSample">Programmable bootstraps per encrypted prediction.</param>
/// <param name="Log2PError">log2 of the failure probability each bootstrap was sized for.</param>
/// <param name="CompressedEvaluationKeyBytes">The seeded evaluation key a client sends to a server.</param>
/// <param name="EvaluationKeyBytes">The expanded evaluation key a server holds in memory.</param>
/// <param name="InputBytesPerFeature">Bytes of one encrypted feature (its body; each row adds one 16-byte seed).</param>
/// <param name="Memory">The keys' and tables' memory, estimated from the parameter set.</param>
/// <param name="EstimatedKeygenSeconds">Key generation and preparation, estimated for this machine.</param>
/// <param name="EstimatedSecondsPerSample">One encrypted prediction, estimated for this machine.</param>
/// <param name="MeasuredKeygenSeconds">Measured key generation and preparation; null before keys exist.</param>
/// <param name="MeasuredSecondsPerSample">Mean seconds per row of the last encrypted run; null before one.</param>
/// <param name="MeasuredPeakBytes">The process's peak working set once keys exist; null before.</param>
/// <param name="RoundingCost">The accuracy cost of the rounding threshold; null when none changed the model.</param>
public sealed record FheCircuitReport(
    IReadOnlyList<FheLayerReport> Layers,
    TfheParameterSet Parameters,
    int BootstrapsPerSample,
    double Log2PError,
    long CompressedEvaluationKeyBytes,
    long EvaluationKeyBytes,
    int InputBytesPerFeature,
    FheMemoryEstimate Memory,
    double EstimatedKeygenSeconds,
    double EstimatedSecondsPerSample,
    double? MeasuredKeygenSeconds,
    double? MeasuredSecondsPerSample,
    long? MeasuredPeakBytes,
    FheRoundingCost? RoundingCost)
{
    private string Table { get; init; } = "";

    internal static FheCircuitReport FromCore(CoreCircuitReport r)
    {
        var p = r.Parameters;
        var m = r.Memory;
        var cost = r.RoundingCost?.Value;
        return new FheCircuitReport(
            r.Layers.Select(l => new FheLayerReport(
                l.Layer, l.Lookups, l.Bootstraps, l.AccumulatorBits, l.RoundedBits, l.LookupBits, l.WindowBits, l.Nu,
                l.EstimatedMilliseconds.ToNullable(), l.MeasuredMilliseconds.ToNullable())).ToArray(),
            new TfheParameterSet(
                p.Name, p.LweDimension, p.GlweDimension, p.PolynomialSize, p.PbsBaseLog, p.PbsLevel, p.KsBaseLog,
                p.KsLevel),
            r.BootstrapsPerSample,
            r.Log2PError,
            r.CompressedEvaluationKeyBytes,
            r.EvaluationKeyBytes,
            r.InputBytesPerFeature,
            new FheMemoryEstimate(
                m.CompressedEvaluationKeyBytes, m.ExpandedEvaluationKeyBytes, m.PreparedBytes, m.ClientKeyBytes,
                m.PeakBytes),
            r.EstimatedKeygenSeconds,
            r.EstimatedSecondsPerSample,
            r.MeasuredKeygenSeconds.ToNullable(),
            r.MeasuredSecondsPerSample.ToNullable(),
            r.MeasuredPeakBytes.ToNullable(),
            cost is null
                ? null
                : new FheRoundingCost(
                    cost.ThresholdBits, cost.Rows, cost.MeanAbsoluteChange, cost.MaxAbsoluteChange,
                    cost.ArgmaxAgreement)) { Table = r.ToString() };
    }

    /// <summary>A plain-text table of the report, one line per layer, then the estimates and measurements.</summary>
    public override string ToString() => Table;
}
