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
