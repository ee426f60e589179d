namespace FheNet.Fhe

open System
open System.Threading.Tasks
open FheNet
open FheNet.Integer
open FheNet.Numerics
open FheNet.Tfhe

/// The keys of a compiled circuit: the client keeps the client key; the server gets only the evaluation key.
type CircuitKeys =
    { ClientKey: ClientKey
      /// The evaluation key as seeds and bodies, for transfer to a server.
      CompressedServerKey: CompressedServerKey }

/// The client half of encrypted inference: key generation, quantization + encryption of rows, decryption.
module FheClient =

    /// Fresh keys for a circuit's parameter set (refused if the set fails the 128-bit security check).
    let keygen (circuit: Circuit) : CircuitKeys =
        let clientKey = ClientKey.generate circuit.Parameters
        { ClientKey = clientKey
          CompressedServerKey = CompressedServerKey.generate clientKey }

    let private inputEncoding (circuit: Circuit) = Encoding.WithPadding(1 <<< circuit.InputAccumulatorBits)

    let private checkRow (circuit: Circuit) (row: float32[]) =
        let features = circuit.Model.Layers[0].Weights[0].Length
        if row.Length <> features then
            raise (InvalidShapeException("row", $"has %d{row.Length} features; the model takes %d{features}"))
        Guard.allFinite "row" (ReadOnlySpan row)

    /// Quantizes one row of features and encrypts each code (seeded: a seed and a body per feature) at the
    /// precision of the first layer's accumulators.
    let encryptRow (keys: CircuitKeys) (circuit: Circuit) (row: float32[]) : SeededLweCiphertext[] =
        checkRow circuit row
        let encoding = inputEncoding circuit
        IntegerModel.quantizeRow circuit.Model row
        |> Array.map (fun code -> Lwe.encryptSeededWith keys.ClientKey encoding (int64 code))

    /// The output accumulators of the last layer, from the server's result ciphertexts.
    let decrypt (keys: CircuitKeys) (circuit: Circuit) (outputs: LweCiphertext[]) : int64[] =
        let last = Array.last circuit.Layers
        if outputs.Length <> last.Neurons then
            raise (InvalidShapeException("outputs", $"has %d{outputs.Length} ciphertexts; the model has %d{last.Neurons} outputs"))
        let encoding = Encoding.WithPadding(1 <<< last.AccumulatorBits)
        outputs |> Array.mapi (fun j c -> Lwe.decryptWith keys.ClientKey encoding c - last.Offsets[j])

/// A circuit bound to a server key, its lookup tables built once.
type PreparedCircuit =
    private
        { circuit: Circuit
          serverKey: ServerKey
          // Per layer: the neurons' tables, and per rounding group of exact rounding its sign table and (groups of more
          // than one bit) the table of its remaining bits.
          tables: LookupTable[][]
          groupTables: (LookupTable * LookupTable option)[][] }

    member p.Circuit = p.circuit

    /// The evaluation key it runs with.
    member p.ServerKey = p.serverKey

/// The server half of encrypted inference: linear layers on ciphertexts, rounding and table lookups by
/// programmable bootstrapping. Uses only the evaluation key.
module FheServer =

    /// Binds a circuit to an evaluation key and builds its tables.
    let prepare (circuit: Circuit) (serverKey: ServerKey) : PreparedCircuit =
        if serverKey.Parameters <> circuit.Parameters then
            raise (ArgumentException($"The evaluation key is for parameter set %s{serverKey.Parameters.Name}, the circuit needs %s{circuit.Parameters.Name}.", "serverKey"))
        let p = circuit.Parameters
        let next l = circuit.Layers[l + 1].AccumulatorBits
        { circuit = circuit
          serverKey = serverKey
          tables =
            circuit.Layers
            |> Array.map (fun layer ->
                if layer.HasTables then layer.Tables |> Array.map (Pbs.lookupTableOfValues p (1 <<< next layer.Layer))
                else [||])
          groupTables =
            circuit.Layers
            |> Array.map (fun layer ->
                match circuit.Rounding with
                | RoundingMethod.Exact
                | RoundingMethod.ExactPerBit when layer.HasTables ->
                    layer.RoundingGroups circuit.Rounding
                    |> List.map (fun (low, size) ->
                        let top = low + size - 1
                        // Output −2^top at Δ_(B+1) = Δ_B / 2: the lookup gives ∓2^(top−1)·Δ_B for a top bit 0 / 1.
                        let sign = Pbs.lookupTableWith p 1 (1 <<< (layer.AccumulatorBits + 1)) (fun _ -> -(1L <<< top))
                        // The group's other bits v, read as a (size−1)-bit message, give v·2^low at Δ_B.
                        let rest =
                            if size = 1 then None
                            else Some(Pbs.lookupTableWith p (1 <<< (size - 1)) (1 <<< layer.AccumulatorBits) (fun v -> int64 v <<< low))
                        sign, rest)
                    |> Array.ofList
                | _ -> [||]) }

    /// round_half_up(y / 2^t) of a ciphertext of y at Δ_B, as a ciphertext of the result at Δ_(B−t). The dropped
    /// bits are cleared group by group from the lowest: multiplying by 2^(B−low−size+1) brings the group's top bit
    /// onto the padding bit and wraps away every higher bit; a sign bootstrap reads that bit, and a (size−1)-bit
    /// lookup the bits below it, each subtracted at its weight.
    let private roundExactly (prepared: PreparedCircuit) (layer: LayerCircuit) (y: LweCiphertext) =
        let b = layer.AccumulatorBits
        let half = Encoding.WithPadding(1 <<< (b + 1))
        let mutable c = Lwe.addPlaintextWith (Encoding.WithPadding(1 <<< b)) (1L <<< (layer.Shift - 1)) y
        let groups = layer.RoundingGroups prepared.circuit.Rounding
        groups
        |> List.iteri (fun g (low, size) ->
            let sign, rest = prepared.groupTables[layer.Layer][g]
            let moved = Lwe.mulScalar (1L <<< (b - low - size + 1)) c
            // A one-bit group sits on the padding bit (phase 0 or ½); a wider one is centred in its half of the torus
            // (plus half a group step, minus a quarter turn) so the one-box sign lookup reads its top bit.
            let centred =
                if size = 1 then moved
                else
                    moved
                    |> Lwe.addPlaintextWith (Encoding.WithPadding(1 <<< size)) 1L
                    |> Lwe.addPlaintextWith (Encoding.WithPadding 2) -1L
            let top = Pbs.apply prepared.serverKey sign centred
            c <- Lwe.sub c (Lwe.addPlaintextWith half (1L <<< (low + size - 1)) top)
            match rest with
            | Some table ->
                let remaining = Lwe.mulScalar (1L <<< (b - low - size + 1)) c
                c <- Lwe.sub c (Pbs.apply prepared.serverKey table remaining)
            | None -> ())
        c

    let private neuron (prepared: PreparedCircuit) (layer: LayerCircuit) (inputs: LweCiphertext[]) (j: int) =
        let model = prepared.circuit.Model.Layers[layer.Layer]
        let weights = model.Weights[j]
        // Pruned weights cost nothing: leave them out of the combination.
        let kept = [| for i in 0 .. weights.Length - 1 do if weights[i] <> 0 then yield i |]
        let encoding = Encoding.WithPadding(1 <<< layer.AccumulatorBits)
        let bias = model.Biases[j] + layer.Offsets[j]
        let y =
            if kept.Length = 0 then
                Lwe.trivial prepared.circuit.Parameters 0L |> Lwe.addPlaintextWith encoding bias
            else
                Lwe.linearCombinationWith encoding (kept |> Array.map (fun i -> int64 weights[i])) (kept |> Array.map (fun i -> inputs[i])) bias
        if not layer.HasTables then
            y
        else
            let input =
                match prepared.circuit.Rounding with
                | RoundingMethod.Exact
                | RoundingMethod.ExactPerBit when layer.Shift > 0 -> roundExactly prepared layer y
                // Half a step of y centres the table's boxes between two rounding thresholds.
                | RoundingMethod.Approximate when layer.Shift > 0 ->
                    Lwe.addPlaintextWith (Encoding.WithPadding(1 <<< (layer.AccumulatorBits + 1))) 1L y
                | _ -> y
            Pbs.apply prepared.serverKey (prepared.tables[layer.Layer][j]) input

    /// The layers in order, each in parallel over its neurons; also the seconds each layer took.
    let private run (cancellation: Threading.CancellationToken) (prepared: PreparedCircuit) (inputs: LweCiphertext[]) =
        let features = prepared.circuit.Model.Layers[0].Weights[0].Length
        if inputs.Length <> features then
            raise (InvalidShapeException("inputs", $"has %d{inputs.Length} ciphertexts; the model takes %d{features} features"))
        let expected = prepared.circuit.Parameters.BigLweDimension + 1
        inputs
        |> Array.iteri (fun i c ->
            if c.Data.Length <> expected then
                raise (DimensionMismatchException($"inputs[%d{i}]", "the ciphertext size (k·N + 1)", expected, c.Data.Length)))
        let mutable x = inputs
        let seconds =
            prepared.circuit.Layers
            |> Array.map (fun layer ->
                let watch = Diagnostics.Stopwatch.StartNew()
                let out = Array.zeroCreate layer.Neurons
                // One worker per core: bootstraps are long and CPU-bound, and more threads only thrash the caches.
                let options = ParallelOptions(MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = cancellation)
                Parallel.For(0, layer.Neurons, options, fun j -> out[j] <- neuron prepared layer x j) |> ignore
                x <- out
                watch.Elapsed.TotalSeconds)
        x, seconds

    /// `evaluate`, also returning the seconds each layer took.
    let evaluateProfiled (prepared: PreparedCircuit) (inputs: LweCiphertext[]) : LweCiphertext[] * float[] =
        run Threading.CancellationToken.None prepared inputs

    /// `evaluate` that stops between neurons once `cancellation` fires (OperationCanceledException): a server
    /// abandons the work of a client that disconnected.
    let evaluateCancellable (cancellation: Threading.CancellationToken) (prepared: PreparedCircuit) (inputs: LweCiphertext[]) =
        fst (run cancellation prepared inputs)

    /// The encrypted inference of one sample: the input ciphertexts (one per feature) to the output ciphertexts
    /// (the last layer's accumulators, offset), in parallel over the neurons of each layer.
    let evaluate (prepared: PreparedCircuit) (inputs: LweCiphertext[]) : LweCiphertext[] =
        fst (evaluateProfiled prepared inputs)

    /// Median milliseconds of one keyswitch + bootstrap with the circuit's key on this machine (one thread).
    let bootstrapMilliseconds (prepared: PreparedCircuit) =
        let p = prepared.circuit.Parameters
        let table = Pbs.lookupTableWith p 2 2 int64
        // Uniform random words: a ciphertext under some key. A trivial one (zero mask) would skip every rotation.
        let input: LweCiphertext = { Data = Array.zeroCreate (p.BigLweDimension + 1) }
        Security.Cryptography.RandomNumberGenerator.Fill(Runtime.InteropServices.MemoryMarshal.AsBytes(Span input.Data))
        Pbs.apply prepared.serverKey table input |> ignore
        let times =
            Array.init 5 (fun _ ->
                let watch = Diagnostics.Stopwatch.StartNew()
                Pbs.apply prepared.serverKey table input |> ignore
                watch.Elapsed.TotalMilliseconds)
        Array.sortInPlace times
        times[2]

/// The integer program with each bootstrap's error drawn from the noise model of the circuit's parameter set: what
/// `execute` would compute, without encryption. At the default p_error it equals the integer model.
module FheSimulator =

    /// Bootstrap-output variance, and the extra variance of a lookup (keyswitch + modulus switch).
    let private variances (p: TfheParameters) =
        NoiseModel.pbsVariance p, NoiseModel.blindRotationVariance p 0.0

    /// A normal draw of the given variance, in units of a step of 2^-(bits+1) of the torus, rounded to an integer.
    let private steps (rng: TrainingRng) (variance: float) (bits: int) =
        int64 (Math.Round(rng.NextGaussian() * sqrt variance * Math.ScaleB(1.0, bits + 1)))

    /// The value a lookup on P bits returns for index k ± noise: negacyclic beyond the table (negated entries).
    let private lookup (table: int64[]) (index: int64) =
        let size = int64 table.Length
        let wrapped = ((index % (2L * size)) + 2L * size) % (2L * size)
        if wrapped < size then table[int wrapped] else -table[int (wrapped - size)]

    let private layerOutputs (rng: TrainingRng) (circuit: Circuit) (layer: LayerCircuit) (x: int64[]) =
        let pbsVariance, lookupExtra = variances circuit.Parameters
        let model = circuit.Model.Layers[layer.Layer]
        let b = layer.AccumulatorBits
        let p = layer.LookupBits
        let t = layer.Shift
        model.Weights
        |> Array.mapi (fun j w ->
            let mutable acc = model.Biases[j]
            let mutable norm2 = 0.0
            for i in 0 .. w.Length - 1 do
                acc <- acc + int64 w[i] * x[i]
                norm2 <- norm2 + float w[i] * float w[i]
            // The combination's noise, read at the precision of y.
            let y = acc + layer.Offsets[j] + steps rng (norm2 * pbsVariance) b
            if not layer.HasTables then
                // The client decodes y modulo 2^(B+1), as the ciphertext wraps.
                let period = 1L <<< (b + 1)
                ((y % period) + period) % period - layer.Offsets[j]
            else
                let index =
                    match circuit.Rounding with
                    | RoundingMethod.Exact
                    | RoundingMethod.ExactPerBit when t > 0 ->
                        // Each group's read is off when keyswitch + modulus-switch noise passes half a step of its
                        // (size−1)-bit decoding (a quarter turn for one bit); the rest is subtracted as read.
                        let mutable v = y + (1L <<< (t - 1))
                        let groups = layer.RoundingGroups circuit.Rounding
                        for low, size in groups do
                            let group = (v >>> low) &&& ((1L <<< size) - 1L)
                            let read = group + steps rng lookupExtra (size - 1)
                            v <- v - (read <<< low)
                        let subtracted = groups |> List.sumBy (fun (_, size) -> if size = 1 then 1 else 2)
                        (v >>> t) + steps rng (lookupExtra + float subtracted * pbsVariance) p
                    | RoundingMethod.Approximate when t > 0 ->
                        // The table reads (y + 1/2) / 2^t to the nearest integer, its own noise included.
                        let exact = (float y + 0.5) / Math.ScaleB(1.0, t)
                        let noise = rng.NextGaussian() * sqrt lookupExtra * Math.ScaleB(1.0, p + 1)
                        int64 (Math.Floor(exact + noise + 0.5))
                    | _ -> y + steps rng lookupExtra p
                lookup layer.Tables[j] index)

    /// The output accumulators of one row of input codes, with simulated bootstrap errors.
    let forward (rng: TrainingRng) (circuit: Circuit) (codes: int[]) : int64[] =
        let mutable x = codes |> Array.map int64
        for layer in circuit.Layers do
            x <- layerOutputs rng circuit layer x
        x
