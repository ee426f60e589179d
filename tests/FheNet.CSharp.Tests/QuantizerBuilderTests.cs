using FheNet;
using FheNet.CSharp;
using Xunit;

namespace FheNet.CSharp.Tests;

public class QuantizerBuilderTests
{
    [Fact]
    public void SignedPowerOfTwoQuantizerRoundsHalfToEvenAndClips()
    {
        var q = QuantizerBuilder.Signed(4).PowerOfTwoScale(-1).Build();

        Assert.Equal(-8, q.MinCode);
        Assert.Equal(7, q.MaxCode);
        Assert.Equal(0.5, q.Scale);
        Assert.Equal(new[] { -8, -2, 0, 2, 7 }, q.Quantize(new[] { -100f, -1.25f, 0.25f, 0.75f, 100f }));
        Assert.Equal(1.5, q.Dequantize(3));
    }

    [Fact]
    public void SpanOverloadWritesIntoTheCallersBuffer()
    {
        var q = QuantizerBuilder.Unsigned(3).Scale(0.25).Build();
        Span<int> codes = stackalloc int[3];

        q.Quantize(new float[] { -1f, 0.3f, 10f }, codes);

        Assert.Equal(new[] { 0, 1, 7 }, codes.ToArray());
    }

    [Fact]
    public void BuildersAreImmutable()
    {
        var wide = QuantizerBuilder.Signed(3);
        var narrow = wide.NarrowRange();

        Assert.Equal(-4, wide.Build().MinCode);
        Assert.Equal(-3, narrow.Build().MinCode);
    }

    [Theory]
    [InlineData(0, 1.0, "bits")]
    [InlineData(17, 1.0, "bits")]
    [InlineData(4, 0.0, "scale")]
    [InlineData(4, double.NaN, "scale")]
    public void InvalidSettingsRaiseAnArgumentOutOfRangeExceptionNamingTheSetting(int bits, double scale, string name)
    {
        var e = Assert.Throws<ParameterOutOfRangeException>(() => QuantizerBuilder.Signed(bits).Scale(scale).Build());

        Assert.Equal(name, e.ParamName);
        Assert.IsAssignableFrom<ArgumentOutOfRangeException>(e);
    }
}
