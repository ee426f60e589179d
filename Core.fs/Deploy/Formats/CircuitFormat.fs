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
