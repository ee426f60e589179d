using FheNet.Quantization;
using CoreQuantizer = FheNet.Quantization.Quantizer;
using CoreModule = FheNet.Quantization.QuantizerModule;

namespace FheNet.CSharp;

/// <summary>
/// Fluent, immutable construction of a uniform quantizer: each method returns a new builder, and
/// <see cref="Build"/> validates every setting at once.
/// </summary>
/// <example>
/// <code>
/// var q = QuantizerBuilder.Signed(4).PowerOfTwoScale(-3).Build();
/// int[] codes = q.Quantize(values);
/// </code>
/// </example>
public sealed record QuantizerBuilder
{
    private int BitWidth { get; init; }
    private bool IsSigned { get; init; }
    private bool IsNarrow { get; init; }
    private Scale StepSize { get; init; } = FheNet.Quantization.Scale.NewReal(1.0);
    private int Zero { get; init; }

    private QuantizerBuilder() { }

    /// <summary>Starts a builder for two's-complement codes of the given width (1 to 16 bits).</summary>
    /// <param name="bits">Bit-width of the codes.</param>
    public static QuantizerBuilder Signed(int bits) => new() { BitWidth = bits, IsSigned = true };

    /// <summary>Starts a builder for codes in [0, 2^bits) (1 to 16 bits).</summary>
    /// <param name="bits">Bit-width of the codes.</param>
    public static QuantizerBuilder Unsigned(int bits) => new() { BitWidth = bits, IsSigned = false };

    /// <summary>Drops the most negative signed code (or the top unsigned one), making the range symmetric.</summary>
    public QuantizerBuilder NarrowRange() => this with { IsNarrow = true };

    /// <summary>Uses any positive, finite step between neighbouring codes.</summary>
    /// <param name="scale">The step.</param>
    public QuantizerBuilder Scale(double scale) => this with { StepSize = FheNet.Quantization.Scale.NewReal(scale) };

    /// <summary>Uses the step 2^<paramref name="exponent"/>, which makes requantization an exact shift.</summary>
    /// <param name="exponent">The power of two, in [-126, 127].</param>
    public QuantizerBuilder PowerOfTwoScale(int exponent) =>
        this with { StepSize = FheNet.Quantization.Scale.NewPowerOfTwo(exponent) };

    /// <summary>Sets the code that represents 0.0 (default 0, a symmetric quantizer).</summary>
    /// <param name="zeroPoint">A code inside the range.</param>
    public QuantizerBuilder ZeroPoint(int zeroPoint) => this with { Zero = zeroPoint };

    /// <summary>Validates the settings and builds the quantizer.</summary>
    /// <exception cref="ParameterOutOfRangeException">A setting is outside its allowed range; the message names it.</exception>
    public UniformQuantizer Build() =>
        new(CoreModule.create(BitWidth, IsSigned, IsNarrow, StepSize, Zero));
}

/// <summary>A validated, immutable uniform quantizer (see <see cref="QuantizerBuilder"/>).</summary>
public sealed class UniformQuantizer
{
    private readonly CoreQuantizer _core;

    internal UniformQuantizer(CoreQuantizer core) => _core = core;

    /// <summary>Smallest integer code.</summary>
    public int MinCode => _core.QMin;

    /// <summary>Largest integer code.</summary>
    public int MaxCode => _core.QMax;

    /// <summary>The step between neighbouring codes.</summary>
    public double Scale => _core.Scale.Value;

    /// <summary>Rounds half to even and clips into [<see cref="MinCode"/>, <see cref="MaxCode"/>].</summary>
    /// <param name="value">A real value; NaN is rejected.</param>
    public int Quantize(double value) => CoreModule.quantize(_core, value);

    /// <summary>Quantizes every value into a new array.</summary>
    /// <param name="values">Real values; NaN is rejected.</param>
    public int[] Quantize(float[] values) => CoreModule.quantizeArray(_core, values);

    /// <summary>Quantizes into a caller's buffer without allocating.</summary>
    /// <param name="values">Real values; NaN is rejected.</param>
    /// <param name="codes">Destination, of the same length.</param>
    public void Quantize(ReadOnlySpan<float> values, Span<int> codes) => CoreModule.quantizeInto(_core, values, codes);

    /// <summary>The real value a code stands for.</summary>
    /// <param name="code">An integer code.</param>
    public double Dequantize(int code) => CoreModule.dequantize(_core, code);

    /// <inheritdoc/>
    public override string ToString() => _core.ToString();
}
