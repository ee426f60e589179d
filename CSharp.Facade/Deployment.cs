using CoreDev = FheNet.Deploy.FheModelDev;
using CoreClient = FheNet.Deploy.FheModelClient;
using CoreServer = FheNet.Deploy.FheModelServer;

namespace FheNet.CSharp;

/// <summary>
/// The model owner's side of a deployment: saves a fitted, compiled estimator as a server artifact
/// (<c>server.fhe</c>: the integer circuit, tables and parameters) and a client artifact (<c>client.fhe</c>: input
/// quantization, output dequantization, labels). Neither holds a secret.
/// </summary>
public static class FheModelDev
{
    /// <summary>Saves a compiled classifier's artifacts into <paramref name="directory"/> (created if needed).</summary>
    /// <param name="model">A classifier after <c>Fit</c> and <c>Compile</c>.</param>
    /// <param name="directory">The model directory.</param>
    /// <exception cref="FheNotAvailableException">The model is not compiled.</exception>
    public static void Save<TLabel>(NeuralNetClassifier<TLabel> model, string directory)
        where TLabel : notnull, IComparable =>
        new CoreDev(model.Core).Save(directory);

    /// <summary>Saves a compiled regressor's artifacts into <paramref name="directory"/> (created if needed).</summary>
    /// <param name="model">A regressor after <c>Fit</c> and <c>Compile</c>.</param>
    /// <param name="directory">The model directory.</param>
    /// <exception cref="FheNotAvailableException">The model is not compiled.</exception>
    public static void Save(NeuralNetRegressor model, string directory) => new CoreDev(model.Core).Save(directory);
}

/// <summary>
/// The data owner's side: holds the secret key (in a key directory, owner-only), sends only evaluation keys and
/// ciphertexts, and reads the server's encrypted answers.
/// </summary>
public sealed class FheModelClient : IDisposable
{
    private readonly CoreClient _core;

    /// <summary>Wipes the secret key held in memory (best effort: the runtime may have copied it; the key file
    /// stays). The client cannot encrypt or decrypt afterwards.</summary>
    public void Dispose() => ((IDisposable)_core).Dispose();

    /// <summary>A client for the model saved in <paramref name="modelDirectory"/>, keys in <paramref name="keyDirectory"/>.</summary>
    /// <param name="modelDirectory">A directory written by <see cref="FheModelDev"/>.</param>
    /// <param name="keyDirectory">Where the secret and evaluation keys are kept.</param>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">The client artifact is missing, damaged or of another version.</exception>
    public FheModelClient(string modelDirectory, string keyDirectory) => _core = new CoreClient(modelDirectory, keyDirectory);

    /// <summary>A client from the client artifact's bytes (for example downloaded from a server's <c>GET /client</c>).</summary>
    /// <param name="clientArtifact">The bytes of <c>client.fhe</c>.</param>
    /// <param name="keyDirectory">Where the secret and evaluation keys are kept.</param>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">The bytes are not a valid client artifact.</exception>
    public FheModelClient(byte[] clientArtifact, string keyDirectory) => _core = new CoreClient(clientArtifact, keyDirectory);

    /// <summary>The class labels of a classifier, in the order of the probabilities (empty for a regressor).</summary>
    public IReadOnlyList<string> Classes => _core.Classes;

    /// <summary>Loads the keys of the key directory, or generates and saves them when there are none.</summary>
    /// <param name="force">Generate new keys even if some exist.</param>
    public void GenerateKeys(bool force = false) => _core.GenerateKeys(force);

    /// <summary>The compressed evaluation keys to upload to a server (no secret key material).</summary>
    public byte[] EvaluationKeys() => _core.EvaluationKeys();

    /// <summary>
    /// Scales one row of raw features as the model learned in Fit, quantizes and encrypts it (seeded ciphertexts,
    /// one seed per row). Check it with <see cref="CheckRange(float[])"/> first to know whether the circuit was
    /// calibrated for it.
    /// </summary>
    /// <param name="row">The raw features, as given to the estimator's Predict.</param>
    /// <exception cref="ArgumentException">The row has the wrong number of features or a non-finite value (the
    /// message names its column).</exception>
    public byte[] QuantizeEncryptSerialize(float[] row) => _core.QuantizeEncryptSerialize(row);

    /// <summary>Scales, quantizes and encrypts one row of raw float64 features.</summary>
    /// <param name="row">The raw features.</param>
    public byte[] QuantizeEncryptSerialize(double[] row)
    {
        ArgumentNullException.ThrowIfNull(row);
        return _core.QuantizeEncryptSerialize(Array.ConvertAll(row, v => (float)v));
    }

    /// <summary>
    /// Scales, quantizes and encrypts many rows of raw features into one message (one seed per row), which a server
    /// evaluates under one set of keys, its rows in parallel. Decrypt the answer with
    /// <see cref="DeserializeDecryptDequantizeBatch"/>.
    /// </summary>
    /// <param name="rows">The raw rows, as given to the estimator's Predict.</param>
    /// <exception cref="ArgumentException">No rows, or a row with the wrong number of features or a non-finite
    /// value.</exception>
    public byte[] QuantizeEncryptSerializeBatch(float[][] rows) => _core.QuantizeEncryptSerializeBatch(rows);

    /// <summary>Scales, quantizes and encrypts many rows of raw float64 features into one message.</summary>
    /// <param name="rows">The raw rows.</param>
    public byte[] QuantizeEncryptSerializeBatch(double[][] rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return _core.QuantizeEncryptSerializeBatch(
            Array.ConvertAll(rows, row => row is null ? null! : Array.ConvertAll(row, v => (float)v)));
    }

    /// <summary>
    /// The features of one raw row outside the range the circuit was calibrated for (its calibration rows widened
    /// by the compile's range margin). Such a row still runs, but may overflow an accumulator and decrypt to
    /// another answer than the clear model's.
    /// </summary>
    /// <param name="row">The raw features.</param>
    /// <exception cref="ArgumentException">The row has the wrong number of features.</exception>
    public RangeCheck CheckRange(float[] row)
    {
        var check = _core.CheckRange(row);
        return new RangeCheck(
            check.Features.Select(f => new OutOfRangeFeature(f.Column, f.Value, f.Min, f.Max)).ToArray());
    }

    /// <summary>The features of one raw float64 row outside the calibrated range (see <see cref="CheckRange(float[])"/>).</summary>
    /// <param name="row">The raw features.</param>
    public RangeCheck CheckRange(double[] row)
    {
        ArgumentNullException.ThrowIfNull(row);
        return CheckRange(Array.ConvertAll(row, v => (float)v));
    }

    /// <summary>Decrypts a server answer to the last layer's integer accumulators.</summary>
    /// <param name="result">The bytes the server returned.</param>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">The bytes are damaged or for another model.</exception>
    public long[] DeserializeDecrypt(byte[] result) => _core.DeserializeDecrypt(result);

    /// <summary>Decrypts and dequantizes a server answer: class probabilities (classifier) or values (regressor).</summary>
    /// <param name="result">The bytes the server returned.</param>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">The bytes are damaged or for another model.</exception>
    public double[] DeserializeDecryptDequantize(byte[] result) => _core.DeserializeDecryptDequantize(result);

    /// <summary>Decrypts a server's answer to a batch: each row's integer accumulators, in the rows' order.</summary>
    /// <param name="result">The bytes the server returned for a batch.</param>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">The bytes are damaged, for another model, or one row's
    /// answer.</exception>
    public long[][] DeserializeDecryptBatch(byte[] result) => _core.DeserializeDecryptBatch(result);

    /// <summary>Decrypts and dequantizes a server's answer to a batch: each row's probabilities or values.</summary>
    /// <param name="result">The bytes the server returned for a batch.</param>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">The bytes are damaged, for another model, or one row's
    /// answer.</exception>
    public double[][] DeserializeDecryptDequantizeBatch(byte[] result) => _core.DeserializeDecryptDequantizeBatch(result);
}

/// <summary>One feature of a row outside the range the circuit was calibrated for.</summary>
/// <param name="Column">The feature's index.</param>
/// <param name="Value">Its value in the row.</param>
/// <param name="Min">The smallest value the circuit was calibrated for.</param>
/// <param name="Max">The largest value the circuit was calibrated for.</param>
public sealed record OutOfRangeFeature(int Column, double Value, double Min, double Max);

/// <summary>Where one row stands against the feature range the circuit was calibrated for.</summary>
/// <param name="Features">The features outside the range (empty when the row is inside).</param>
public sealed record RangeCheck(IReadOnlyList<OutOfRangeFeature> Features)
{
    /// <summary>True when every feature lies in the calibrated range: the encrypted result equals the clear one.</summary>
    public bool InRange => Features.Count == 0;
}

/// <summary>
/// The compute server's side: runs the saved circuit on ciphertexts with evaluation keys only. Keys can be registered
/// once (kept under a memory budget) and referred to by id.
/// </summary>
public sealed class FheModelServer
{
    private readonly CoreServer _core;

    /// <summary>A server for the model saved in <paramref name="modelDirectory"/>.</summary>
    /// <param name="modelDirectory">A directory written by <see cref="FheModelDev"/>.</param>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">The server artifact is missing or damaged.</exception>
    public FheModelServer(string modelDirectory) => _core = new CoreServer(modelDirectory);

    /// <summary>The client artifact's bytes, to hand to clients.</summary>
    public byte[] ClientArtifact => _core.ClientArtifact;

    /// <summary>
    /// The largest number of rows one batch message may carry (default 256); a larger batch is refused as
    /// malformed data.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Set below 1.</exception>
    public int MaxBatchRows
    {
        get => _core.MaxBatchRows;
        set => _core.MaxBatchRows = value;
    }

    /// <summary>
    /// Runs the model on a client's ciphertexts (one row, or a batch whose rows run in parallel) with its evaluation
    /// keys; returns the encrypted answer (one row's, or the batch's).
    /// </summary>
    /// <param name="ciphertexts">From <see cref="FheModelClient.QuantizeEncryptSerialize(float[])"/> or
    /// <see cref="FheModelClient.QuantizeEncryptSerializeBatch(float[][])"/>.</param>
    /// <param name="evaluationKeys">From <see cref="FheModelClient.EvaluationKeys"/>.</param>
    /// <exception cref="FheNet.Deploy.InvalidFheDataException">Damaged data, or keys/ciphertexts of another model.</exception>
    public byte[] Run(byte[] ciphertexts, byte[] evaluationKeys) => _core.Run(ciphertexts, evaluationKeys);

    /// <summary>Loads and keeps evaluation keys; returns their id (the SHA-256 of the bytes).</summary>
    /// <param name="evaluationKeys">From <see cref="FheModelClient.EvaluationKeys"/>.</param>
    public string RegisterKeys(byte[] evaluationKeys) => _core.RegisterKeys(evaluationKeys);

    /// <summary>Runs the model with registered keys.</summary>
    /// <param name="keyId">An id from <see cref="RegisterKeys"/>.</param>
    /// <param name="ciphertexts">The client's ciphertexts: one row or a batch.</param>
    /// <exception cref="FheNet.Deploy.EvaluationKeysNotFoundException">Unknown or evicted keys: register them again.</exception>
    public byte[] Run(string keyId, byte[] ciphertexts) => _core.Run(keyId, ciphertexts);

    /// <summary>Runs the model with registered keys on a worker thread.</summary>
    /// <param name="keyId">An id from <see cref="RegisterKeys"/>.</param>
    /// <param name="ciphertexts">The client's ciphertexts.</param>
    /// <param name="cancellationToken">Checked before the run starts.</param>
    public Task<byte[]> RunAsync(string keyId, byte[] ciphertexts, CancellationToken cancellationToken = default) =>
        Task.Run(() => _core.Run(keyId, ciphertexts), cancellationToken);
}
