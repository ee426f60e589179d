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
