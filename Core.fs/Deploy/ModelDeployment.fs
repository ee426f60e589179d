namespace FheNet.Deploy

open System
open System.Collections.Generic
open System.Buffers.Binary
open System.IO
open System.Runtime.ExceptionServices
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open FheNet
open FheNet.Autodiff
open FheNet.Integer
open FheNet.Numerics
open FheNet.Tfhe
open FheNet.Fhe
open FheNet.Preprocessing

/// The files of a model directory (written by FheModelDev.Save) and of a client's key directory.
module ModelFiles =

    /// The server artifact: the circuit (integer weights, tables, rounding, parameter set). Nothing secret.
    [<Literal>]
    let ServerArtifact = "server.fhe"

    /// The client artifact: quantizer, encodings, post-processing, parameter set. Nothing secret.
    [<Literal>]
    let ClientArtifact = "client.fhe"

    /// client.fhe signed by the model owner (ArtifactSigning), written by Save with the owner's key; a server
    /// serves it instead of client.fhe, so that clients can verify what they download.
    [<Literal>]
    let SignedClientArtifact = "client.fhe.signed"

    /// A small JSON description for people and tools (versions, parameter set, model id, sizes); never read back.
    [<Literal>]
    let Manifest = "manifest.json"

    /// The client's secret key, readable by its owner only.
    [<Literal>]
    let ClientKey = "client.key"

    /// The client's compressed evaluation keys, as uploaded to servers.
    [<Literal>]
    let EvaluationKeys = "evaluation.key"

/// A model compiled for FHE, ready for deployment: the fitted and compiled estimators implement it.
type ICompiledFheModel =
    /// The compiled circuit.
    abstract Circuit: Circuit
    /// The task and the post-processing of the outputs.
    abstract Task: ModelTask
    /// The scaling of raw features and the feature range the circuit was calibrated for.
    abstract Inputs: InputContract

module internal Available =

    /// Reads data whose every byte is at hand (a buffer, a file): the payload limit is the data's size, so a
    /// declared payload beyond it means the data was cut short, which is reported as Truncated.
    let read (read: unit -> 'T) : 'T =
        try
            read ()
        with :? InvalidFheDataException as e when e.Error.IsTooLarge ->
            raise (InvalidFheDataException FormatError.Truncated)

/// Serialized forms of every deployment object: each one framed by <see cref="T:FheNet.Deploy.Container"/>, with
/// its own object kind and the context that binds it (the artifacts' fixed context, or the model context for keys
/// and ciphertexts). Reading validates everything and raises only InvalidFheDataException on bad bytes.
module FheSerializer =

    let private ofBytes (bytes: byte[]) kind context read =
        if isNull (box bytes) then
            raise (ArgumentNullException "bytes")
        Available.read (fun () -> Container.ofBytes bytes kind context read)

    /// The server artifact of a circuit.
    let circuitToBytes (circuit: Circuit) =
        Container.toBytes ObjectKind.ServerArtifact ModelContext.artifacts (fun w -> CircuitFormat.write w circuit)

    /// The circuit of a server artifact.
    let circuitOfBytes (bytes: byte[]) : Circuit =
        ofBytes bytes ObjectKind.ServerArtifact ModelContext.artifacts CircuitFormat.read

    /// The client artifact's bytes.
    let clientArtifactToBytes (artifact: ClientArtifact) =
        Container.toBytes ObjectKind.ClientArtifact ModelContext.artifacts (fun w -> ClientArtifactFormat.write w artifact)

    /// A client artifact from its bytes.
    let clientArtifactOfBytes (bytes: byte[]) : ClientArtifact =
        ofBytes bytes ObjectKind.ClientArtifact ModelContext.artifacts ClientArtifactFormat.read

    /// A client key (secret) of the model with the given context.
    let clientKeyToBytes (context: byte[]) (key: ClientKey) =
        Container.toBytes ObjectKind.ClientKey context (fun w -> KeyFormat.writeClientKey w key)

    /// A client key of the artifact's model (ParameterMismatch for another model's).
    let clientKeyOfBytes (artifact: ClientArtifact) (bytes: byte[]) : ClientKey =
        ofBytes bytes ObjectKind.ClientKey artifact.ModelContext (KeyFormat.readClientKey artifact.Parameters)

    /// Compressed evaluation keys of the model with the given context.
    let evaluationKeysToBytes (context: byte[]) (key: CompressedServerKey) =
        Container.toBytes ObjectKind.CompressedEvaluationKey context (fun w -> KeyFormat.writeEvaluationKeys w key)

    /// Compressed evaluation keys of the model with this parameter set and context.
    let evaluationKeysOfBytes (parameters: TfheParameters) (context: byte[]) (bytes: byte[]) : CompressedServerKey =
        ofBytes bytes ObjectKind.CompressedEvaluationKey context (KeyFormat.readEvaluationKeys parameters)

    /// Streams compressed evaluation keys (hundreds of MB) to any stream, without building them in memory first.
    let writeEvaluationKeys (destination: Stream) (context: byte[]) (key: CompressedServerKey) =
        Container.write destination ObjectKind.CompressedEvaluationKey context (fun w -> KeyFormat.writeEvaluationKeys w key)

    /// Reads compressed evaluation keys from a stream, refusing a payload over maxPayloadBytes before reading it.
    let readEvaluationKeys (source: Stream) (parameters: TfheParameters) (context: byte[]) (maxPayloadBytes: int64) =
        Container.read source ObjectKind.CompressedEvaluationKey context maxPayloadBytes (KeyFormat.readEvaluationKeys parameters)

    /// One compressed input row.
    let inputsToBytes (context: byte[]) (row: SeededLweRow) =
        Container.toBytes ObjectKind.CompressedCiphertexts context (fun w -> CiphertextFormat.writeRow w row)

    /// One compressed input row of `features` ciphertexts.
    let inputsOfBytes (parameters: TfheParameters) (features: int) (context: byte[]) (bytes: byte[]) : SeededLweRow =
        ofBytes bytes ObjectKind.CompressedCiphertexts context (CiphertextFormat.readRow parameters features)

    /// A batch of compressed input rows.
    let inputBatchToBytes (context: byte[]) (rows: SeededLweRow[]) =
        Container.toBytes ObjectKind.CompressedCiphertextBatch context (fun w -> CiphertextFormat.writeRows w rows)

    /// A batch of 1 to `maxRows` compressed input rows of `features` ciphertexts each.
    let inputBatchOfBytes (parameters: TfheParameters) (features: int) (maxRows: int) (context: byte[]) (bytes: byte[]) =
        ofBytes bytes ObjectKind.CompressedCiphertextBatch context (CiphertextFormat.readRows parameters features maxRows)

    /// True when the bytes are framed as a batch of input rows (their header's object kind); a single row, or bytes
    /// that are no FheNet message, give false.
    let isInputBatch (bytes: byte[]) =
        not (isNull (box bytes))
        && bytes.Length >= Container.HeaderBytes
        && BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan(bytes, 10, 2)) = uint16 ObjectKind.CompressedCiphertextBatch

    /// The output ciphertexts of a batch of rows.
    let outputBatchToBytes (context: byte[]) (rows: LweCiphertext[][]) =
        Container.toBytes ObjectKind.CiphertextBatch context (fun w -> CiphertextFormat.writeOutputRows w rows)

    /// The `count` output ciphertexts of each row of a batch.
    let outputBatchOfBytes (parameters: TfheParameters) (count: int) (context: byte[]) (bytes: byte[]) : LweCiphertext[][] =
        ofBytes bytes ObjectKind.CiphertextBatch context (CiphertextFormat.readOutputRows parameters count)

    /// The output ciphertexts of one row.
    let outputsToBytes (context: byte[]) (outputs: LweCiphertext[]) =
        Container.toBytes ObjectKind.Ciphertexts context (fun w -> CiphertextFormat.writeOutputs w outputs)

    /// The `count` output ciphertexts of one row.
    let outputsOfBytes (parameters: TfheParameters) (count: int) (context: byte[]) (bytes: byte[]) : LweCiphertext[] =
        ofBytes bytes ObjectKind.Ciphertexts context (CiphertextFormat.readOutputs parameters count)

/// File access shared by the deployment types: atomic writes (owner-only for secrets), validated reads.
module internal Files =

    let private ownerOnly = UnixFileMode.UserRead ||| UnixFileMode.UserWrite

    /// Creates a directory (owner-only on Unix when it holds secrets).
    /// Owner-only access on Windows (Unix uses file modes): the current user gets full control and inherited
    /// access rules are removed, so that other accounts cannot read a secret key.
    let private restrictToOwner (file: FileStream) =
        if OperatingSystem.IsWindows() then
            let owner = nonNull (Security.Principal.WindowsIdentity.GetCurrent().User)
            let security = Security.AccessControl.FileSecurity()
            security.SetAccessRuleProtection(true, false)
            security.SetOwner owner
            security.AddAccessRule(
                Security.AccessControl.FileSystemAccessRule(
                    owner,
                    Security.AccessControl.FileSystemRights.FullControl,
                    Security.AccessControl.AccessControlType.Allow
                )
            )
            FileSystemAclExtensions.SetAccessControl(file, security)

    let createDirectory (path: string) (secret: bool) =
        if secret && not (OperatingSystem.IsWindows()) then
            Directory.CreateDirectory(path, ownerOnly ||| UnixFileMode.UserExecute) |> ignore
        else
            Directory.CreateDirectory path |> ignore

    /// Streams `write` into a temporary file then renames it over `path`, so a reader never sees a partial file.
    /// A secret file is created with mode 0600 on Unix (no moment where others could open it).
    let write (path: string) (secret: bool) (write: Stream -> unit) =
        let temp = path + "." + Guid.NewGuid().ToString "N" + ".tmp"
        let options = FileStreamOptions(Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None)
        if secret && not (OperatingSystem.IsWindows()) then
            options.UnixCreateMode <- Nullable ownerOnly
        let writeTemp () =
            use file = new FileStream(temp, options)
            // Restricted before a byte of the secret is written.
            if secret then
                restrictToOwner file
            use buffered = new BufferedStream(file, 1 <<< 20)
            write buffered
            buffered.Flush()
            file.Flush true
        try
            writeTemp ()
            File.Move(temp, path, true)
            if secret && not (OperatingSystem.IsWindows()) then
                File.SetUnixFileMode(path, ownerOnly)
        with _ ->
            File.Delete temp
            reraise ()

    /// Reads one framed object from a file, streaming; the file must hold exactly that object.
    let read (path: string) (missing: string) (kind: ObjectKind) (context: byte[]) (read: PayloadReader -> 'T) : 'T =
        if not (File.Exists path) then
            raise (FileNotFoundException(missing, path))
        use file = File.OpenRead path
        use buffered = new BufferedStream(file, 1 <<< 20)
        let value = Available.read (fun () -> Container.read buffered kind context file.Length read)
        if buffered.ReadByte() <> -1 then
            raise (InvalidFheDataException(FormatError.Malformed "bytes after the checksum"))
        value

/// A saved model directory: the two artifacts, checked to belong together.
module internal SavedModel =

    let private missing (dir: string) =
        $"No FheNet model in %s{dir}: save one with FheModelDev(compiledModel).Save(\"%s{dir}\")."

    let readClient (dir: string) =
        Files.read (Path.Combine(dir, ModelFiles.ClientArtifact)) (missing dir) ObjectKind.ClientArtifact ModelContext.artifacts ClientArtifactFormat.read

    /// The circuit and client artifact of a directory; ParameterMismatch when the client artifact is another model's.
    let read (dir: string) : Circuit * ClientArtifact =
        let circuit =
            Files.read (Path.Combine(dir, ModelFiles.ServerArtifact)) (missing dir) ObjectKind.ServerArtifact ModelContext.artifacts CircuitFormat.read
        let client = readClient dir
        if ClientArtifactFormat.ofCircuit circuit client.Task client.Inputs <> client then
            raise (InvalidFheDataException FormatError.ParameterMismatch)
        circuit, client

/// The model owner's side: writes a compiled model's server and client artifacts (nothing secret in either) and
/// reads them back.
[<Sealed>]
type FheModelDev(circuit: Circuit, task: ModelTask, inputs: InputContract) =
    let client = ClientArtifactFormat.ofCircuit circuit task inputs

    /// The artifacts of a fitted, compiled estimator.
    new(model: ICompiledFheModel) = FheModelDev(model.Circuit, model.Task, model.Inputs)

    /// The artifacts of a circuit whose inputs are used as they are, unbounded.
    new(circuit: Circuit, task: ModelTask) =
        FheModelDev(circuit, task, InputContract.identity circuit.Model.Layers[0].Weights[0].Length)

    /// The compiled circuit (the server artifact's content).
    member _.Circuit = circuit

    /// The client artifact.
    member _.ClientArtifact = client

    /// Save, then <c>client.fhe.signed</c>: client.fhe signed with the model owner's private P-256 key, which the
    /// server of this directory serves at GET /client, for clients that trust the owner's public key
    /// (ArtifactTrust.OwnerPublicKey).
    member this.Save(directory: string, owner: Security.Cryptography.ECDsa) =
        this.Save directory
        let signed = ArtifactSigning.sign owner (FheSerializer.clientArtifactToBytes client)
        Files.write (Path.Combine(directory, ModelFiles.SignedClientArtifact)) false (fun s -> s.Write(signed, 0, signed.Length))

    /// Writes <c>server.fhe</c>, <c>client.fhe</c> and <c>manifest.json</c> into <c>directory</c> (created if
    /// needed; existing artifacts are replaced atomically).
    member _.Save(directory: string) =
        if String.IsNullOrWhiteSpace directory then
            raise (ArgumentException("pass the directory to save the model in", "directory"))
        Files.createDirectory directory false
        let serverPath = Path.Combine(directory, ModelFiles.ServerArtifact)
        let clientPath = Path.Combine(directory, ModelFiles.ClientArtifact)
        Files.write serverPath false (fun s ->
            Container.write s ObjectKind.ServerArtifact ModelContext.artifacts (fun w -> CircuitFormat.write w circuit))
        Files.write clientPath false (fun s ->
            Container.write s ObjectKind.ClientArtifact ModelContext.artifacts (fun w -> ClientArtifactFormat.write w client))
        let manifest =
            {| format = "FheNet model"
               formatVersion = int Container.FormatVersion
               library = string (typeof<FheModelDev>.Assembly.GetName().Version)
               parameterSet = circuit.Parameters.Name
               modelId = Convert.ToHexStringLower client.ModelContext
               task =
                match task with
                | ModelTask.Classification _ -> "classification"
                | ModelTask.Regression _ -> "regression"
               features = client.Features
               outputs = client.Outputs
               bootstrapsPerSample = circuit.BootstrapsPerSample
               serverArtifactBytes = FileInfo(serverPath).Length
               clientArtifactBytes = FileInfo(clientPath).Length |}
        Files.write (Path.Combine(directory, ModelFiles.Manifest)) false (fun s ->
            JsonSerializer.Serialize(s, manifest, JsonSerializerOptions(WriteIndented = true)))

    /// Reads a saved model directory; raises InvalidFheDataException for damaged or mismatched artifacts and
    /// FileNotFoundException when there is none.
    static member Load(directory: string) =
        let circuit, client = SavedModel.read directory
        FheModelDev(circuit, client.Task, client.Inputs)

    /// The model saved in a directory, checked to be compiled from this integer model (same input quantizer,
    /// weights and biases; a rounding threshold may have changed the shifts) with this feature scaler: how a fitted
    /// estimator gets its compiled form back. ArgumentException when the directory holds another model.
    static member LoadCompiledOf(model: IntegerModel, scaler: FeatureScaler, directory: string) : FheModelDev =
        let dev = FheModelDev.Load directory
        let circuit = dev.Circuit
        let same (a: IntegerLayer) (b: IntegerLayer) = a.Weights = b.Weights && a.Biases = b.Biases
        let saved = circuit.Model
        if saved.InputScale <> model.InputScale
           || saved.InputCodes <> model.InputCodes
           || saved.Layers.Length <> model.Layers.Length
           || not (Array.forall2 same saved.Layers model.Layers) then
            raise (ArgumentException($"The model saved in %s{directory} was compiled from another network; save this one with FheModelDev.", "directory"))
        if dev.ClientArtifact.Inputs.Scaler <> scaler then
            raise (ArgumentException($"The model saved in %s{directory} scales its features differently; save this one with FheModelDev.", "directory"))
        dev

/// The client's keys: the secret key and the serialized evaluation keys made from it.
type private ClientKeys = { Secret: ClientKey; Evaluation: byte[] }

/// The data owner's side: keys (the secret one never leaves keyDirectory), quantization + encryption of inputs,
/// decryption + dequantization of results. Thread-safe. WipeSecretKey() wipes the secret key it holds in memory.
[<Sealed>]
type FheModelClient(artifact: ClientArtifact, keyDirectory: string) =
    do
        if String.IsNullOrWhiteSpace keyDirectory then
            raise (ArgumentException("pass the directory that holds (or will hold) the client's keys", "keyDirectory"))

    let gate = obj ()
    let mutable keys: ClientKeys option = None
    let secretPath = Path.Combine(keyDirectory, ModelFiles.ClientKey)
    let evaluationPath = Path.Combine(keyDirectory, ModelFiles.EvaluationKeys)
    let context = artifact.ModelContext
    let inputEncoding = Encoding.WithPadding(1 <<< artifact.InputAccumulatorBits)
    let outputEncoding = Encoding.WithPadding(1 <<< artifact.OutputAccumulatorBits)

    let checkWidth (x: float32[]) =
        if isNull (box x) then
            raise (ArgumentNullException "x")
        if x.Length <> artifact.Features then
            raise (InvalidShapeException("x", $"has %d{x.Length} features; the model takes %d{artifact.Features}"))

    let missingKeys = $"No FheNet keys in %s{keyDirectory}: call GenerateKeys() first."

    let readSecret () =
        Files.read secretPath missingKeys ObjectKind.ClientKey context (KeyFormat.readClientKey artifact.Parameters)

    let writeEvaluation (secret: ClientKey) =
        let compressed = CompressedServerKey.generate secret
        Files.write evaluationPath false (fun s -> FheSerializer.writeEvaluationKeys s context compressed)

    /// Loads the keys of keyDirectory (making the evaluation keys again if only the secret key is there).
    let load () =
        let secret = readSecret ()
        if not (File.Exists evaluationPath) then
            writeEvaluation secret
        let evaluation = File.ReadAllBytes evaluationPath
        // Validated like any received bytes: a damaged or foreign file is refused here, not by the server.
        FheSerializer.evaluationKeysOfBytes artifact.Parameters context evaluation |> ignore
        { Secret = secret; Evaluation = evaluation }

    let mutable disposed = false

    /// Holds other keys (or none), wiping the secret key held before.
    let replaceKeys (next: ClientKeys option) =
        match keys with
        | Some old -> ClientKey.wipe old.Secret
        | None -> ()
        keys <- next

    let requireUndisposed () =
        if disposed then
            raise (ObjectDisposedException(nameof FheModelClient, "this client's secret key was wiped by WipeSecretKey()"))

    let current () =
        lock gate (fun () ->
            requireUndisposed ()
            match keys with
            | Some k -> k
            | None ->
                let k = load ()
                keys <- Some k
                k)

    /// A client for the model saved in modelDirectory (its client.fhe), with keys in keyDirectory.
    new(modelDirectory: string, keyDirectory: string) = new FheModelClient(SavedModel.readClient modelDirectory, keyDirectory)

    /// A client for a client artifact received as bytes (e.g. from a server's GET /client), signed or not; its
    /// parameter set must pass the 128-bit security check (UntrustedArtifactException otherwise).
    new(clientArtifact: byte[], keyDirectory: string) =
        new FheModelClient(clientArtifact, keyDirectory, ArtifactTrust.defaults)

    /// A client for a received client artifact checked against what the client trusts: the model owner's signature,
    /// the expected model, the security of its parameter set. Raises UntrustedArtifactException or
    /// InvalidFheDataException before any key is generated.
    new(clientArtifact: byte[], keyDirectory: string, trust: ArtifactTrust) =
        new FheModelClient(ArtifactTrust.accept trust clientArtifact, keyDirectory)

    /// The client artifact.
    member _.Artifact = artifact

    /// The class labels of a classifier (empty for a regressor), in the order of the probabilities.
    member _.Classes =
        match artifact.Task with
        | ModelTask.Classification classes -> Array.copy classes
        | ModelTask.Regression _ -> [||]

    /// Loads the keys of keyDirectory, or generates and saves them when there are none (or when <c>force</c>):
    /// the secret key with owner-only permissions, the compressed evaluation keys beside it. Existing keys of
    /// another model are refused (InvalidFheDataException, ParameterMismatch) rather than overwritten, unless forced.
    member _.GenerateKeys(?force: bool) =
        lock gate (fun () ->
            requireUndisposed ()
            if defaultArg force false || not (File.Exists secretPath) then
                // The client key, the compressed evaluation key and its serialized bytes.
                let memory = MemoryEstimate.create artifact.Parameters 0 1
                MemoryEstimate.ensureWithin
                    (MemoryBudget.defaultBytes ())
                    "Generating the keys"
                    artifact.Parameters
                    (MemoryEstimate.describe memory)
                    (memory.ClientKeyBytes + 2L * memory.CompressedEvaluationKeyBytes)
                let secret = ClientKey.generate artifact.Parameters
                Files.createDirectory keyDirectory true
                Files.write secretPath true (fun s ->
                    Container.write s ObjectKind.ClientKey context (fun w -> KeyFormat.writeClientKey w secret))
                writeEvaluation secret
                ClientKey.wipe secret
            replaceKeys (Some(load ())))

    /// The file of the serialized evaluation keys (for streaming them somewhere without loading them).
    member _.EvaluationKeysPath = evaluationPath

    /// The serialized compressed evaluation keys to upload to a server (bootstrapping and keyswitching keys as
    /// seeds and bodies; no secret key material).
    member _.EvaluationKeys() : byte[] = Array.copy (current ()).Evaluation

    /// The input codes of one row of raw features: scaled as the model learned in fit, then clip(round(x / scale)),
    /// as the integer model quantizes.
    member _.Quantize(x: float32[]) : int[] =
        checkWidth x
        FeatureScaler.checkFinite "x" [| x |]
        FeatureScaler.transformRow artifact.Inputs.Scaler x
        |> Array.map (fun v -> int (CodeSpec.code artifact.InputCodes (v / artifact.InputScale)))

    /// The features of one raw row outside the range the circuit was calibrated for (such a row may overflow an
    /// accumulator and differ from the clear model); an empty result when it is inside.
    member _.CheckRange(x: float32[]) : RangeCheck =
        checkWidth x
        FeatureRange.check artifact.Inputs.Range x

    /// Quantizes one row, encrypts its codes (one public seed for the whole row) and serializes them.
    member this.QuantizeEncryptSerialize(x: float32[]) : byte[] =
        let codes = this.Quantize x
        let row = SeededLweRow.encrypt (current ()).Secret inputEncoding (codes |> Array.map int64)
        FheSerializer.inputsToBytes context row

    /// Quantizes and encrypts many rows (each with its own public seed) into one message, which a server evaluates
    /// under one set of keys; InvalidShapeException for no rows or a row of another width.
    member this.QuantizeEncryptSerializeBatch(rows: float32[][]) : byte[] =
        if isNull (box rows) || rows.Length = 0 then
            raise (InvalidShapeException("rows", "must hold at least one row"))
        let codes = rows |> Array.map this.Quantize
        let secret = (current ()).Secret
        let encrypted = codes |> Array.map (fun c -> SeededLweRow.encrypt secret inputEncoding (c |> Array.map int64))
        FheSerializer.inputBatchToBytes context encrypted

    member private _.Decrypt(outputs: LweCiphertext[]) : int64[] =
        let secret = (current ()).Secret
        outputs |> Array.mapi (fun j c -> Lwe.decryptWith secret outputEncoding c - artifact.OutputOffsets[j])

    /// The output accumulators of the last layer from a server's serialized result.
    member this.DeserializeDecrypt(result: byte[]) : int64[] =
        this.Decrypt(FheSerializer.outputsOfBytes artifact.Parameters artifact.Outputs context result)

    /// The output accumulators of every row of a server's serialized batch result, in the rows' order.
    member this.DeserializeDecryptBatch(result: byte[]) : int64[][] =
        FheSerializer.outputBatchOfBytes artifact.Parameters artifact.Outputs context result |> Array.map this.Decrypt

    /// Real outputs of accumulators: class probabilities (softmax of the logits, as the estimator's PredictProba)
    /// or target values (as the estimator's PredictMulti).
    member _.Dequantize(accumulators: int64[]) : float[] =
        if isNull (box accumulators) || accumulators.Length <> artifact.Outputs then
            raise (InvalidShapeException("accumulators", $"must hold the model's %d{artifact.Outputs} outputs"))
        let values = accumulators |> Array.map (fun a -> float32 a * artifact.OutputScale)
        match artifact.Task with
        | ModelTask.Classification _ -> Tensor.row (Ad.softmaxRows (Tensor.ofRows [| values |])) 0 |> Array.map float
        | ModelTask.Regression(mean, std) -> values |> Array.mapi (fun j v -> float v * std[j] + mean[j])

    /// Decrypts a serialized result and dequantizes it: probabilities or values.
    member this.DeserializeDecryptDequantize(result: byte[]) : float[] = this.Dequantize(this.DeserializeDecrypt result)

    /// Decrypts a serialized batch result and dequantizes each row: one array of probabilities or values per row.
    member this.DeserializeDecryptDequantizeBatch(result: byte[]) : float[][] =
        this.DeserializeDecryptBatch result |> Array.map this.Dequantize

    /// Wipes the secret key held in memory (best effort: see ClientKey.wipe; the key file stays) and retires the
    /// client: it cannot encrypt or decrypt afterwards (ObjectDisposedException). Call it when done with the client.
    member _.WipeSecretKey() =
        lock gate (fun () ->
            replaceKeys None
            disposed <- true)

    /// Wipes the secret key held in memory (WipeSecretKey).
    interface IDisposable with
        member this.Dispose() = this.WipeSecretKey()

/// Evaluation keys with this id are not (or no longer) registered with the model server.
type EvaluationKeysNotFoundException(keyId: string) =
    inherit
        KeyNotFoundException(
            $"No evaluation keys registered under id %s{keyId} (never registered, or evicted to stay within the memory budget); register them again with RegisterKeys."
        )

    /// The unknown id.
    member _.KeyId = keyId

/// The compute side: runs the encrypted model with a client's evaluation keys; never sees a secret key. Keys may be
/// registered once (deserialized, decompressed and prepared, held in a KeyStore under a memory budget) and referred
/// to by id. Thread-safe.
[<Sealed>]
type FheModelServer(circuit: Circuit, clientArtifact: byte[], keyBudgetBytes: int64) =
    // A server whose model's prepared keys would not fit the process's memory budget refuses to start.
    do ResourceCheck.prepare (MemoryBudget.defaultBytes ()) circuit
    let context = ModelContext.ofCircuit circuit
    let store = KeyStore<PreparedCircuit>(keyBudgetBytes)
    let features = circuit.Model.Layers[0].Weights[0].Length
    let outputs = (Array.last circuit.Layers).Neurons
    let mutable maxBatchRows = FheModelServer.DefaultMaxBatchRows

    let evaluateRow (keys: PreparedCircuit) (cancellation: CancellationToken) (row: SeededLweRow) =
        let result = FheServer.evaluateCancellable cancellation keys (SeededLweRow.expand row)
        if result.Length <> outputs then
            raise (InvalidOperationException "the circuit produced a wrong number of outputs")
        result

    // The rows of a batch share the request's evaluation slot and use the cores in parallel.
    let evaluateRows (keys: PreparedCircuit) (cancellation: CancellationToken) (rows: SeededLweRow[]) =
        let results = Array.zeroCreate rows.Length
        try
            Parallel.For(0, rows.Length, ParallelOptions(CancellationToken = cancellation), fun i ->
                results[i] <- evaluateRow keys cancellation rows[i])
            |> ignore
        with :? AggregateException as e ->
            ExceptionDispatchInfo.Throw(e.InnerExceptions[0])
        results

    /// Default memory budget of registered keys: 4 GiB.
    static member DefaultKeyBudgetBytes = 4L <<< 30

    /// Default largest number of rows in one batch message: 256.
    static member DefaultMaxBatchRows = 256

    /// The server of a saved model directory, with a memory budget for registered keys.
    new(modelDirectory: string, keyBudgetBytes: int64) =
        let circuit, client = SavedModel.read modelDirectory
        let bytes = FheSerializer.clientArtifactToBytes client
        // A signed artifact is served instead, once it is checked to hold this directory's client.fhe.
        let signedPath = Path.Combine(modelDirectory, ModelFiles.SignedClientArtifact)
        let served =
            if File.Exists signedPath then
                let signed = File.ReadAllBytes signedPath
                if not (ArtifactSigning.isSigned signed) || ArtifactSigning.unwrap signed <> bytes then
                    raise (InvalidFheDataException FormatError.ParameterMismatch)
                signed
            else
                bytes
        FheModelServer(circuit, served, keyBudgetBytes)

    /// The server of a saved model directory (4 GiB of registered keys at most).
    new(modelDirectory: string) = FheModelServer(modelDirectory, FheModelServer.DefaultKeyBudgetBytes)

    /// The circuit run.
    member _.Circuit = circuit

    /// The serialized client artifact, for clients that download it.
    member _.ClientArtifact = Array.copy clientArtifact

    /// Deserializes, decompresses and prepares evaluation keys; InvalidFheDataException for bytes that are not
    /// evaluation keys of this model.
    member _.LoadEvaluationKeys(evaluationKeys: byte[]) : PreparedCircuit =
        let compressed = FheSerializer.evaluationKeysOfBytes circuit.Parameters context evaluationKeys
        FheServer.prepare circuit (CompressedServerKey.decompress compressed)

    /// <c>LoadEvaluationKeys</c> from a stream (a file, a request body), read as it arrives; a payload over
    /// maxPayloadBytes is refused (TooLarge) before it is read.
    member this.LoadEvaluationKeys(source: Stream, maxPayloadBytes: int64) : PreparedCircuit =
        this.LoadEvaluationKeys(source, maxPayloadBytes, CancellationToken.None)

    /// <c>LoadEvaluationKeys</c> from a stream, checking <c>cancellation</c> between reading, expanding and preparing.
    member _.LoadEvaluationKeys(source: Stream, maxPayloadBytes: int64, cancellation: CancellationToken) : PreparedCircuit =
        let compressed = FheSerializer.readEvaluationKeys source circuit.Parameters context maxPayloadBytes
        cancellation.ThrowIfCancellationRequested()
        let expanded = CompressedServerKey.decompress compressed
        cancellation.ThrowIfCancellationRequested()
        FheServer.prepare circuit expanded

    /// The largest number of rows one batch message may carry (larger batches are refused as malformed); at least 1.
    member _.MaxBatchRows
        with get () = maxBatchRows
        and set (rows: int) =
            Guard.inRange "MaxBatchRows" 1 Int32.MaxValue rows
            maxBatchRows <- rows

    /// Runs the model on one serialized input row, or on every row of a serialized batch (rows in parallel; the
    /// result is then a batch of outputs in the rows' order), with prepared keys; stops when <c>cancellation</c> fires.
    member _.Evaluate(keys: PreparedCircuit, ciphertexts: byte[], cancellation: CancellationToken) : byte[] =
        if not (obj.ReferenceEquals(keys.Circuit, circuit)) && keys.Circuit <> circuit then
            raise (ArgumentException("these keys were prepared for another model", "keys"))
        if FheSerializer.isInputBatch ciphertexts then
            let rows = FheSerializer.inputBatchOfBytes circuit.Parameters features maxBatchRows context ciphertexts
            cancellation.ThrowIfCancellationRequested()
            FheSerializer.outputBatchToBytes context (evaluateRows keys cancellation rows)
        else
            let row = FheSerializer.inputsOfBytes circuit.Parameters features context ciphertexts
            cancellation.ThrowIfCancellationRequested()
            FheSerializer.outputsToBytes context (evaluateRow keys cancellation row)

    /// Runs the model on one serialized input row with serialized evaluation keys (loaded for this call only).
    member this.Run(ciphertexts: byte[], evaluationKeys: byte[]) : byte[] =
        this.Evaluate(this.LoadEvaluationKeys evaluationKeys, ciphertexts, CancellationToken.None)

    /// Registers evaluation keys (loaded once; the same bytes again return the same id at no cost) and returns their
    /// id. KeyTooLargeException when they alone exceed the budget.
    member this.RegisterKeys(evaluationKeys: byte[]) : string =
        store.Register(
            evaluationKeys,
            Func<_, _>(fun bytes ->
                let prepared = this.LoadEvaluationKeys bytes
                struct (prepared, FheModelServer.MemoryBytes prepared))
        )

    /// Runs the model with registered keys; EvaluationKeysNotFoundException when the id is unknown or evicted.
    member this.Run(keyId: string, ciphertexts: byte[]) : byte[] =
        match this.TryGetKeys keyId with
        | Some keys -> this.Evaluate(keys, ciphertexts, CancellationToken.None)
        | None -> raise (EvaluationKeysNotFoundException keyId)

    /// The registered keys with this id, if held.
    member _.TryGetKeys(keyId: string) : PreparedCircuit option =
        let mutable keys = Unchecked.defaultof<PreparedCircuit>
        if store.TryGet(keyId, &keys) then Some keys else None

    /// Occupancy of the registered keys.
    member _.KeyStats = store.Stats

    /// Memory held by prepared keys: the expanded keyswitching key and the Fourier bootstrapping key.
    static member MemoryBytes(keys: PreparedCircuit) = keys.ServerKey.SizeBytes
