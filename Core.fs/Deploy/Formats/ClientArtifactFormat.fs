namespace FheNet.Deploy

open System
open System.Globalization
open System.IO
open System.Security.Cryptography
open FheNet
open FheNet.Autodiff
open FheNet.Quantization
open FheNet.Integer
open FheNet.Tfhe
open FheNet.Fhe
open FheNet.Preprocessing

/// What a deployed model does with its outputs, and what the client needs to post-process them.
[<RequireQualifiedAccess>]
type ModelTask =
    /// A classifier: one output per class (the logits), read as probabilities by a softmax; labels as text.
    | Classification of classes: string[]
    /// A regressor: the outputs are standardized targets, mapped back as value · std + mean per target.
    | Regression of targetMean: float[] * targetStd: float[]

/// Everything the client needs and nothing secret: the input quantizer, the encoding of the inputs and outputs,
/// the post-processing, the parameter set, and the model context that its keys and ciphertexts must carry.
type ClientArtifact =
    { Parameters: TfheParameters
      /// The context hash of this model's keys and ciphertexts (parameter set + circuit).
      ModelContext: byte[]
      /// Features per input row.
      Features: int
      /// The input quantizer: code = clip(round(x / InputScale)) with InputCodes' range and tie rule.
      InputScale: float32
      InputCodes: CodeSpec
      /// Bits of the first layer's accumulator encoding, at which input codes are encrypted.
      InputAccumulatorBits: int
      /// Output accumulators per row.
      Outputs: int
      /// Output j's accumulator arrives as acc + OutputOffsets[j] in OutputAccumulatorBits bits.
      OutputOffsets: int64[]
      OutputAccumulatorBits: int
      /// The real value of one output accumulator unit.
      OutputScale: float32
      Task: ModelTask
      /// The scaling of raw features before the quantizer, and the range the circuit was calibrated for.
      Inputs: InputContract }


/// Whether a client accepts a received parameter set that fails the 128-bit security check. A local decision of the
/// code that reads the artifact: the artifact's own Insecure mark is never trusted.
[<RequireQualifiedAccess>]
type InsecureParameters =
    /// Refuse the artifact (every client, by default).
    | Refuse
    /// Accept it: format tests on tiny sets only.
    | AllowForTests

/// Why a client refused a received client artifact.
[<RequireQualifiedAccess>]
type ArtifactRefusal =
    /// Its parameter set is below 128-bit security.
    | InsecureParameters of report: SecurityReport
    /// It is the artifact of another model than the one the client pinned.
    | UnexpectedModel of expected: byte[] * found: byte[]
    /// The client requires the model owner's signature and the artifact carries none.
    | Unsigned
    /// The signature does not verify under the owner's public key: the artifact was altered or signed by someone else.
    | BadSignature

    /// The reason in words, with what to do about it.
    member this.Describe() =
        match this with
        | InsecureParameters report ->
            SecurityVerdict.describeFailures report
            + " A client never generates keys under such a set, whatever the artifact says; ask the model owner for an artifact compiled with a secure set"
        | UnexpectedModel(expected, found) ->
            $"it is the artifact of model %s{Convert.ToHexStringLower found}, not of the pinned model %s{Convert.ToHexStringLower expected}; "
            + "download the artifact of the expected model or update the pin (the manifest's modelId)"
        | Unsigned ->
            "it carries no signature and the client requires the model owner's; serve the artifact signed with ArtifactSigning.sign"
        | BadSignature ->
            "its signature does not verify under the model owner's public key: it was altered or signed with another key; do not use it"

/// A received client artifact was refused: it could make the client generate keys or encrypt under conditions it
/// did not agree to. <c>Refusal</c> says why.
type UntrustedArtifactException(refusal: ArtifactRefusal) =
    inherit Exception($"The client artifact was refused: %s{refusal.Describe()}.")

    /// The precise reason.
    member _.Refusal = refusal

/// The binary form of the client artifact.
///
///     parameters · bytes model context (32) · i32 features · f32 input scale · code spec · i32 input bits
///     · i32 outputs · i64[] output offsets · i32 output bits · f32 output scale
///     · u8 task: 1 + string[] classes | 2 + f64[] target mean + f64[] target std
///     · inputs: f64[] scaler centre · f64[] scaler scale · f64[] range min · f64[] range max
///       (absent in artifacts written before models scaled their features: no scaling, no range)
module ClientArtifactFormat =

    /// Writes a client artifact.
    let write (w: PayloadWriter) (a: ClientArtifact) =
        ParameterFormat.write w a.Parameters
        w.WriteBytes a.ModelContext
        w.WriteInt32 a.Features
        Fields.writeSingle w a.InputScale
        Fields.writeCodeSpec w a.InputCodes
        w.WriteInt32 a.InputAccumulatorBits
        w.WriteInt32 a.Outputs
        Fields.writeInt64s w a.OutputOffsets
        w.WriteInt32 a.OutputAccumulatorBits
        Fields.writeSingle w a.OutputScale
        match a.Task with
        | ModelTask.Classification classes ->
            w.WriteByte 1uy
            w.WriteCount classes.Length
            for c in classes do
                w.WriteString c
        | ModelTask.Regression(mean, std) ->
            w.WriteByte 2uy
            Fields.writeDoubles w mean
            Fields.writeDoubles w std
        for values in [ a.Inputs.Scaler.Center; a.Inputs.Scaler.Scale; a.Inputs.Range.Min; a.Inputs.Range.Max ] do
            Fields.writeDoubles w values

    let private readInputs (r: PayloadReader) (features: int) : InputContract =
        if r.Remaining = 0L then
            InputContract.identity features
        else
            let field name =
                let values = Fields.readDoubles r name
                Check.equal $"%s{name} values" (int64 features) (int64 values.Length)
                values
            let center = field "scaler centre"
            let scale = field "scaler scale"
            scale |> Array.iteri (fun j s -> Check.positive $"scaler scale[%d{j}]" s)
            let lo = field "range min"
            let hi = field "range max"
            Array.iteri2 (fun j a b -> if not (a <= b) then Check.malformed $"range of feature %d{j} is empty") lo hi
            { Scaler = { Center = center; Scale = scale }; Range = { Min = lo; Max = hi } }

    /// Reads and validates a client artifact. Its parameter set is held to the 128-bit security check whatever its
    /// Insecure mark says; a failing set raises UntrustedArtifactException unless <c>insecure</c> allows it.
    let readWith (insecure: InsecureParameters) (r: PayloadReader) : ClientArtifact =
        let parameters = ParameterFormat.read r
        let verdict = Security.check parameters
        if not verdict.IsSecure && insecure = InsecureParameters.Refuse then
            raise (UntrustedArtifactException(ArtifactRefusal.InsecureParameters verdict))
        let context = r.ReadBytes()
        Check.equal "model context bytes" 32L (int64 context.Length)
        let features = r.ReadInt32()
        Check.range "features" 1L (int64 CircuitFormat.MaxWidth) (int64 features)
        let inputScale = Fields.readSingle r
        Check.positive "input scale" (float inputScale)
        let inputCodes = Fields.readCodeSpec r "input codes"
        let inputBits = r.ReadInt32()
        Check.range "input accumulator bits" 1L (int64 Compiler.MaxAccumulatorBits) (int64 inputBits)
        let outputs = r.ReadInt32()
        Check.range "outputs" 1L (int64 CircuitFormat.MaxWidth) (int64 outputs)
        let offsets = Fields.readInt64s r
        Check.equal "output offsets" (int64 outputs) (int64 offsets.Length)
        offsets |> Array.iteri (fun j offset -> Check.range $"output offset %d{j}" -(1L <<< 48) (1L <<< 48) offset)
        let outputBits = r.ReadInt32()
        Check.range "output accumulator bits" 1L (int64 Compiler.MaxAccumulatorBits) (int64 outputBits)
        let outputScale = Fields.readSingle r
        Check.positive "output scale" (float outputScale)
        let task =
            match r.ReadByte() with
            | 1uy ->
                let count = r.ReadCount 4
                Check.equal "class labels" (int64 outputs) (int64 count)
                ModelTask.Classification(Array.init count (fun _ -> r.ReadString()))
            | 2uy ->
                let mean = Fields.readDoubles r "target mean"
                let std = Fields.readDoubles r "target std"
                Check.equal "target means" (int64 outputs) (int64 mean.Length)
                Check.equal "target standard deviations" (int64 outputs) (int64 std.Length)
                std |> Array.iteri (fun i s -> Check.positive $"target std[%d{i}]" s)
                ModelTask.Regression(mean, std)
            | b -> Check.malformed $"task has tag %d{b}"
        let inputs = readInputs r features
        { Parameters = parameters
          ModelContext = context
          Features = features
          InputScale = inputScale
          InputCodes = inputCodes
          InputAccumulatorBits = inputBits
          Outputs = outputs
          OutputOffsets = offsets
          OutputAccumulatorBits = outputBits
          OutputScale = outputScale
          Task = task
          Inputs = inputs }

    /// Reads and validates a client artifact, refusing a parameter set below 128-bit security.
    let read (r: PayloadReader) : ClientArtifact = readWith InsecureParameters.Refuse r

    /// The client artifact of a circuit: its quantizer, encodings, parameters and context, with the task and the
    /// input contract.
    let ofCircuit (circuit: Circuit) (task: ModelTask) (inputs: InputContract) : ClientArtifact =
        let last = Array.last circuit.Layers
        let outputs = last.Neurons
        let features = circuit.Model.Layers[0].Weights[0].Length
        for name, values in [ "scaler centre", inputs.Scaler.Center; "scaler scale", inputs.Scaler.Scale; "range min", inputs.Range.Min; "range max", inputs.Range.Max ] do
            if values.Length <> features then
                raise (InvalidShapeException($"inputs: %s{name}", $"has %d{values.Length} values; the model takes %d{features} features"))
        match task with
        | ModelTask.Classification classes when classes.Length <> outputs ->
            raise (InvalidShapeException("task", $"names %d{classes.Length} classes; the model has %d{outputs} outputs"))
        | ModelTask.Regression(mean, std) when mean.Length <> outputs || std.Length <> outputs ->
            raise (InvalidShapeException("task", $"has %d{mean.Length} means and %d{std.Length} deviations; the model has %d{outputs} outputs"))
        | ModelTask.Regression(_, std) when std |> Array.exists (fun s -> not (Double.IsFinite s && s > 0.0)) ->
            raise (ParameterOutOfRangeException("task.targetStd", std, "positive finite standard deviations"))
        | _ -> ()
        { Parameters = circuit.Parameters
          ModelContext = ModelContext.ofCircuit circuit
          Features = features
          InputScale = circuit.Model.InputScale
          InputCodes = circuit.Model.InputCodes
          InputAccumulatorBits = circuit.InputAccumulatorBits
          Outputs = outputs
          OutputOffsets = Array.copy last.Offsets
          OutputAccumulatorBits = last.AccumulatorBits
          OutputScale = (Array.last circuit.Model.Layers).AccumulatorScale
          Task = task
          Inputs = inputs }
