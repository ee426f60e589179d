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

/// One row of input ciphertexts sharing one mask seed (compressed, as sent by a client): ciphertext i's mask is the
/// i-th run of Dimension values of the AES-CTR stream started at Seed; only the bodies are stored.
type SeededLweRow =
    { Seed: Seed
      Dimension: int
      Bodies: uint64[] }

/// Encryption and expansion of seeded rows.
module SeededLweRow =

    /// Encrypts integers (wrapping modulo 2p of the encoding) under the client key's ciphertext key, every mask drawn
    /// from one fresh public seed and the noise from the secret CSPRNG.
    let encrypt (clientKey: ClientKey) (encoding: Encoding) (messages: int64[]) : SeededLweRow =
        let key, noise = clientKey.CiphertextKey
        let seed = Seed.Fresh()
        let masks = AesCtrGenerator seed
        let secretNoise = AesCtrGenerator.Secret()
        let buffer = Array.zeroCreate<uint64> (key.Dimension + 1)
        let bodies =
            messages
            |> Array.map (fun m ->
                LweEncryption.encryptInto key masks secretNoise noise (encoding.EncodeWrapping m) (Span buffer)
                buffer[key.Dimension])
        { Seed = seed; Dimension = key.Dimension; Bodies = bodies }

    /// The full ciphertexts: masks replayed from the seed in order.
    let expand (row: SeededLweRow) : LweCiphertext[] =
        let masks = AesCtrGenerator row.Seed
        row.Bodies
        |> Array.map (fun body ->
            let data = Array.zeroCreate<uint64> (row.Dimension + 1)
            masks.Fill(Span(data, 0, row.Dimension))
            data[row.Dimension] <- body
            { Data = data })

/// Field checks of decoded payloads: a failure is InvalidFheDataException (Malformed) naming the field.
module internal Check =

    let malformed (detail: string) : 'T = raise (InvalidFheDataException(FormatError.Malformed detail))

    let range (name: string) (lo: int64) (hi: int64) (value: int64) =
        if value < lo || value > hi then
            malformed $"%s{name} = %d{value} is outside [%d{lo}, %d{hi}]"

    let equal (name: string) (expected: int64) (found: int64) =
        if expected <> found then
            malformed $"%s{name} is %d{found} where %d{expected} was expected"

    let finite (name: string) (value: float) =
        if not (Double.IsFinite value) then
            malformed $"%s{name} is not a finite number"

    let positive (name: string) (value: float) =
        if not (Double.IsFinite value && value > 0.0) then
            malformed $"%s{name} = %g{value} is not a positive finite number"

    /// A count that must fit the payload when each element takes `elementBytes`.
    let fits (reader: PayloadReader) (name: string) (count: int64) (elementBytes: int64) =
        if count < 0L then malformed $"%s{name} is negative"
        if count * elementBytes > reader.Remaining then
            raise (InvalidFheDataException FormatError.Truncated)

/// Shared field encodings (little-endian, through PayloadWriter / PayloadReader).
module internal Fields =

    let writeSingle (w: PayloadWriter) (v: float32) = w.WriteInt32(BitConverter.SingleToInt32Bits v)
    let readSingle (r: PayloadReader) = BitConverter.Int32BitsToSingle(r.ReadInt32())

    let writeBool (w: PayloadWriter) (v: bool) = w.WriteByte(if v then 1uy else 0uy)

    let readBool (r: PayloadReader) (name: string) =
        match r.ReadByte() with
        | 0uy -> false
        | 1uy -> true
        | b -> Check.malformed $"%s{name} has flag byte %d{b}, not 0 or 1"

    let writeSeed (w: PayloadWriter) (s: Seed) =
        w.WriteUInt64 s.Low
        w.WriteUInt64 s.High

    let readSeed (r: PayloadReader) = { Low = r.ReadUInt64(); High = r.ReadUInt64() }

    let writeInt64s (w: PayloadWriter) (values: int64[]) = w.WriteUInt64Array(values |> Array.map uint64)
    let readInt64s (r: PayloadReader) = r.ReadUInt64Array() |> Array.map int64

    let writeDoubles (w: PayloadWriter) (values: float[]) =
        w.WriteCount values.Length
        for v in values do
            w.WriteDouble v

    let readDoubles (r: PayloadReader) (name: string) =
        let count = r.ReadCount 8
        Array.init count (fun i ->
            let v = r.ReadDouble()
            Check.finite $"%s{name}[%d{i}]" v
            v)

    let writeCodeSpec (w: PayloadWriter) (spec: CodeSpec) =
        w.WriteInt32 spec.QMin
        w.WriteInt32 spec.QMax
        w.WriteByte(
            match spec.Rounding with
            | Rounding.HalfUp -> 1uy
            | Rounding.HalfEven -> 2uy
        )

    /// Codes are at most 16-bit values (the quantizers' widest).
    let readCodeSpec (r: PayloadReader) (name: string) : CodeSpec =
        let qmin = r.ReadInt32()
        let qmax = r.ReadInt32()
        Check.range $"%s{name}.QMin" -65536L 65536L (int64 qmin)
        Check.range $"%s{name}.QMax" (int64 qmin) 65536L (int64 qmax)
        let rounding =
            match r.ReadByte() with
            | 1uy -> Rounding.HalfUp
            | 2uy -> Rounding.HalfEven
            | b -> Check.malformed $"%s{name}.Rounding has tag %d{b}"
        { QMin = qmin; QMax = qmax; Rounding = rounding }

    let writeCodeRange (w: PayloadWriter) (range: CodeRange) =
        w.WriteInt32 range.Min
        w.WriteInt32 range.Max

    let readCodeRange (r: PayloadReader) (name: string) : CodeRange =
        let lo = r.ReadInt32()
        let hi = r.ReadInt32()
        Check.range $"%s{name}.Min" -65536L 65536L (int64 lo)
        Check.range $"%s{name}.Max" (int64 lo) 65536L (int64 hi)
        { Min = lo; Max = hi }

/// The binary form and canonical description of a TFHE parameter set.
///
///     string name · i32 n, k, N · noise(LWE) · noise(GLWE) · i32 PBS base log, levels · i32 KS base log, levels
///     · i32 message modulus, carry modulus, ν · f64 published log2 p_fail · u8 order (1 KS-PBS, 2 PBS-KS)
///     · u8 modulus switch (1 standard, 2 centered mean) · u8 insecure
///     noise = u8 1 + i32 TUniform bound log2 | u8 2 + f64 Gaussian σ
module ParameterFormat =

    let private writeNoise (w: PayloadWriter) (noise: NoiseDistribution) =
        match noise with
        | NoiseDistribution.TUniform b ->
            w.WriteByte 1uy
            w.WriteInt32 b
        | NoiseDistribution.Gaussian s ->
            w.WriteByte 2uy
            w.WriteDouble s

    let private readNoise (r: PayloadReader) (name: string) =
        match r.ReadByte() with
        | 1uy -> NoiseDistribution.TUniform(r.ReadInt32())
        | 2uy -> NoiseDistribution.Gaussian(r.ReadDouble())
        | b -> Check.malformed $"%s{name} has noise tag %d{b}"

    let private noiseText (noise: NoiseDistribution) =
        match noise with
        | NoiseDistribution.TUniform b -> $"TUniform(%d{b})"
        | NoiseDistribution.Gaussian s -> "Gaussian(" + s.ToString("R", CultureInfo.InvariantCulture) + ")"

    /// Every field, in a fixed order and invariant formatting: equal strings exactly for equal parameter sets.
    let canonical (p: TfheParameters) =
        String.Join(
            "|",
            [| "FheNet TFHE parameters v1"
               p.Name
               $"n=%d{p.LweDimension}"
               $"k=%d{p.GlweDimension}"
               $"N=%d{p.PolynomialSize}"
               "lwe=" + noiseText p.LweNoise
               "glwe=" + noiseText p.GlweNoise
               $"pbs=%d{p.PbsBaseLog}x%d{p.PbsLevel}"
               $"ks=%d{p.KsBaseLog}x%d{p.KsLevel}"
               $"message=%d{p.MessageModulus}"
               $"carry=%d{p.CarryModulus}"
               $"nu=%d{p.MaxNoiseLevel}"
               "log2pfail=" + p.PublishedLog2PFail.ToString("R", CultureInfo.InvariantCulture)
               $"order=%A{p.Order}"
               $"modswitch=%A{p.ModulusSwitch}"
               $"insecure=%b{p.Insecure}" |]
        )

    /// Writes a parameter set.
    let write (w: PayloadWriter) (p: TfheParameters) =
        w.WriteString p.Name
        w.WriteInt32 p.LweDimension
        w.WriteInt32 p.GlweDimension
        w.WriteInt32 p.PolynomialSize
        writeNoise w p.LweNoise
        writeNoise w p.GlweNoise
        w.WriteInt32 p.PbsBaseLog
        w.WriteInt32 p.PbsLevel
        w.WriteInt32 p.KsBaseLog
        w.WriteInt32 p.KsLevel
        w.WriteInt32 p.MessageModulus
        w.WriteInt32 p.CarryModulus
        w.WriteInt32 p.MaxNoiseLevel
        w.WriteDouble p.PublishedLog2PFail
        w.WriteByte(
            match p.Order with
            | PbsOrder.KeyswitchBootstrap -> 1uy
            | PbsOrder.BootstrapKeyswitch -> 2uy
        )
        w.WriteByte(
            match p.ModulusSwitch with
            | ModulusSwitchKind.Standard -> 1uy
            | ModulusSwitchKind.CenteredMean -> 2uy
        )
        Fields.writeBool w p.Insecure

    /// Reads and validates a parameter set (every field the engine relies on).
    let read (r: PayloadReader) : TfheParameters =
        let name = r.ReadString()
        Check.range "parameters.Name length" 1L 256L (int64 name.Length)
        let n = r.ReadInt32()
        let k = r.ReadInt32()
        let bigN = r.ReadInt32()
        let lweNoise = readNoise r "parameters.LweNoise"
        let glweNoise = readNoise r "parameters.GlweNoise"
        let pbsBase = r.ReadInt32()
        let pbsLevel = r.ReadInt32()
        let ksBase = r.ReadInt32()
        let ksLevel = r.ReadInt32()
        let message = r.ReadInt32()
        let carry = r.ReadInt32()
        let nu = r.ReadInt32()
        let pfail = r.ReadDouble()
        let order =
            match r.ReadByte() with
            | 1uy -> PbsOrder.KeyswitchBootstrap
            | 2uy -> PbsOrder.BootstrapKeyswitch
            | b -> Check.malformed $"parameters.Order has tag %d{b}"
        let modulusSwitch =
            match r.ReadByte() with
            | 1uy -> ModulusSwitchKind.Standard
            | 2uy -> ModulusSwitchKind.CenteredMean
            | b -> Check.malformed $"parameters.ModulusSwitch has tag %d{b}"
        let insecure = Fields.readBool r "parameters.Insecure"
        Check.range "parameters.MessageModulus" 1L 65536L (int64 message)
        Check.range "parameters.CarryModulus" 1L 65536L (int64 carry)
        Check.range "parameters.MaxNoiseLevel" 1L 65536L (int64 nu)
        Check.finite "parameters.PublishedLog2PFail" pfail
        let p =
            { Name = name
              LweDimension = n
              GlweDimension = k
              PolynomialSize = bigN
              LweNoise = lweNoise
              GlweNoise = glweNoise
              PbsBaseLog = pbsBase
              PbsLevel = pbsLevel
              KsBaseLog = ksBase
              KsLevel = ksLevel
              MessageModulus = message
              CarryModulus = carry
              MaxNoiseLevel = nu
              PublishedLog2PFail = pfail
              Order = order
              ModulusSwitch = modulusSwitch
              Insecure = insecure }
        Parameters.validate p
        // Keys of k·N beyond 2^20 coefficients are not something this engine serves.
        Check.range "parameters.GlweDimension * PolynomialSize" 1L (1L <<< 20) (int64 k * int64 bigN)
        p

/// The circuit (the server artifact's payload): parameter set, rounding, p_error, the integer model and each
/// layer's program.
///
///     parameters · u8 rounding (1 exact, 2 exact per bit, 3 approximate) · f64 log2 p_error
///     · f32 input scale · code spec · quantizer · i32 L · L × integer layer · L × layer circuit
///     integer layer = i32 rows, cols · rows·cols × i32 weight · i64[] biases · code range (inputs, weights)
///                     · f32 accumulator scale · i64 worst lo, hi · i32 shift · u8 has lookup [· lookup]
///     lookup = string activation · f32 step · f32 output scale · code spec
///     layer circuit = i32 layer, neurons · i64[] offsets (one per neuron) · i32 accumulator bits, shift,
///                     lookup bits · f64 ν · i32 table count (neurons, or 0 for the last layer) · that many i64[]
///                     tables · i64 calibration min, max
///     code spec = i32 qmin, qmax · u8 tie rule (1 half up, 2 half even); code range = i32 min, max
///     quantizer = i32 bits · u8 signed · u8 narrow · (u8 1 + f64 scale | u8 2 + i32 exponent) · i32 zero point
module CircuitFormat =

    /// Layers of a network this format accepts, and rows or columns of one layer.
    [<Literal>]
    let MaxLayers = 256

    [<Literal>]
    let MaxWidth = 1 <<< 20

    let private writeQuantizer (w: PayloadWriter) (q: Quantizer) =
        w.WriteInt32 q.Bits
        Fields.writeBool w q.Signed
        Fields.writeBool w q.NarrowRange
        match q.Scale with
        | Scale.Real s ->
            w.WriteByte 1uy
            w.WriteDouble s
        | Scale.PowerOfTwo e ->
            w.WriteByte 2uy
            w.WriteInt32 e
        w.WriteInt32 q.ZeroPoint

    let private readQuantizer (r: PayloadReader) =
        let bits = r.ReadInt32()
        let signed = Fields.readBool r "quantizer.Signed"
        let narrow = Fields.readBool r "quantizer.NarrowRange"
        let scale =
            match r.ReadByte() with
            | 1uy -> Scale.Real(r.ReadDouble())
            | 2uy -> Scale.PowerOfTwo(r.ReadInt32())
            | b -> Check.malformed $"quantizer.Scale has tag %d{b}"
        let zeroPoint = r.ReadInt32()
        // Quantizer.create validates every field (ArgumentException, reported as Malformed).
        Quantizer.create bits signed narrow scale zeroPoint

    let private writeLayer (w: PayloadWriter) (layer: IntegerLayer) =
        w.WriteInt32 layer.Weights.Length
        w.WriteInt32 layer.Weights[0].Length
        for row in layer.Weights do
            for v in row do
                w.WriteInt32 v
        Fields.writeInt64s w layer.Biases
        Fields.writeCodeRange w layer.InputCodes
        Fields.writeCodeRange w layer.WeightCodes
        Fields.writeSingle w layer.AccumulatorScale
        let struct (lo, hi) = layer.WorstCaseAccumulator
        w.WriteInt64 lo
        w.WriteInt64 hi
        w.WriteInt32 layer.Shift
        match layer.Lookup with
        | None -> Fields.writeBool w false
        | Some lookup ->
            Fields.writeBool w true
            w.WriteString(Activation.name lookup.Activation)
            Fields.writeSingle w lookup.Step
            Fields.writeSingle w lookup.OutputScale
            Fields.writeCodeSpec w lookup.OutputCodes

    let private positiveSingle (name: string) (v: float32) = Check.positive name (float v)

    /// A layer; `inputs` is the previous layer's width (None for the first layer, whose width is the features).
    let private readLayer (r: PayloadReader) (l: int) (inputs: int option) : IntegerLayer =
        let name = $"layer %d{l}"
        let rows = r.ReadInt32()
        let cols = r.ReadInt32()
        Check.range $"%s{name} neurons" 1L (int64 MaxWidth) (int64 rows)
        match inputs with
        | Some width -> Check.equal $"%s{name} inputs" (int64 width) (int64 cols)
        | None -> Check.range $"%s{name} inputs (features)" 1L (int64 MaxWidth) (int64 cols)
        Check.fits r $"%s{name} weights" (int64 rows * int64 cols) 4L
        let weights = Array.init rows (fun _ -> Array.init cols (fun _ -> r.ReadInt32()))
        let biases = Fields.readInt64s r
        Check.equal $"%s{name} biases" (int64 rows) (int64 biases.Length)
        biases |> Array.iteri (fun i b -> Check.range $"%s{name} bias %d{i}" -(1L <<< 48) (1L <<< 48) b)
        let inputCodes = Fields.readCodeRange r $"%s{name}.InputCodes"
        let weightCodes = Fields.readCodeRange r $"%s{name}.WeightCodes"
        for row in weights do
            for v in row do
                Check.range $"%s{name} weight" (int64 weightCodes.Min) (int64 weightCodes.Max) (int64 v)
        let accumulatorScale = Fields.readSingle r
        positiveSingle $"%s{name}.AccumulatorScale" accumulatorScale
        let worstLo = r.ReadInt64()
        let worstHi = r.ReadInt64()
        Check.range $"%s{name} worst-case accumulator" worstLo Int64.MaxValue worstHi
        let shift = r.ReadInt32()
        Check.range $"%s{name}.Shift" 0L 62L (int64 shift)
        let lookup =
            if Fields.readBool r $"%s{name} lookup flag" then
                let name = r.ReadString()
                let activation = Activation.parse name
                // Parsing forgives case; the format holds exactly the canonical name, so that one model has one encoding.
                if Activation.name activation <> name then
                    Check.malformed $"activation '%s{name}' is not written as its canonical name '%s{Activation.name activation}'"
                let step = Fields.readSingle r
                let outputScale = Fields.readSingle r
                positiveSingle $"%s{name}.Step" step
                positiveSingle $"%s{name}.OutputScale" outputScale
                Some
                    { Activation = activation
                      Step = step
                      OutputScale = outputScale
                      OutputCodes = Fields.readCodeSpec r $"%s{name}.OutputCodes" }
            else
                None
        { Weights = weights
          Biases = biases
          InputCodes = inputCodes
          WeightCodes = weightCodes
          AccumulatorScale = accumulatorScale
          WorstCaseAccumulator = struct (worstLo, worstHi)
          Shift = shift
          Lookup = lookup }

    let private writeLayerCircuit (w: PayloadWriter) (c: LayerCircuit) =
        w.WriteInt32 c.Layer
        w.WriteInt32 c.Neurons
        Fields.writeInt64s w c.Offsets
        w.WriteInt32 c.AccumulatorBits
        w.WriteInt32 c.Shift
        w.WriteInt32 c.LookupBits
        w.WriteDouble c.Nu
        w.WriteCount c.Tables.Length
        for table in c.Tables do
            Fields.writeInt64s w table
        w.WriteInt32 c.WindowBits
        w.WriteInt64 c.CalibrationMin
        w.WriteInt64 c.CalibrationMax

    /// A layer's program, checked against its integer layer, the next layer's codes and the parameter set.
    let private readLayerCircuit (r: PayloadReader) (p: TfheParameters) (rounding: RoundingMethod) (model: IntegerModel) (l: int) : LayerCircuit =
        let name = $"layer circuit %d{l}"
        let layer = model.Layers[l]
        let index = r.ReadInt32()
        Check.equal $"%s{name} index" (int64 l) (int64 index)
        let neurons = r.ReadInt32()
        Check.equal $"%s{name} neurons" (int64 layer.Weights.Length) (int64 neurons)
        let offsets = Fields.readInt64s r
        Check.equal $"%s{name} offsets" (int64 neurons) (int64 offsets.Length)
        let bits = r.ReadInt32()
        Check.range $"%s{name}.AccumulatorBits" 1L (int64 Compiler.MaxAccumulatorBits) (int64 bits)
        let shift = r.ReadInt32()
        Check.equal $"%s{name}.Shift" (int64 layer.Shift) (int64 shift)
        Check.range $"%s{name}.Shift" 0L (int64 (bits - 1)) (int64 shift)
        offsets
        |> Array.iteri (fun j offset ->
            Check.range $"%s{name} offset %d{j}" -(1L <<< 48) (1L <<< 48) offset
            if offset % (1L <<< shift) <> 0L then
                Check.malformed $"%s{name} offset %d{j} = %d{offset} is not a multiple of 2^%d{shift}")
        let lookupBits = r.ReadInt32()
        let nu = r.ReadDouble()
        Check.positive $"%s{name}.Nu" nu
        let tableCount = r.ReadCount 4
        let tables =
            match layer.Lookup with
            | None ->
                Check.equal $"%s{name}.LookupBits (last layer)" 0L (int64 lookupBits)
                Check.equal $"%s{name} tables (last layer)" 0L (int64 tableCount)
                [||]
            | Some lookup ->
                Check.equal $"%s{name}.LookupBits" (int64 (bits - shift)) (int64 lookupBits)
                Check.range $"%s{name} table size" 2L (int64 p.PolynomialSize) (1L <<< lookupBits)
                Check.equal $"%s{name} tables" (int64 neurons) (int64 tableCount)
                let codes = lookup.OutputCodes
                Array.init tableCount (fun j ->
                    let table = Fields.readInt64s r
                    Check.equal $"%s{name} table %d{j} entries" (1L <<< lookupBits) (int64 table.Length)
                    table
                    |> Array.iteri (fun i v ->
                        Check.range $"%s{name} table %d{j}[%d{i}]" (int64 codes.QMin) (int64 codes.QMax) v)
                    table)
        let windowBits = r.ReadInt32()
        if windowBits <> 0 then
            if rounding <> RoundingMethod.Exact || tables.Length = 0 then
                Check.malformed $"%s{name} reads its tables in two steps without exact rounding or without tables"
            Check.range $"%s{name}.WindowBits" 1L (int64 (lookupBits - 2)) (int64 windowBits)
            tables
            |> Array.iteri (fun j table ->
                if TableWindow.bitsOf table > windowBits then
                    Check.malformed $"%s{name} table %d{j} varies beyond one window of %d{windowBits} bits")
        let calibrationMin = r.ReadInt64()
        let calibrationMax = r.ReadInt64()
        Check.range $"%s{name} calibration range" calibrationMin Int64.MaxValue calibrationMax
        { Layer = l
          Neurons = neurons
          Offsets = offsets
          AccumulatorBits = bits
          Shift = shift
          LookupBits = lookupBits
          Nu = nu
          Tables = tables
          WindowBits = windowBits
          CalibrationMin = calibrationMin
          CalibrationMax = calibrationMax }

    /// Writes a circuit.
    let write (w: PayloadWriter) (c: Circuit) =
        ParameterFormat.write w c.Parameters
        w.WriteByte(
            match c.Rounding with
            | RoundingMethod.Exact -> 1uy
            | RoundingMethod.ExactPerBit -> 2uy
            | RoundingMethod.Approximate -> 3uy
        )
        w.WriteDouble c.Log2PError
        Fields.writeSingle w c.Model.InputScale
        Fields.writeCodeSpec w c.Model.InputCodes
        writeQuantizer w c.Model.InputQuantizer
        w.WriteInt32 c.Model.Layers.Length
        for layer in c.Model.Layers do
            writeLayer w layer
        for layer in c.Layers do
            writeLayerCircuit w layer

    /// Reads a circuit, checking that the layers chain, that hidden layers (only) have lookups, and that every
    /// program fits its layer, the next layer's codes and the parameter set.
    let read (r: PayloadReader) : Circuit =
        let parameters = ParameterFormat.read r
        let rounding =
            match r.ReadByte() with
            | 1uy -> RoundingMethod.Exact
            | 2uy -> RoundingMethod.ExactPerBit
            | 3uy -> RoundingMethod.Approximate
            | b -> Check.malformed $"circuit rounding has tag %d{b}"
        let log2PError = r.ReadDouble()
        Check.finite "circuit log2 p_error" log2PError
        if log2PError >= 0.0 then
            Check.malformed $"circuit log2 p_error = %g{log2PError} is not negative"
        let inputScale = Fields.readSingle r
        positiveSingle "model.InputScale" inputScale
        let inputCodes = Fields.readCodeSpec r "model.InputCodes"
        let quantizer = readQuantizer r
        let count = r.ReadInt32()
        Check.range "layer count" 1L (int64 MaxLayers) (int64 count)
        let layers = Array.zeroCreate<IntegerLayer> count
        for l in 0 .. count - 1 do
            layers[l] <- readLayer r l (if l = 0 then None else Some layers[l - 1].Weights.Length)
            let hidden = l < count - 1
            if hidden <> layers[l].Lookup.IsSome then
                let problem = if hidden then "is hidden but has no lookup" else "is the last but has a lookup"
                Check.malformed $"layer %d{l} %s{problem}"
        let model =
            { InputScale = inputScale
              InputCodes = inputCodes
              InputQuantizer = quantizer
              Layers = layers }
        { Model = model
          Layers = Array.init count (readLayerCircuit r parameters rounding model)
          Parameters = parameters
          Rounding = rounding
          Log2PError = log2PError }

    /// SHA-256 of the circuit's serialized payload: the model's identity.
    let digest (c: Circuit) : byte[] =
        use memory = new MemoryStream()
        write (PayloadWriter memory) c
        SHA256.HashData(memory.ToArray())

/// The context hash that binds keys and ciphertexts to one parameter set and one model.
module ModelContext =

    /// SHA-256 of the canonical parameter description and the circuit's digest: keys or ciphertexts made for another
    /// parameter set or another model carry another context and are refused (ParameterMismatch).
    let ofCircuit (circuit: Circuit) : byte[] =
        let digest = Convert.ToHexStringLower(CircuitFormat.digest circuit)
        Container.contextHash (ParameterFormat.canonical circuit.Parameters + "|model=" + digest)

    /// The context of the two model artifacts themselves, which are read before their model is known.
    let artifacts = Container.contextHash "FheNet model artifacts v1"

/// The binary forms of keys: a client key (secret) and compressed evaluation keys (public).
///
///     client key = i32 n · packed bits of the small key · i32 k, N · packed bits of the GLWE key
///                  (bit i of a key in byte i/8 at position i%8; unused high bits of the last byte are 0)
///     evaluation keys = bootstrapping key: seed (2 × u64) · i32 n, k, N, base log, levels · u64[] bodies
///                       (n·ℓ·(k+1)·N: the body polynomial of every GGSW row)
///                     · keyswitching key: seed · i32 k·N, n, base log, levels · u64[] bodies (k·N·ℓ)
module KeyFormat =

    let private writeBits (w: PayloadWriter) (bits: uint64[]) =
        let packed = Array.zeroCreate<byte> ((bits.Length + 7) / 8)
        bits |> Array.iteri (fun i b -> packed[i / 8] <- packed[i / 8] ||| (byte b <<< (i % 8)))
        w.WriteBytes packed

    let private readBits (r: PayloadReader) (name: string) (count: int) =
        let packed = r.ReadBytes()
        Check.equal $"%s{name} bytes" (int64 ((count + 7) / 8)) (int64 packed.Length)
        if count % 8 <> 0 && (packed[packed.Length - 1] >>> (count % 8)) <> 0uy then
            Check.malformed $"%s{name} has bits set beyond its %d{count} entries"
        Array.init count (fun i -> uint64 ((packed[i / 8] >>> (i % 8)) &&& 1uy))

    /// Writes a client key (the secret: both key's bits).
    let writeClientKey (w: PayloadWriter) (key: ClientKey) =
        w.WriteInt32 key.SmallKey.Dimension
        writeBits w key.SmallKey.Bits
        w.WriteInt32 key.GlweKey.GlweDimension
        w.WriteInt32 key.GlweKey.PolynomialSize
        writeBits w key.GlweKey.Bits

    /// Reads a client key of the given parameter set.
    let readClientKey (p: TfheParameters) (r: PayloadReader) : ClientKey =
        Check.equal "client key n" (int64 p.LweDimension) (int64 (r.ReadInt32()))
        let small = readBits r "client key small key" p.LweDimension
        Check.equal "client key k" (int64 p.GlweDimension) (int64 (r.ReadInt32()))
        Check.equal "client key N" (int64 p.PolynomialSize) (int64 (r.ReadInt32()))
        let glwe = readBits r "client key GLWE key" p.BigLweDimension
        { Parameters = p
          SmallKey = { Bits = small }
          GlweKey =
            { GlweDimension = p.GlweDimension
              PolynomialSize = p.PolynomialSize
              Bits = glwe } }

    let private writeDecomposer (w: PayloadWriter) (d: Decomposer) =
        w.WriteInt32 d.BaseLog
        w.WriteInt32 d.Level

    let private readDimension (r: PayloadReader) (name: string) (expected: int) =
        Check.equal name (int64 expected) (int64 (r.ReadInt32()))

    /// Writes compressed evaluation keys (seeds and bodies).
    let writeEvaluationKeys (w: PayloadWriter) (key: CompressedServerKey) =
        let b = key.Bootstrap
        Fields.writeSeed w b.Seed
        w.WriteInt32 b.InputDimension
        w.WriteInt32 b.GlweDimension
        w.WriteInt32 b.PolynomialSize
        writeDecomposer w b.Decomposer
        w.WriteUInt64Array b.Bodies
        let k = key.Keyswitch
        Fields.writeSeed w k.Seed
        w.WriteInt32 k.InputDimension
        w.WriteInt32 k.OutputDimension
        writeDecomposer w k.Decomposer
        w.WriteUInt64Array k.Bodies

    /// Reads compressed evaluation keys of the given parameter set (KS-PBS order: the keyswitch goes from the big
    /// key to the small key; PBS-KS likewise, after the bootstrap).
    let readEvaluationKeys (p: TfheParameters) (r: PayloadReader) : CompressedServerKey =
        let pbs = Decomposer.Create(p.PbsBaseLog, p.PbsLevel)
        let ks = Decomposer.Create(p.KsBaseLog, p.KsLevel)
        let bskSeed = Fields.readSeed r
        readDimension r "bootstrapping key n" p.LweDimension
        readDimension r "bootstrapping key k" p.GlweDimension
        readDimension r "bootstrapping key N" p.PolynomialSize
        readDimension r "bootstrapping key base log" pbs.BaseLog
        readDimension r "bootstrapping key levels" pbs.Level
        let bskBodies = r.ReadUInt64Array()
        Check.equal
            "bootstrapping key bodies"
            (int64 p.LweDimension * int64 pbs.Level * int64 (p.GlweDimension + 1) * int64 p.PolynomialSize)
            (int64 bskBodies.Length)
        let kskSeed = Fields.readSeed r
        readDimension r "keyswitching key input dimension" p.BigLweDimension
        readDimension r "keyswitching key output dimension" p.LweDimension
        readDimension r "keyswitching key base log" ks.BaseLog
        readDimension r "keyswitching key levels" ks.Level
        let kskBodies = r.ReadUInt64Array()
        Check.equal "keyswitching key bodies" (int64 p.BigLweDimension * int64 ks.Level) (int64 kskBodies.Length)
        { Parameters = p
          Bootstrap =
            { Seed = bskSeed
              InputDimension = p.LweDimension
              GlweDimension = p.GlweDimension
              PolynomialSize = p.PolynomialSize
              Decomposer = pbs
              Bodies = bskBodies }
          Keyswitch =
            { Seed = kskSeed
              InputDimension = p.BigLweDimension
              OutputDimension = p.LweDimension
              Decomposer = ks
              Bodies = kskBodies } }

/// The binary forms of ciphertexts.
///
///     input row (compressed) = i32 dimension · seed (2 × u64) · u64[] bodies (one per feature):
///                              16 + 8·features bytes of ciphertext plus 12 bytes of counts
///     outputs = i32 count · i32 dimension · u64[] data (count·(dimension+1): each ciphertext's mask then body)
///     input batch = i32 rows · rows × input row;  output batch = i32 rows · rows × outputs
module CiphertextFormat =

    /// The LWE dimension of a parameter set's ciphertexts between bootstraps.
    let ciphertextDimension (p: TfheParameters) =
        match p.Order with
        | PbsOrder.KeyswitchBootstrap -> p.BigLweDimension
        | PbsOrder.BootstrapKeyswitch -> p.LweDimension

    /// Writes one seeded input row.
    let writeRow (w: PayloadWriter) (row: SeededLweRow) =
        w.WriteInt32 row.Dimension
        Fields.writeSeed w row.Seed
        w.WriteUInt64Array row.Bodies

    /// Reads one seeded row of `features` ciphertexts of the set's dimension.
    let readRow (p: TfheParameters) (features: int) (r: PayloadReader) : SeededLweRow =
        let dimension = r.ReadInt32()
        Check.equal "input ciphertext dimension" (int64 (ciphertextDimension p)) (int64 dimension)
        let seed = Fields.readSeed r
        let bodies = r.ReadUInt64Array()
        Check.equal "input ciphertexts (features)" (int64 features) (int64 bodies.Length)
        { Seed = seed; Dimension = dimension; Bodies = bodies }

    /// Writes output ciphertexts (at least one, all of one dimension).
    let writeOutputs (w: PayloadWriter) (outputs: LweCiphertext[]) =
        w.WriteInt32 outputs.Length
        w.WriteInt32 outputs[0].Dimension
        w.WriteUInt64Array(outputs |> Array.collect _.Data)

    /// Reads `count` full ciphertexts of the set's dimension.
    let readOutputs (p: TfheParameters) (count: int) (r: PayloadReader) : LweCiphertext[] =
        Check.equal "output ciphertexts" (int64 count) (int64 (r.ReadInt32()))
        let dimension = ciphertextDimension p
        Check.equal "output ciphertext dimension" (int64 dimension) (int64 (r.ReadInt32()))
        let data = r.ReadUInt64Array()
        Check.equal "output ciphertext words" (int64 count * int64 (dimension + 1)) (int64 data.Length)
        Array.init count (fun i -> { Data = Array.sub data (i * (dimension + 1)) (dimension + 1) })

    /// Payload bytes of one seeded input row of `features` ciphertexts.
    let rowBytes (features: int) = 4L + 16L + 4L + 8L * int64 features

    /// Writes a batch of seeded input rows.
    let writeRows (w: PayloadWriter) (rows: SeededLweRow[]) =
        w.WriteInt32 rows.Length
        rows |> Array.iter (writeRow w)

    /// Reads a batch of 1 to `maxRows` seeded rows of `features` ciphertexts each.
    let readRows (p: TfheParameters) (features: int) (maxRows: int) (r: PayloadReader) : SeededLweRow[] =
        let count = r.ReadInt32()
        Check.range "input rows" 1L (int64 maxRows) (int64 count)
        Check.fits r "input rows" (int64 count) (rowBytes features)
        Array.init count (fun _ -> readRow p features r)

    /// Writes the output ciphertexts of a batch of rows.
    let writeOutputRows (w: PayloadWriter) (rows: LweCiphertext[][]) =
        w.WriteInt32 rows.Length
        rows |> Array.iter (writeOutputs w)

    /// Reads the `count` output ciphertexts of each row of a batch (at least one row).
    let readOutputRows (p: TfheParameters) (count: int) (r: PayloadReader) : LweCiphertext[][] =
        let rows = r.ReadInt32()
        Check.range "output rows" 1L (int64 Int32.MaxValue) (int64 rows)
        Check.fits r "output rows" (int64 rows) (12L + 8L * int64 count * int64 (ciphertextDimension p + 1))
        Array.init rows (fun _ -> readOutputs p count r)

/// Exact framed sizes (header, payload, checksum) of the objects a server receives, from the parameter set alone: a
/// server refuses any other size before reading.
module FramedSize =

    let private framed (payload: int64) = int64 Container.HeaderBytes + payload + int64 Container.ChecksumBytes

    /// Serialized compressed evaluation keys: two seeds, the dimensions and the body arrays (see KeyFormat).
    let evaluationKeys (p: TfheParameters) =
        let bootstrapBodies = int64 p.LweDimension * int64 p.PbsLevel * int64 (p.GlweDimension + 1) * int64 p.PolynomialSize
        let keyswitchBodies = int64 p.BigLweDimension * int64 p.KsLevel
        framed ((16L + 5L * 4L + 4L + 8L * bootstrapBodies) + (16L + 4L * 4L + 4L + 8L * keyswitchBodies))

    /// One serialized input row of <c>features</c> seeded ciphertexts (see CiphertextFormat).
    let inputRow (features: int) = framed (CiphertextFormat.rowBytes features)

    /// A serialized batch of <c>rows</c> input rows of <c>features</c> seeded ciphertexts each.
    let inputBatch (features: int) (rows: int) = framed (4L + int64 rows * CiphertextFormat.rowBytes features)

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

/// Signatures of client artifacts by their model owner (ECDSA P-256 over SHA-256), so that a client which knows the
/// owner's public key detects an artifact altered in transit or by the server that serves it.
///
///     signed artifact = "FheNetS1" · i32 artifact length · artifact bytes · i32 signature length · signature
///     signature = ECDSA P-256, IEEE P1363 (r ‖ s, 64 bytes), over SHA-256("FheNet client artifact signature v1" ‖ artifact)
module ArtifactSigning =

    let private magic = "FheNetS1"B
    let private domain = "FheNet client artifact signature v1"B
    let private signatureBytes = 64

    let private signed (artifact: ReadOnlySpan<byte>) =
        let data = Array.zeroCreate<byte> (domain.Length + artifact.Length)
        domain.CopyTo(data, 0)
        artifact.CopyTo(Span(data, domain.Length, artifact.Length))
        data

    let private requireP256 (key: ECDsa) (name: string) =
        if isNull (box key) then
            raise (ArgumentNullException name)
        if key.KeySize <> 256 || key.ExportParameters(false).Curve.Oid.Value <> ECCurve.NamedCurves.nistP256.Oid.Value then
            raise (ArgumentException("the model owner's key must be an ECDSA key on the NIST P-256 curve (ECDsa.Create(ECCurve.NamedCurves.nistP256))", name))

    /// True when the bytes are a signed artifact (they start with the signature frame's magic).
    let isSigned (bytes: byte[]) =
        not (isNull (box bytes)) && ReadOnlySpan(bytes).StartsWith(ReadOnlySpan magic)

    /// Signs serialized client artifact bytes with the model owner's private P-256 key; returns the signed artifact.
    let sign (owner: ECDsa) (artifact: byte[]) : byte[] =
        requireP256 owner "owner"
        if isNull (box artifact) then
            raise (ArgumentNullException "artifact")
        let signature = owner.SignData(signed (ReadOnlySpan artifact), HashAlgorithmName.SHA256)
        let result = Array.zeroCreate<byte> (magic.Length + 4 + artifact.Length + 4 + signature.Length)
        let mutable at = 0
        let put (bytes: byte[]) =
            bytes.CopyTo(result, at)
            at <- at + bytes.Length
        let putLength (n: int) =
            Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(Span(result, at, 4), n)
            at <- at + 4
        put magic
        putLength artifact.Length
        put artifact
        putLength signature.Length
        put signature
        result

    /// The artifact and signature of signed bytes; a malformed frame is an InvalidFheDataException.
    let private split (bytes: byte[]) =
        let malformed detail = raise (InvalidFheDataException(FormatError.Malformed $"signed artifact: %s{detail}"))
        let lengthAt at =
            if at + 4 > bytes.Length then malformed "ends early"
            Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(ReadOnlySpan(bytes, at, 4))
        let artifactLength = lengthAt magic.Length
        if artifactLength < 0 || artifactLength > bytes.Length - magic.Length - 8 then
            malformed $"declares %d{artifactLength} artifact bytes"
        let signatureAt = magic.Length + 4 + artifactLength
        let length = lengthAt signatureAt
        if length <> signatureBytes || signatureAt + 4 + length <> bytes.Length then
            malformed $"declares a signature of %d{length} bytes; a P-256 signature has %d{signatureBytes} and ends the data"
        ReadOnlyMemory(bytes, magic.Length + 4, artifactLength), ReadOnlyMemory(bytes, signatureAt + 4, length)

    /// The artifact inside signed bytes after its signature verifies under the owner's public key; raises
    /// UntrustedArtifactException (Unsigned, BadSignature) otherwise.
    let verify (ownerPublicKey: ECDsa) (bytes: byte[]) : byte[] =
        requireP256 ownerPublicKey "ownerPublicKey"
        if not (isSigned bytes) then
            raise (UntrustedArtifactException ArtifactRefusal.Unsigned)
        let artifact, signature = split bytes
        if not (ownerPublicKey.VerifyData(signed artifact.Span, signature.Span, HashAlgorithmName.SHA256)) then
            raise (UntrustedArtifactException ArtifactRefusal.BadSignature)
        artifact.ToArray()

    /// The artifact inside signed bytes without checking the signature (unsigned bytes are returned as they are).
    let unwrap (bytes: byte[]) : byte[] =
        if isSigned bytes then (fst (split bytes)).ToArray() else bytes

    /// The owner's public key as SubjectPublicKeyInfo DER bytes, to hand to clients.
    let exportPublicKey (owner: ECDsa) : byte[] =
        requireP256 owner "owner"
        owner.ExportSubjectPublicKeyInfo()

    /// A public key exported by <c>exportPublicKey</c>; the caller disposes it.
    let importPublicKey (subjectPublicKeyInfo: byte[]) : ECDsa =
        let key = ECDsa.Create()
        try
            key.ImportSubjectPublicKeyInfo(ReadOnlySpan subjectPublicKeyInfo, ref 0) |> ignore
            requireP256 key "subjectPublicKeyInfo"
            key
        with
        | :? CryptographicException as e ->
            key.Dispose()
            raise (ArgumentException($"not a P-256 public key in SubjectPublicKeyInfo form: %s{e.Message}", "subjectPublicKeyInfo"))
        | _ ->
            key.Dispose()
            reraise ()

/// What a client requires of a client artifact it did not build itself (downloaded from <c>GET /client</c>, read
/// from a directory someone else wrote).
type ArtifactTrust =
    { /// The model owner's P-256 public key: when given, only artifacts signed with its private key are accepted.
      OwnerPublicKey: ECDsa option
      /// The model context (the manifest's modelId) the client expects: when given, any other model is refused.
      ExpectedModelContext: byte[] option
      /// Whether a parameter set below 128-bit security is accepted (tests only).
      InsecureParameters: InsecureParameters }

/// Checking received client artifacts.
module ArtifactTrust =

    /// No signature or model required; insecure parameter sets refused.
    let defaults =
        { OwnerPublicKey = None
          ExpectedModelContext = None
          InsecureParameters = InsecureParameters.Refuse }

    /// Verifies the signature (when the trust names an owner), decodes the artifact with the security check, and
    /// checks the pinned model context. Raises UntrustedArtifactException or InvalidFheDataException.
    let accept (trust: ArtifactTrust) (received: byte[]) : ClientArtifact =
        if isNull (box received) then
            raise (ArgumentNullException "received")
        let bytes =
            match trust.OwnerPublicKey with
            | Some owner -> ArtifactSigning.verify owner received
            | None -> ArtifactSigning.unwrap received
        let artifact =
            Container.ofBytes bytes ObjectKind.ClientArtifact ModelContext.artifacts (ClientArtifactFormat.readWith trust.InsecureParameters)
        match trust.ExpectedModelContext with
        | Some expected when not (CryptographicOperations.FixedTimeEquals(ReadOnlySpan expected, ReadOnlySpan artifact.ModelContext)) ->
            raise (UntrustedArtifactException(ArtifactRefusal.UnexpectedModel(Array.copy expected, Array.copy artifact.ModelContext)))
        | _ -> artifact
