namespace FheNet.Tfhe

open System
open System.Threading
open System.Threading.Tasks

/// Encryption, decryption and the leveled operations on LWE ciphertexts of a parameter set. Ciphertexts live under
/// the key that the set's order names (big for KS-PBS, small for PBS-KS); messages are integers of the plaintext
/// space p = message × carry, with one padding bit.
module Lwe =

    let private encodingOf (clientKey: ClientKey) = Parameters.encoding clientKey.Parameters

    let private encryptPlaintext (clientKey: ClientKey) (plaintext: uint64) =
        let key, noise = clientKey.CiphertextKey
        LweEncryption.encrypt key (AesCtrGenerator(Seed.Fresh())) (AesCtrGenerator.Secret()) noise plaintext

    /// An encryption of a message in [0, p); raises for a message outside that range.
    let encrypt (clientKey: ClientKey) (message: int64) : LweCiphertext =
        encryptPlaintext clientKey ((encodingOf clientKey).Encode message)

    /// An encryption of any integer reduced modulo 2p (two's complement with the padding bit as sign), e.g. a signed
    /// value in [-p, p).
    let encryptWrapping (clientKey: ClientKey) (message: int64) : LweCiphertext =
        encryptPlaintext clientKey ((encodingOf clientKey).EncodeWrapping message)

    /// An encryption of any integer in another encoding than the set's (wrapping modulo 2p of that encoding): a
    /// circuit encodes each value at the precision its consumer needs.
    let encryptWith (clientKey: ClientKey) (encoding: Encoding) (message: int64) : LweCiphertext =
        encryptPlaintext clientKey (encoding.EncodeWrapping message)

    /// A seeded encryption of a message in [0, p): the seed and the body only.
    let encryptSeeded (clientKey: ClientKey) (message: int64) : SeededLweCiphertext =
        let key, noise = clientKey.CiphertextKey
        LweEncryption.encryptSeeded key (AesCtrGenerator.Secret()) noise ((encodingOf clientKey).Encode message)

    /// A seeded encryption of any integer in the given encoding (wrapping).
    let encryptSeededWith (clientKey: ClientKey) (encoding: Encoding) (message: int64) : SeededLweCiphertext =
        let key, noise = clientKey.CiphertextKey
        LweEncryption.encryptSeeded key (AesCtrGenerator.Secret()) noise (encoding.EncodeWrapping message)

    /// The full ciphertext of a seeded one.
    let expand (seeded: SeededLweCiphertext) : LweCiphertext = LweEncryption.expand seeded

    let private phase (clientKey: ClientKey) (ciphertext: LweCiphertext) =
        LweEncryption.phase (fst clientKey.CiphertextKey) ciphertext

    /// The message in [0, p) (the padding bit dropped, as TFHE-rs's `decrypt`).
    let decrypt (clientKey: ClientKey) (ciphertext: LweCiphertext) : int64 =
        let e = encodingOf clientKey
        e.Decode(phase clientKey ciphertext) % int64 e.PlaintextModulus

    /// The message of the given encoding, padding bit included: a value in [0, 2p).
    let decryptWith (clientKey: ClientKey) (encoding: Encoding) (ciphertext: LweCiphertext) : int64 =
        encoding.Decode(phase clientKey ciphertext)

    /// The message with the padding bit read as a sign: a value in [-p, p).
    let decryptSigned (clientKey: ClientKey) (ciphertext: LweCiphertext) : int64 =
        (encodingOf clientKey).DecodeSigned(phase clientKey ciphertext)

    let private sameDimension (a: LweCiphertext) (b: LweCiphertext) =
        if a.Dimension <> b.Dimension then
            raise (DimensionMismatchException("b", "the LWE dimension of the second ciphertext", a.Dimension, b.Dimension))

    /// a + b (messages add modulo 2p).
    let add (a: LweCiphertext) (b: LweCiphertext) : LweCiphertext =
        sameDimension a b
        { Data = Array.map2 (+) a.Data b.Data }

    /// a - b.
    let sub (a: LweCiphertext) (b: LweCiphertext) : LweCiphertext =
        sameDimension a b
        { Data = Array.map2 (-) a.Data b.Data }

    /// -a.
    let neg (a: LweCiphertext) : LweCiphertext = { Data = a.Data |> Array.map (fun x -> 0UL - x) }

    /// w·a for a small integer w (the noise's standard deviation grows by |w|).
    let mulScalar (weight: int64) (a: LweCiphertext) : LweCiphertext =
        let w = uint64 weight
        { Data = a.Data |> Array.map (fun x -> x * w) }

    /// a + m, m an integer encoded (wrapping) with the given encoding.
    let addPlaintextWith (encoding: Encoding) (message: int64) (a: LweCiphertext) : LweCiphertext =
        let data = Array.copy a.Data
        data[data.Length - 1] <- data[data.Length - 1] + encoding.EncodeWrapping message
        { Data = data }

    /// a + m, m an integer encoded (wrapping) with the set's encoding.
    let addPlaintext (parameters: TfheParameters) (message: int64) (a: LweCiphertext) : LweCiphertext =
        addPlaintextWith (Parameters.encoding parameters) message a

    /// Σ w_i·c_i + bias, the bias in the given encoding: the linear part of a network layer between two bootstraps.
    /// Its noise variance is Σ w_i² times a single ciphertext's (the 2-norm of `weights`, squared).
    let linearCombinationWith (encoding: Encoding) (weights: int64[]) (ciphertexts: LweCiphertext[]) (bias: int64) =
        if weights.Length <> ciphertexts.Length then
            raise (DimensionMismatchException("weights", "the number of weights", ciphertexts.Length, weights.Length))
        FheNet.Guard.nonEmpty "ciphertexts" ciphertexts.Length
        let size = ciphertexts[0].Data.Length
        let data = Array.zeroCreate<uint64> size
        for i in 0 .. ciphertexts.Length - 1 do
            sameDimension ciphertexts[0] ciphertexts[i]
            let w = uint64 weights[i]
            let c = ciphertexts[i].Data
            for j in 0 .. size - 1 do
                data[j] <- data[j] + w * c[j]
        data[size - 1] <- data[size - 1] + encoding.EncodeWrapping bias
        { Data = data }

    /// Σ w_i·c_i + bias with the bias in the set's encoding.
    let linearCombination (parameters: TfheParameters) (weights: int64[]) (ciphertexts: LweCiphertext[]) (bias: int64) =
        linearCombinationWith (Parameters.encoding parameters) weights ciphertexts bias

    /// The noiseless ciphertext of a message (under any key of the set's ciphertext dimension).
    let trivial (parameters: TfheParameters) (message: int64) : LweCiphertext =
        let dimension =
            match parameters.Order with
            | PbsOrder.KeyswitchBootstrap -> parameters.BigLweDimension
            | PbsOrder.BootstrapKeyswitch -> parameters.LweDimension
        LweEncryption.trivial dimension ((Parameters.encoding parameters).EncodeWrapping message)

/// A lookup table ready for bootstrapping: the function's values and its test polynomial.
type LookupTable =
    { /// The input space size (the table has this many entries).
      InputModulus: int
      /// How the outputs are encoded.
      Output: Encoding
      /// f(0), …, f(p_in - 1).
      Values: int64[]
      /// The trivial GLWE test polynomial ((k+1)·N values).
      Polynomial: uint64[]
      GlweDimension: int
      PolynomialSize: int }

/// Buffers of one KS-PBS/PBS-KS on one thread.
[<Sealed>]
type private PbsWorkspace(p: TfheParameters) =
    member val Scratch = BootstrapScratch(p.GlweDimension, p.PolynomialSize, p.PbsLevel)
    member val Switched = Array.zeroCreate<int> (p.LweDimension + 1)
    member val Small = Array.zeroCreate<uint64> (p.LweDimension + 1)
    member val Big = Array.zeroCreate<uint64> (p.BigLweDimension + 1)
    member _.Parameters = p

/// Programmable bootstrapping: any function of the message, evaluated while refreshing the noise.
module Pbs =

    let private workspace = new ThreadLocal<PbsWorkspace option>(fun () -> None)

    let private workspaceFor (p: TfheParameters) =
        match workspace.Value with
        | Some w when obj.ReferenceEquals(w.Parameters, p) || w.Parameters = p -> w
        | _ ->
            let w = PbsWorkspace p
            workspace.Value <- Some w
            w

    /// The table of f over the set's plaintext space, outputs in the same encoding. f may return any integer: it is
    /// reduced modulo 2p (negative values as two's complement).
    let lookupTableWith (parameters: TfheParameters) (inputModulus: int) (outputModulus: int) (f: int -> int64) : LookupTable =
        let output = Encoding.WithPadding outputModulus
        // One box (input modulus 1) is the sign lookup: it returns f(0) for a phase in the first half of the torus
        // and -f(0) in the second, which exact rounding uses to read the padding bit.
        if inputModulus < 1 || not (Numerics.BitOperations.IsPow2 inputModulus) then
            raise (FheNet.ParameterOutOfRangeException("inputModulus", inputModulus, "a power of two (1 for a sign lookup)"))
        if inputModulus > parameters.PolynomialSize then
            raise (FheNet.ParameterOutOfRangeException("inputModulus", inputModulus, $"at most the polynomial size %d{parameters.PolynomialSize}"))
        let values = Array.init inputModulus f
        { InputModulus = inputModulus
          Output = output
          Values = values
          Polynomial = LookupTablePolynomial.build parameters.GlweDimension parameters.PolynomialSize inputModulus output values
          GlweDimension = parameters.GlweDimension
          PolynomialSize = parameters.PolynomialSize }

    /// The table of f from the set's p-element space to itself.
    let lookupTable (parameters: TfheParameters) (f: int -> int64) : LookupTable =
        lookupTableWith parameters parameters.PlaintextModulus parameters.PlaintextModulus f

    /// The table from explicit values (its length is the input space size, a power of two).
    let lookupTableOfValues (parameters: TfheParameters) (outputModulus: int) (values: int64[]) : LookupTable =
        if values.Length < 2 || not (Numerics.BitOperations.IsPow2 values.Length) then
            raise (FheNet.InvalidShapeException("values", $"has %d{values.Length} entries; a table needs a power of two of at least 2"))
        lookupTableWith parameters values.Length outputModulus (fun i -> values[i])

    let private checkTable (serverKey: ServerKey) (lut: LookupTable) =
        let p = serverKey.Parameters
        if lut.PolynomialSize <> p.PolynomialSize then
            raise (DimensionMismatchException("lut", "the table's polynomial size", p.PolynomialSize, lut.PolynomialSize))
        if lut.GlweDimension <> p.GlweDimension then
            raise (DimensionMismatchException("lut", "the table's GLWE dimension", p.GlweDimension, lut.GlweDimension))
        // A circuit's tables may read fewer bits than the set's plaintext space (whether the set's noise suits them is
        // the compiler's concern); they must fit the polynomial.
        if lut.InputModulus < 1 || lut.InputModulus > p.PolynomialSize || not (Numerics.BitOperations.IsPow2 lut.InputModulus) then
            raise (DimensionMismatchException("lut", "the table's input size (a power of two up to N)", p.PlaintextModulus, lut.InputModulus))

    let private checkDimension (expected: int) (ciphertext: LweCiphertext) =
        if ciphertext.Dimension <> expected then
            raise (DimensionMismatchException("ciphertext", "the LWE dimension of the ciphertext", expected, ciphertext.Dimension))

    /// The keyswitch alone: a big-key ciphertext (k·N) to the small key (n).
    let keyswitch (serverKey: ServerKey) (ciphertext: LweCiphertext) : LweCiphertext =
        checkDimension serverKey.Keyswitch.InputDimension ciphertext
        let output = Array.zeroCreate<uint64> (serverKey.Keyswitch.OutputDimension + 1)
        Keyswitch.keyswitchInto SimdPath.best serverKey.Keyswitch ciphertext.Data 0 output
        { Data = output }

    /// The bootstrap alone: a small-key ciphertext (n) to a big-key ciphertext (k·N) holding f(m).
    let bootstrap (serverKey: ServerKey) (lut: LookupTable) (ciphertext: LweCiphertext) : LweCiphertext =
        checkTable serverKey lut
        checkDimension serverKey.Parameters.LweDimension ciphertext
        let w = workspaceFor serverKey.Parameters
        let output = Array.zeroCreate<uint64> (serverKey.Parameters.BigLweDimension + 1)
        Bootstrap.programmableBootstrapInto
            SimdPath.best
            serverKey.Bootstrap
            serverKey.Parameters.ModulusSwitch
            lut.Polynomial
            (ReadOnlySpan ciphertext.Data)
            (Span output)
            w.Switched
            w.Scratch
        { Data = output }

    let private applyChecked (serverKey: ServerKey) (lut: LookupTable) (ciphertext: LweCiphertext) =
        let p = serverKey.Parameters
        let w = workspaceFor p
        match p.Order with
        | PbsOrder.KeyswitchBootstrap ->
            Keyswitch.keyswitchInto SimdPath.best serverKey.Keyswitch ciphertext.Data 0 w.Small
            let output = Array.zeroCreate<uint64> (p.BigLweDimension + 1)
            Bootstrap.programmableBootstrapInto
                SimdPath.best serverKey.Bootstrap p.ModulusSwitch lut.Polynomial (ReadOnlySpan w.Small) (Span output) w.Switched w.Scratch
            { Data = output }
        | PbsOrder.BootstrapKeyswitch ->
            Bootstrap.programmableBootstrapInto
                SimdPath.best serverKey.Bootstrap p.ModulusSwitch lut.Polynomial (ReadOnlySpan ciphertext.Data) (Span w.Big) w.Switched w.Scratch
            let output = Array.zeroCreate<uint64> (p.LweDimension + 1)
            Keyswitch.keyswitchInto SimdPath.best serverKey.Keyswitch w.Big 0 output
            { Data = output }

    let private ciphertextDimension (p: TfheParameters) =
        match p.Order with
        | PbsOrder.KeyswitchBootstrap -> p.BigLweDimension
        | PbsOrder.BootstrapKeyswitch -> p.LweDimension

    /// f(m) for a ciphertext of m: keyswitch then bootstrap (KS-PBS) or bootstrap then keyswitch (PBS-KS), as the
    /// set's order says. The output has the table's output encoding and the set's ciphertext dimension.
    let apply (serverKey: ServerKey) (lut: LookupTable) (ciphertext: LweCiphertext) : LweCiphertext =
        checkTable serverKey lut
        checkDimension (ciphertextDimension serverKey.Parameters) ciphertext
        applyChecked serverKey lut ciphertext

    /// `apply` on many independent ciphertexts, spread over the cores (one workspace per thread).
    let applyMany (serverKey: ServerKey) (lut: LookupTable) (ciphertexts: LweCiphertext[]) : LweCiphertext[] =
        checkTable serverKey lut
        ciphertexts |> Array.iter (checkDimension (ciphertextDimension serverKey.Parameters))
        let results = Array.zeroCreate<LweCiphertext> ciphertexts.Length
        Parallel.For(0, ciphertexts.Length, fun i -> results[i] <- applyChecked serverKey lut ciphertexts[i]) |> ignore
        results

/// Measurement of the noise the engine actually produces, with the secret key: for checking the noise model (tests,
/// benchmarks), never part of a deployed computation.
module NoiseMeasurement =

    /// The PBS output noise (normalized torus) of every coefficient of the blind-rotated accumulator, N samples per
    /// bootstrap of a fresh encryption: the GLWE phase minus the noiseless rotation LUT·X^(-φ̃), φ̃ the switched phase
    /// computed with the key. The N noises of one bootstrap are correlated, so estimates need many bootstraps.
    let pbsOutputNoise (clientKey: ClientKey) (serverKey: ServerKey) (bootstraps: int) : float[] =
        let p = clientKey.Parameters
        let n = p.PolynomialSize
        let lut = Pbs.lookupTable p (fun i -> int64 i)
        let scratch = BootstrapScratch(p.GlweDimension, n, p.PbsLevel)
        let switched = Array.zeroCreate<int> (p.LweDimension + 1)
        let body = Array.sub lut.Polynomial (p.GlweDimension * n) n
        [| for t in 1..bootstraps do
               let small = Pbs.keyswitch serverKey (Lwe.encrypt clientKey (int64 (t % p.PlaintextModulus)))
               Bootstrap.modulusSwitch p.ModulusSwitch n (ReadOnlySpan small.Data) (Span switched)
               Bootstrap.blindRotate SimdPath.best serverKey.Bootstrap lut.Polynomial (ReadOnlySpan switched) scratch
               let mutable phase = switched[p.LweDimension]
               for i in 0 .. p.LweDimension - 1 do
                   phase <- phase - switched[i] * int clientKey.SmallKey.Bits[i]
               let phase = ((phase % (2 * n)) + 2 * n) % (2 * n)
               let expected = Array.zeroCreate<uint64> n
               Polynomial.monomialMul (ReadOnlySpan body) ((2 * n - phase) % (2 * n)) (Span expected)
               let actual =
                   GlweEncryption.phase
                       clientKey.GlweKey
                       { GlweDimension = p.GlweDimension
                         PolynomialSize = n
                         Data = scratch.AccumulatorSpan.ToArray() }
               for c in 0 .. n - 1 -> Torus.toReal (actual[c] - expected[c]) |]

    /// The keyswitch output noise (normalized torus) of `count` fresh big-key encryptions, one sample each.
    let keyswitchOutputNoise (clientKey: ClientKey) (serverKey: ServerKey) (count: int) : float[] =
        let p = clientKey.Parameters
        let e = Parameters.encoding p
        Array.init count (fun t ->
            let m = int64 (t % p.PlaintextModulus)
            let out = Pbs.keyswitch serverKey (Lwe.encrypt clientKey m)
            Torus.toReal (LweEncryption.phase clientKey.SmallKey out - e.Encode m))

    /// The fraction of `count` KS-PBS (identity table, fresh encryptions) that decrypt to a wrong message, run on
    /// every core.
    let failureRate (clientKey: ClientKey) (serverKey: ServerKey) (count: int) : float =
        let p = clientKey.Parameters
        let identity = Pbs.lookupTable p (fun i -> int64 i)
        let messages = Array.init count (fun t -> int64 (t % p.PlaintextModulus))
        let outputs = Pbs.applyMany serverKey identity (messages |> Array.map (Lwe.encrypt clientKey))
        let failures = Array.map2 (fun m out -> if Lwe.decrypt clientKey out <> m then 1 else 0) messages outputs |> Array.sum
        float failures / float count

