namespace FheNet.Server

open System.IO
open System.Threading

/// What the HTTP server needs from a model: the server side of a compiled FHE model. The server only stores keys,
/// bounds concurrency and moves bytes; everything cryptographic happens behind this interface. Implementations must
/// be thread-safe: several evaluations run at once, each with its own keys object.
type IInferenceBackend =

    /// The client artifact (input quantizers, output post-processing, parameters; nothing secret), served verbatim at
    /// <c>GET /client</c>.
    abstract ClientArtifact: byte[]

    /// Deserializes and validates evaluation keys uploaded to <c>POST /keys</c>. Returns the loaded keys object,
    /// handed back to <see cref="M:FheNet.Server.IInferenceBackend.Evaluate"/>, and its size in memory in bytes,
    /// charged to the key store's budget. Raises <see cref="T:FheNet.Deploy.InvalidFheDataException"/> for bytes
    /// that are not valid evaluation keys of this model (answered with HTTP 400 and the reason).
    abstract LoadEvaluationKeys: serialized: byte[] -> struct (obj * int64)

    /// Runs the encrypted model: the keys object from <c>LoadEvaluationKeys</c> and serialized ciphertexts give the
    /// serialized encrypted result. CPU-heavy (seconds); called off the request threads, at most the configured
    /// number at once. Raises <see cref="T:FheNet.Deploy.InvalidFheDataException"/> for bytes that are not valid
    /// ciphertexts of this model, and should check <c>cancellation</c> between steps: it is cancelled when the client
    /// disconnects (an OperationCanceledException then ends the request without an answer).
    abstract Evaluate: evaluationKeys: obj * ciphertexts: byte[] * cancellation: CancellationToken -> byte[]

/// A backend that knows the exact sizes of what it accepts (from its parameter set), so the server refuses any other
/// size before reading a byte, and that loads evaluation keys from a stream as they arrive, without a buffer of the
/// declared size.
type IBoundedInferenceBackend =
    inherit IInferenceBackend

    /// The exact size in bytes of serialized evaluation keys (the body of <c>POST /keys</c>).
    abstract EvaluationKeyBytes: int64

    /// The exact size in bytes of one serialized input row (the body of <c>POST /predict</c>).
    abstract CiphertextBytes: int64

    /// The exact size in bytes of a serialized batch of <c>rows</c> input rows (also a body of <c>POST /predict</c>).
    abstract CiphertextBatchBytes: rows: int -> int64

    /// The largest number of rows a batch may carry.
    abstract MaxBatchRows: int

    /// Reads, validates and prepares evaluation keys of exactly <c>EvaluationKeyBytes</c> bytes from a stream; the
    /// same contract as the byte-array overload. Reading stops (with an exception) when the stream's reads are
    /// cancelled, and <c>cancellation</c> is checked before the keys are prepared.
    abstract LoadEvaluationKeys: source: Stream * cancellation: CancellationToken -> struct (obj * int64)

/// The backend of a saved FHE model: FheModelServer's deserialization, key preparation and encrypted evaluation.
[<Sealed>]
type FheBackend(model: FheNet.Deploy.FheModelServer) =

    /// The backend of the model saved in a directory by FheModelDev(...).Save(directory).
    new(modelDirectory: string) = FheBackend(FheNet.Deploy.FheModelServer modelDirectory)

    /// The model served.
    member _.Model = model

    interface IInferenceBackend with
        member _.ClientArtifact = model.ClientArtifact

        member _.LoadEvaluationKeys serialized =
            let keys = model.LoadEvaluationKeys serialized
            struct (keys :> obj, FheNet.Deploy.FheModelServer.MemoryBytes keys)

        member _.Evaluate(keys, ciphertexts, cancellation) =
            model.Evaluate(keys :?> FheNet.Fhe.PreparedCircuit, ciphertexts, cancellation)

    interface IBoundedInferenceBackend with
        member _.EvaluationKeyBytes = FheNet.Deploy.FramedSize.evaluationKeys model.Circuit.Parameters

        member _.CiphertextBytes =
            FheNet.Deploy.FramedSize.inputRow model.Circuit.Model.Layers[0].Weights[0].Length

        member _.CiphertextBatchBytes rows =
            FheNet.Deploy.FramedSize.inputBatch model.Circuit.Model.Layers[0].Weights[0].Length rows

        member _.MaxBatchRows = model.MaxBatchRows

        member this.LoadEvaluationKeys(source: Stream, cancellation: CancellationToken) =
            let limit = (this :> IBoundedInferenceBackend).EvaluationKeyBytes
            cancellation.ThrowIfCancellationRequested()
            let keys = model.LoadEvaluationKeys(source, limit, cancellation)
            struct (keys :> obj, FheNet.Deploy.FheModelServer.MemoryBytes keys)
