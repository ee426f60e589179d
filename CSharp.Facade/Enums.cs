namespace FheNet.CSharp;

/// <summary>The activation function of the hidden layers (the names of PyTorch's <c>torch.nn</c> classes).</summary>
public enum Activation
{
    /// <summary>max(0, x).</summary>
    ReLU,
    /// <summary>min(max(0, x), 6).</summary>
    ReLU6,
    /// <summary>x for x ≥ 0, 0.01·x otherwise.</summary>
    LeakyReLU,
    /// <summary>x for x ≥ 0, 0.25·x otherwise (the slope is fixed at PyTorch's initial value).</summary>
    PReLU,
    /// <summary>Exponential linear unit.</summary>
    ELU,
    /// <summary>Scaled exponential linear unit.</summary>
    SELU,
    /// <summary>Continuously differentiable exponential linear unit.</summary>
    CELU,
    /// <summary>Gaussian error linear unit (the exact erf form).</summary>
    GELU,
    /// <summary>x·sigmoid(x).</summary>
    SiLU,
    /// <summary>x·tanh(softplus(x)).</summary>
    Mish,
    /// <summary>1 / (1 + e^-x).</summary>
    Sigmoid,
    /// <summary>Hyperbolic tangent.</summary>
    Tanh,
    /// <summary>x clipped to [-1, 1].</summary>
    Hardtanh,
    /// <summary>Piecewise-linear sigmoid.</summary>
    Hardsigmoid,
    /// <summary>x·hardsigmoid(x).</summary>
    Hardswish,
    /// <summary>log(1 + e^x).</summary>
    Softplus,
    /// <summary>x / (1 + |x|).</summary>
    Softsign,
    /// <summary>x - tanh(x).</summary>
    Tanhshrink,
    /// <summary>log(sigmoid(x)).</summary>
    LogSigmoid,
    /// <summary>x: a linear network.</summary>
    Identity,
}

/// <summary>Where a prediction runs.</summary>
public enum FheMode
{
    /// <summary>The integer model in the clear: exactly what the encrypted circuit computes, at no FHE cost.</summary>
    Disable,
    /// <summary>
    /// The compiled circuit without encryption, each table lookup's error drawn from the noise model of its
    /// parameter set: shows the effect of a p_error before paying for encryption. Needs <c>Compile</c>.
    /// </summary>
    Simulate,
    /// <summary>Encrypted end to end: quantize and encrypt, evaluate the circuit, decrypt. Needs <c>Compile</c>.</summary>
    Execute,
}

/// <summary>How the low bits of an accumulator are dropped before its table lookup in the encrypted circuit.</summary>
public enum RoundingMethod
{
    /// <summary>Exact, two bootstraps per group of dropped bits (the top group's sign alone before a two-step table
    /// read): bit for bit the integer model. The default.</summary>
    Exact,
    /// <summary>
    /// Exact, one sign bootstrap per dropped bit (Concrete's method; more bootstraps than <see cref="Exact"/> when
    /// several bits are dropped).
    /// </summary>
    ExactPerBit,
    /// <summary>No extra bootstrap; off by one with a small probability near a rounding threshold.</summary>
    Approximate,
}

/// <summary>The optimizer of training.</summary>
public enum Optimizer
{
    /// <summary>Adam; weight decay is added to the gradient (L2), as in PyTorch's Adam.</summary>
    Adam,
    /// <summary>Adam with decoupled weight decay.</summary>
    AdamW,
    /// <summary>Stochastic gradient descent with heavy-ball momentum.</summary>
    Sgd,
}

/// <summary>How a model scales its raw features before the network; learned by Fit, applied by every prediction and
/// by the deployed client, so callers pass raw features everywhere.</summary>
public enum FeatureScaling
{
    /// <summary>Features are used as they are.</summary>
    None,
    /// <summary>(x − mean) / standard deviation (scikit-learn's StandardScaler). The default.</summary>
    Standard,
    /// <summary>(x − median) / interquartile range (scikit-learn's RobustScaler): for heavy-tailed columns.</summary>
    Robust,
}

/// <summary>How classes weigh in a classifier's cross-entropy.</summary>
public enum ClassWeighting
{
    /// <summary>Every class weighs 1.</summary>
    Uniform,
    /// <summary>n_samples / (n_classes · count(class)), as scikit-learn's "balanced".</summary>
    Balanced,
    /// <summary>One weight per class, in the order of the sorted class labels.</summary>
    Explicit,
}
