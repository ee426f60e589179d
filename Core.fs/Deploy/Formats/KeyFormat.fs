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
