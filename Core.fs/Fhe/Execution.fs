namespace FheNet.Fhe

open System
open System.Threading.Tasks
open FheNet
open FheNet.Integer
open FheNet.Numerics
open FheNet.Tfhe

/// How a neuron's rounded accumulator is read.
[<RequireQualifiedAccess>]
type internal NeuronRead =
    /// One lookup of all P bits.
    | Direct of LookupTable
    /// Two steps (TableWindow): the class lookup of the bits above the window, then the final lookup of the window's
    /// bits plus the class, at half the output step, plus a constant.
    | TwoStep of classes: LookupTable * final: LookupTable * offset: int64

/// A circuit bound to a server key, its lookup tables built once.
type PreparedCircuit =
    private
        { circuit: Circuit
          serverKey: ServerKey
          // Per layer and neuron, how its table is read.
          reads: NeuronRead[][]
          // Per layer: per group that exact rounding clears (the window's group last, for a two-step read), its sign
          // table and (groups of more than one bit, but a sign-only top group) the table of its remaining bits.
          groupTables: (LookupTable * LookupTable option)[][] }

    member p.Circuit = p.circuit

    /// The evaluation key it runs with.
    member p.ServerKey = p.serverKey

/// The server half of encrypted inference: linear layers on ciphertexts, rounding and table lookups by
/// programmable bootstrapping. Uses only the evaluation key.
module FheServer =

    /// The bits of the next layer's input encoding: its accumulator bits.
    let private nextBits (circuit: Circuit) (layer: LayerCircuit) = circuit.Layers[layer.Layer + 1].AccumulatorBits

    let private neuronReads (circuit: Circuit) (layer: LayerCircuit) =
        let p = circuit.Parameters
        let output = 1 <<< nextBits circuit layer
        match layer.WindowBits with
        | 0 -> layer.Tables |> Array.map (Pbs.lookupTableOfValues p output >> NeuronRead.Direct)
        | w ->
            layer.Windows
            |> Array.mapi (fun j window ->
                NeuronRead.TwoStep(
                    Pbs.lookupTableOfValues p (1 <<< (w + 1)) (TableWindow.classEntries (layer.LookupBits - w) window),
                    Pbs.lookupTableOfValues p (2 * output) (TableWindow.finalEntries window layer.Tables[j]),
                    TableWindow.finalOffset window
                ))

    /// Binds a circuit to an evaluation key and builds its tables, once the prepared circuit is known to fit
    /// `budgetBytes` (FheResourceException; a server checks with ResourceCheck.prepare before expanding a key).
    let prepareWithin (budgetBytes: int64) (circuit: Circuit) (serverKey: ServerKey) : PreparedCircuit =
        if serverKey.Parameters <> circuit.Parameters then
            raise (ArgumentException($"The evaluation key is for parameter set %s{serverKey.Parameters.Name}, the circuit needs %s{circuit.Parameters.Name}.", "serverKey"))
        ResourceCheck.prepare budgetBytes circuit
        let p = circuit.Parameters
        { circuit = circuit
          serverKey = serverKey
          reads = circuit.Layers |> Array.map (fun layer -> if layer.HasTables then neuronReads circuit layer else [||])
          groupTables =
            circuit.Layers
            |> Array.map (fun layer ->
                // The index of a sign-only top rounding group (-1: none).
                let signOnly =
                    if layer.SignOnlyTopGroup circuit.Rounding then (layer.RoundingGroups circuit.Rounding).Length - 1 else -1
                layer.ClearedGroups circuit.Rounding
                |> List.mapi (fun i (low, size) ->
                    let top = low + size - 1
                    // Output −2^top at Δ_(B+1) = Δ_B / 2: the lookup gives ∓2^(top−1)·Δ_B for a top bit 0 / 1.
                    let sign = Pbs.lookupTableWith p 1 (1 <<< (layer.AccumulatorBits + 1)) (fun _ -> -(1L <<< top))
                    // The group's other bits v, read as a (size−1)-bit message, give v·2^low at Δ_B.
                    let rest =
                        if size = 1 || i = signOnly then None
                        else Some(Pbs.lookupTableWith p (1 <<< (size - 1)) (1 <<< layer.AccumulatorBits) (fun v -> int64 v <<< low))
                    sign, rest)
                |> Array.ofList) }

    /// prepareWithin the process's default memory budget (MemoryBudget.defaultBytes).
    let prepare (circuit: Circuit) (serverKey: ServerKey) : PreparedCircuit =
        prepareWithin (MemoryBudget.defaultBytes ()) circuit serverKey

    /// Clears one group (low, size) of the bits of c (at Δ_B, every bit below `low` already zero): multiplying by
    /// 2^(B−low−size+1) brings the group's top bit onto the padding bit and wraps away every higher bit; a sign
    /// bootstrap reads that bit, and a (size−1)-bit lookup the bits below it. Returns c without the group, and the
    /// group's bits at their weight (fresh bootstrap outputs, without the accumulator's noise).
    let private clearGroup (prepared: PreparedCircuit) (layer: LayerCircuit) (g: int) (low: int, size: int) (c: LweCiphertext) =
        let b = layer.AccumulatorBits
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
        let top =
            Pbs.apply prepared.serverKey sign centred
            |> Lwe.addPlaintextWith (Encoding.WithPadding(1 <<< (b + 1))) (1L <<< (low + size - 1))
        let withoutTop = Lwe.sub c top
        match rest with
        | Some table ->
            let others = Pbs.apply prepared.serverKey table (Lwe.mulScalar (1L <<< (b - low - size + 1)) withoutTop)
            Lwe.sub withoutTop others, Lwe.add top others
        | None -> withoutTop, top

    /// round_half_up(y / 2^t) of a ciphertext of y at Δ_B, as a ciphertext of the result at Δ_(B−t): the dropped
    /// bits are cleared group by group from the lowest. Behind a sign-only top group (low, c), the bits below its top
    /// bit stay, a multiple of 2^low in [0, 2^(t−1) − 2^low], and are centred on zero: within a quarter of 2^t.
    let private roundExactly (prepared: PreparedCircuit) (layer: LayerCircuit) (y: LweCiphertext) =
        let groups = layer.RoundingGroups prepared.circuit.Rounding
        let half = Lwe.addPlaintextWith (Encoding.WithPadding(1 <<< layer.AccumulatorBits)) (1L <<< (layer.Shift - 1)) y
        let cleared = groups |> List.indexed |> List.fold (fun c (g, group) -> fst (clearGroup prepared layer g group c)) half
        if layer.SignOnlyTopGroup prepared.circuit.Rounding then
            let low = fst (List.last groups)
            // In half steps of y: minus (2^(t−1) − 2^low) / 2.
            Lwe.addPlaintextWith (Encoding.WithPadding(1 <<< (layer.AccumulatorBits + 1))) -((1L <<< (layer.Shift - 1)) - (1L <<< low)) cleared
        else
            cleared

    /// The two-step read of a rounded value v = h·2^W + l (at Δ_B·2^t): clear l's group, look h's class up, and look
    /// up 2^(P−W−1)·l + class, which is l plus the class at the final lookup's step Δ_B·2^(t+P−W−1).
    let private readTwoSteps (prepared: PreparedCircuit) (layer: LayerCircuit) (classes, final, offset) (rounded: LweCiphertext) =
        let groups = layer.RoundingGroups prepared.circuit.Rounding
        let low, w = layer.Shift, layer.WindowBits
        let high, lowBits = clearGroup prepared layer groups.Length (low, w) rounded
        let index = Lwe.add (Lwe.mulScalar (1L <<< (layer.LookupBits - w - 1)) lowBits) (Pbs.apply prepared.serverKey classes high)
        Pbs.apply prepared.serverKey final index
        |> Lwe.addPlaintextWith (Encoding.WithPadding(2 <<< nextBits prepared.circuit layer)) offset

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
            match prepared.reads[layer.Layer][j] with
            | NeuronRead.Direct table -> Pbs.apply prepared.serverKey table input
            | NeuronRead.TwoStep(classes, final, offset) -> readTwoSteps prepared layer (classes, final, offset) input

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

    let private layerOutputs (rng: TrainingRng) (circuit: Circuit) (layer: LayerCircuit) (x: int64[]) =
        let pbsVariance, lookupExtra = variances circuit.Parameters
        let model = circuit.Model.Layers[layer.Layer]
        let b = layer.AccumulatorBits
        let p = layer.LookupBits
        let t = layer.Shift
        let windows = layer.Windows
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
                match circuit.Rounding with
                | RoundingMethod.Exact
                | RoundingMethod.ExactPerBit when t > 0 || windows.Length > 0 ->
                    // Each group's read is off when keyswitch + modulus-switch noise passes half a step of its
                    // (size−1)-bit decoding (a quarter turn for one bit); the rest is subtracted as read.
                    let mutable v = if t > 0 then y + (1L <<< (t - 1)) else y
                    let clear (low, size) =
                        let read = ((v >>> low) &&& ((1L <<< size) - 1L)) + steps rng lookupExtra (size - 1)
                        v <- v - (read <<< low)
                        read
                    let groups = layer.RoundingGroups circuit.Rounding
                    let signOnly = layer.SignOnlyTopGroup circuit.Rounding
                    groups
                    |> List.iteri (fun g (low, size) ->
                        if signOnly && g = groups.Length - 1 then
                            // Only the top bit of the (noisily read) group is subtracted.
                            let read = ((v >>> low) &&& ((1L <<< size) - 1L)) + steps rng lookupExtra (size - 1)
                            v <- v - (((read >>> (size - 1)) &&& 1L) <<< (low + size - 1))
                        else
                            clear (low, size) |> ignore)
                    let subtracted = layer.RoundingBootstraps circuit.Rounding
                    match layer.WindowGroup with
                    | Some (low, w) ->
                        let window = windows[j]
                        let subtracted = subtracted + LayerCircuit.GroupBootstraps(low, w)
                        let l, h =
                            if signOnly then
                                // The bits the sign-only group left ride along, centred, as a fraction of an entry:
                                // the window's read and the class lookup round them away unless noise adds up.
                                let centre = float ((1L <<< (t - 1)) - (1L <<< fst (List.last groups))) / 2.0
                                let noise variance bits = rng.NextGaussian() * sqrt variance * Math.ScaleB(1.0, bits + 1)
                                let within = float (v &&& ((1L <<< (t + w)) - 1L)) - centre
                                let l = int64 (Math.Round(within / Math.ScaleB(1.0, t) + noise lookupExtra (w - 1))) &&& ((1L <<< w) - 1L)
                                v <- v - (l <<< t)
                                let variance = lookupExtra + float subtracted * pbsVariance
                                l, int64 (Math.Round((float v - centre) / Math.ScaleB(1.0, t + w) + noise variance (p - w)))
                            else
                                let l = clear (low, w)
                                l, (v >>> (t + w)) + steps rng (lookupExtra + float subtracted * pbsVariance) (p - w)
                        let z =
                            l + Negacyclic.entry (TableWindow.classEntries (p - w) window) h
                            + steps rng (lookupExtra + layer.FinalReadFactor * pbsVariance) (w + 1)
                        (Negacyclic.entry (TableWindow.finalEntries window layer.Tables[j]) z + TableWindow.finalOffset window) / 2L
                    | None ->
                        Negacyclic.entry layer.Tables[j] ((v >>> t) + steps rng (lookupExtra + float subtracted * pbsVariance) p)
                | RoundingMethod.Approximate when t > 0 ->
                    // The table reads (y + 1/2) / 2^t to the nearest integer, its own noise included.
                    let exact = (float y + 0.5) / Math.ScaleB(1.0, t)
                    let noise = rng.NextGaussian() * sqrt lookupExtra * Math.ScaleB(1.0, p + 1)
                    Negacyclic.entry layer.Tables[j] (int64 (Math.Floor(exact + noise + 0.5)))
                | _ -> Negacyclic.entry layer.Tables[j] (y + steps rng lookupExtra p))

    /// The output accumulators of one row of input codes, with simulated bootstrap errors.
    let forward (rng: TrainingRng) (circuit: Circuit) (codes: int[]) : int64[] =
        let mutable x = codes |> Array.map int64
        for layer in circuit.Layers do
            x <- layerOutputs rng circuit layer x
        x
