using Microsoft.FSharp.Core;
using CoreActivation = FheNet.Autodiff.Activation;
using CoreActivationModule = FheNet.Autodiff.ActivationModule;
using CoreFheMode = FheNet.Estimators.FheMode;
using CoreOptimizer = FheNet.Nn.Optimizer;
using CoreRounding = FheNet.Fhe.RoundingMethod;
using CoreScaling = FheNet.Preprocessing.FeatureScaling;
using CoreScalingModule = FheNet.Preprocessing.FeatureScalingModule;

namespace FheNet.CSharp;

/// <summary>Conversions between the façade's C# enums and nullables and the core's F# unions and options.</summary>
internal static class CoreMapping
{
    // The C# enum names are the core's case names, so the mapping cannot drift case by case.
    internal static CoreActivation ToCore(this Activation activation) => CoreActivationModule.parse(activation.ToString());

    internal static Activation FromCore(CoreActivation activation) =>
        Enum.Parse<Activation>(CoreActivationModule.name(activation));

    // The C# enum names are the core's case names.
    internal static CoreScaling ToCore(this FeatureScaling scaling) =>
        Enum.IsDefined(scaling)
            ? CoreScalingModule.parse(scaling.ToString())
            : throw new ParameterOutOfRangeException("scaling", scaling, "None, Standard or Robust");

    internal static FeatureScaling FromCore(CoreScaling scaling) =>
        Enum.Parse<FeatureScaling>(CoreScalingModule.name(scaling), ignoreCase: true);

    internal static CoreFheMode ToCore(this FheMode mode) => mode switch
    {
        FheMode.Disable => CoreFheMode.Disable,
        FheMode.Simulate => CoreFheMode.Simulate,
        FheMode.Execute => CoreFheMode.Execute,
        _ => throw new ParameterOutOfRangeException("mode", mode, "Disable, Simulate or Execute"),
    };

    internal static CoreRounding ToCore(this RoundingMethod rounding) => rounding switch
    {
        RoundingMethod.Exact => CoreRounding.Exact,
        RoundingMethod.ExactPerBit => CoreRounding.ExactPerBit,
        RoundingMethod.Approximate => CoreRounding.Approximate,
        _ => throw new ParameterOutOfRangeException("rounding", rounding, "Exact, ExactPerBit or Approximate"),
    };

    internal static CoreOptimizer ToCore(this Optimizer optimizer) => optimizer switch
    {
        Optimizer.Adam => CoreOptimizer.Adam,
        Optimizer.AdamW => CoreOptimizer.AdamW,
        Optimizer.Sgd => CoreOptimizer.SgdMomentum,
        _ => throw new ParameterOutOfRangeException("optimizer", optimizer, "Adam, AdamW or Sgd"),
    };

    internal static Optimizer FromCore(CoreOptimizer optimizer) =>
        optimizer.IsAdam ? Optimizer.Adam : optimizer.IsAdamW ? Optimizer.AdamW : Optimizer.Sgd;

    internal static FSharpOption<T> ToOption<T>(this T? value) where T : struct =>
        value.HasValue ? FSharpOption<T>.Some(value.Value) : FSharpOption<T>.None;

    internal static T? ToNullable<T>(this FSharpOption<T>? option) where T : struct =>
        FSharpOption<T>.get_IsSome(option) ? option!.Value : null;
}
