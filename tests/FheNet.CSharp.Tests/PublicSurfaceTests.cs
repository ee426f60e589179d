using System.Reflection;
using Xunit;

namespace FheNet.CSharp.Tests;

/// <summary>The façade's public signatures use only .NET types a C# user knows: no F# option, list or function.</summary>
public class PublicSurfaceTests
{
    private static readonly Assembly Facade = typeof(FheNet.CSharp.QuantizerBuilder).Assembly;

    private static IEnumerable<Type> TypesIn(Type t)
    {
        if (t.HasElementType) return TypesIn(t.GetElementType()!);
        return t.IsGenericType ? new[] { t }.Concat(t.GetGenericArguments().SelectMany(TypesIn)) : new[] { t };
    }

    private static bool IsFSharpType(Type t) =>
        (t.Namespace ?? "").StartsWith("Microsoft.FSharp", StringComparison.Ordinal);

    [Fact]
    public void NoPublicSignatureMentionsAnFSharpType()
    {
        const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var offenders =
            from type in Facade.GetExportedTypes()
            from member in type.GetMembers(flags)
            from used in member switch
            {
                MethodInfo m => m.GetParameters().Select(p => p.ParameterType).Append(m.ReturnType),
                ConstructorInfo c => c.GetParameters().Select(p => p.ParameterType),
                PropertyInfo p => new[] { p.PropertyType },
                FieldInfo f => new[] { f.FieldType },
                EventInfo e => new[] { e.EventHandlerType! },
                _ => Array.Empty<Type>(),
            }
            from t in TypesIn(used)
            where IsFSharpType(t)
            select $"{type.Name}.{member.Name}: {t.FullName}";

        Assert.Empty(offenders);
    }

    [Fact]
    public void EveryExportedTypeIsPascalCase()
    {
        Assert.All(Facade.GetExportedTypes(), t => Assert.True(char.IsUpper(t.Name[0]), t.FullName));
    }

    [Fact]
    public void TheEstimatorSurfaceIsExported()
    {
        var exported = Facade.GetExportedTypes().Select(t => t.Name).ToHashSet();

        Assert.Superset(
            new HashSet<string>
            {
                "NeuralNet", "NeuralNetOptions", "ClassifierBuilder", "RegressorBuilder", "NeuralNetEstimator",
                "NeuralNetClassifier`1", "NeuralNetRegressor", "Features", "Activation", "FheMode", "RoundingMethod",
                "Optimizer", "ClassWeighting", "TrainingProgress", "InferenceProgress", "EpochSummary",
                "FheCircuitReport", "FheLayerReport", "TfheParameterSet", "LayerBitWidths", "FheMemoryEstimate",
                "FheRoundingCost", "FeatureScaling", "CsvData", "RangeCheck", "OutOfRangeFeature", "QuantizationCheck",
            },
            exported);
    }

    [Fact]
    public void EveryPublicMemberIsPascalCase()
    {
        const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var offenders =
            from type in Facade.GetExportedTypes()
            from member in type.GetMembers(flags)
            where member is not ConstructorInfo
            where member is not MethodInfo { IsSpecialName: true } // property accessors, operators
            where member is not FieldInfo { IsSpecialName: true } // an enum's value__
            where !member.Name.Contains('<') // compiler-generated record members such as <Clone>$
            where !char.IsUpper(member.Name[0])
            select $"{type.Name}.{member.Name}";

        Assert.Empty(offenders);
    }

    [Fact]
    public void EveryAsyncMethodReturnsATaskAndTakesACancellationTokenLast()
    {
        var methods = Facade.GetExportedTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            .Where(m => m.Name.EndsWith("Async", StringComparison.Ordinal))
            .ToArray();

        Assert.NotEmpty(methods);
        Assert.All(methods, m =>
        {
            Assert.True(typeof(Task).IsAssignableFrom(m.ReturnType), m.Name);
            var last = m.GetParameters()[^1];
            Assert.Equal(typeof(CancellationToken), last.ParameterType);
            Assert.True(last.IsOptional, $"{m.Name}: the token is optional");
        });
    }
}
