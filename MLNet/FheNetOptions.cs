using FheNet.CSharp;

namespace FheNet.MLNet;

/// <summary>
/// Settings of an FheNet ML.NET estimator: the network's settings, the columns it reads and writes, and where the
/// transformer predicts.
/// </summary>
public sealed record FheNetOptions
{
    /// <summary>The network's settings (default <see cref="NeuralNetOptions.Defaults"/>: standardized raw features,
    /// 3 layers, 3-bit weights and activations).</summary>
    public NeuralNetOptions Network { get; init; } = NeuralNetOptions.Defaults;

    /// <summary>The input column: a known-size vector of <see cref="float"/> (e.g. the output of
    /// <c>Concatenate</c>). Default <c>Features</c>.</summary>
    public string FeatureColumnName { get; init; } = "Features";

    /// <summary>The label column: a key, text, number or boolean column for a classifier, a <see cref="float"/>
    /// column for a regressor. Default <c>Label</c>.</summary>
    public string LabelColumnName { get; init; } = "Label";

    /// <summary>The predicted label column a classifier writes (of the label column's type). Default
    /// <c>PredictedLabel</c>.</summary>
    public string PredictedLabelColumnName { get; init; } = "PredictedLabel";

    /// <summary>The score column: class probabilities (a vector, in the order of the sorted labels) for a classifier,
    /// the predicted value for a regressor. Default <c>Score</c>.</summary>
    public string ScoreColumnName { get; init; } = "Score";

    /// <summary>Where the fitted transformer predicts: the integer model in the clear (default), its FHE simulation
    /// or encrypted execution. Simulate and Execute compile the model on the training rows after fitting.</summary>
    public FheMode Mode { get; init; } = FheMode.Disable;
}
