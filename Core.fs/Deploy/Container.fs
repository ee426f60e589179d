namespace FheNet.Deploy

open System
open System.Buffers.Binary
open System.IO
open System.Security.Cryptography

/// What a serialized object is. Stored in every header so that a key is never read as a ciphertext.
type ObjectKind =
    | ClientKey = 1us
    | EvaluationKey = 2us
    | CompressedEvaluationKey = 3us
    | Ciphertexts = 4us
    | CompressedCiphertexts = 5us
    | ServerArtifact = 6us
    | ClientArtifact = 7us
    | CompressedCiphertextBatch = 8us
    | CiphertextBatch = 9us

/// Why serialized bytes were refused.
[<RequireQualifiedAccess>]
type FormatError =
    | NotFheNetData
    | UnsupportedVersion of found: uint16 * supported: uint16
    | WrongKind of expected: ObjectKind * found: uint16
    | ParameterMismatch
    | Truncated
    | TooLarge of declared: int64 * limit: int64
    | ChecksumMismatch
    | Malformed of detail: string

    /// The reason in words, with what to do about it.
    member this.Describe() =
        match this with
        | NotFheNetData -> "the data does not start with the FheNet magic bytes; it is not an FheNet file or message"
        | UnsupportedVersion(found, supported) ->
            $"format version %d{found} is not supported (this library reads version %d{supported}); upgrade FheNet or re-export the data"
        | WrongKind(expected, found) ->
            $"expected a %A{expected} but the data holds object kind %d{found}; pass the right file"
        | ParameterMismatch ->
            "the data was made for another parameter set or model; regenerate keys/ciphertexts for this model"
        | Truncated -> "the data ends early (truncated download or partial write); transfer it again"
        | TooLarge(declared, limit) ->
            $"the payload declares %d{declared} bytes, over the limit of %d{limit}; raise the limit if the data is trusted"
        | ChecksumMismatch -> "the checksum does not match: the data was corrupted or altered"
        | Malformed detail -> $"the payload is malformed: %s{detail}"

/// Serialized FheNet data was refused before use. Nothing partially read is ever returned.
type InvalidFheDataException(error: FormatError) =
    inherit FormatException($"Invalid FheNet data: %s{error.Describe()}.")

    /// The precise reason.
    member _.Error = error

/// A bounded little-endian reader over a payload: every length is checked against the bytes that remain, so corrupt
/// input can never trigger a huge allocation, and reading past the end raises <c>Truncated</c>, not an index error.
[<Sealed>]
type PayloadReader internal (stream: Stream, length: int64) =
    let mutable remaining = length
    let scratch = Array.zeroCreate<byte> 8

    let fill (buffer: Span<byte>) =
        if int64 buffer.Length > remaining then
            raise (InvalidFheDataException FormatError.Truncated)
        let mutable read = 0
        while read < buffer.Length do
            let n = stream.Read(buffer.Slice read)
            if n = 0 then
                raise (InvalidFheDataException FormatError.Truncated)
            read <- read + n
        remaining <- remaining - int64 buffer.Length

    /// Bytes of the payload not yet read.
    member _.Remaining = remaining

    member _.ReadByte() =
        fill (Span(scratch, 0, 1))
        scratch[0]

    member _.ReadInt32() =
        fill (Span(scratch, 0, 4))
        BinaryPrimitives.ReadInt32LittleEndian(ReadOnlySpan(scratch, 0, 4))

    member _.ReadInt64() =
        fill (Span(scratch, 0, 8))
        BinaryPrimitives.ReadInt64LittleEndian(ReadOnlySpan(scratch, 0, 8))

    member _.ReadUInt64() =
        fill (Span(scratch, 0, 8))
        BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(scratch, 0, 8))

    member _.ReadDouble() =
        fill (Span(scratch, 0, 8))
        BinaryPrimitives.ReadDoubleLittleEndian(ReadOnlySpan(scratch, 0, 8))

    /// A count written by <see cref="M:FheNet.Deploy.PayloadWriter.WriteCount"/>, checked to fit the bytes left
    /// when each element takes at least <c>elementBytes</c>.
    member this.ReadCount(elementBytes: int) =
        let count = this.ReadInt32()
        if count < 0 then
            raise (InvalidFheDataException(FormatError.Malformed $"negative element count %d{count}"))
        if int64 count * int64 (max elementBytes 1) > remaining then
            raise (InvalidFheDataException FormatError.Truncated)
        count

    /// A length-prefixed array of u64 values.
    member this.ReadUInt64Array() : uint64[] =
        let count = this.ReadCount 8
        let values = Array.zeroCreate<uint64> count
        fill (Runtime.InteropServices.MemoryMarshal.AsBytes(Span values))
        if not BitConverter.IsLittleEndian then
            BinaryPrimitives.ReverseEndianness(ReadOnlySpan values, Span values)
        values

    /// A length-prefixed byte array.
    member this.ReadBytes() : byte[] =
        let count = this.ReadCount 1
        let bytes = Array.zeroCreate<byte> count
        fill (Span bytes)
        bytes

    /// A length-prefixed UTF-8 string; invalid UTF-8 is refused (a lossy decode would re-encode to other bytes).
    member this.ReadString() = Text.UTF8Encoding(false, true).GetString(this.ReadBytes())

/// The little-endian writer that matches <see cref="T:FheNet.Deploy.PayloadReader"/>.
[<Sealed>]
type PayloadWriter internal (stream: Stream) =
    let scratch = Array.zeroCreate<byte> 8
    let mutable written = 0L

    let put (bytes: ReadOnlySpan<byte>) =
        stream.Write bytes
        written <- written + int64 bytes.Length

    /// Bytes written so far.
    member _.Written = written

    member _.WriteByte(value: byte) =
        scratch[0] <- value
        put (ReadOnlySpan(scratch, 0, 1))

    member _.WriteInt32(value: int) =
        BinaryPrimitives.WriteInt32LittleEndian(Span(scratch, 0, 4), value)
        put (ReadOnlySpan(scratch, 0, 4))

    member _.WriteInt64(value: int64) =
        BinaryPrimitives.WriteInt64LittleEndian(Span(scratch, 0, 8), value)
        put (ReadOnlySpan(scratch, 0, 8))

    member _.WriteUInt64(value: uint64) =
        BinaryPrimitives.WriteUInt64LittleEndian(Span(scratch, 0, 8), value)
        put (ReadOnlySpan(scratch, 0, 8))

    member _.WriteDouble(value: float) =
        BinaryPrimitives.WriteDoubleLittleEndian(Span(scratch, 0, 8), value)
        put (ReadOnlySpan(scratch, 0, 8))

    /// An element count, read back by <see cref="M:FheNet.Deploy.PayloadReader.ReadCount(System.Int32)"/>.
    member this.WriteCount(count: int) = this.WriteInt32 count

    member this.WriteUInt64Array(values: uint64[]) =
        this.WriteCount values.Length
        if BitConverter.IsLittleEndian then
            put (Runtime.InteropServices.MemoryMarshal.AsBytes(ReadOnlySpan values))
        else
            for v in values do
                this.WriteUInt64 v

    member this.WriteBytes(bytes: byte[]) =
        this.WriteCount bytes.Length
        put (ReadOnlySpan bytes)

    member this.WriteString(value: string) = this.WriteBytes(Text.Encoding.UTF8.GetBytes value)

/// The one framing used by every FheNet file and wire message (little-endian):
///
///     offset  size  field
///     0       8     magic "FHENET" 0x00 0x1A
///     8       2     format version (2)
///     10      2     object kind (<see cref="T:FheNet.Deploy.ObjectKind"/>)
///     12      32    context hash: SHA-256 of the parameter set / model the object belongs to
///     44      8     payload length L
///     52      L     payload (written by the object's own serializer)
///     52+L    32    SHA-256 of bytes [0, 52+L)
///
/// Reading streams the payload through the hash and checks magic, version, kind, context, the declared length
/// against a limit, and finally the checksum, before the decoded object is returned.
module Container =

    /// The format version this library writes and reads.
    [<Literal>]
    let FormatVersion = 3us

    let private magic = "FHENET\000\026"B

    [<Literal>]
    let HeaderBytes = 52

    [<Literal>]
    let ChecksumBytes = 32

    /// Default limit on a payload's declared length (16 GiB: an 8-bit bootstrapping key is several GiB).
    let DefaultMaxPayloadBytes = 16L <<< 30

    /// The SHA-256 context hash of a canonical description (parameter set, model identity...).
    let contextHash (description: string) : byte[] =
        SHA256.HashData(Text.Encoding.UTF8.GetBytes description)

    /// A write-only stream that feeds every byte both to the inner stream and to an incremental hash.
    type private HashingStream(inner: Stream, hash: IncrementalHash, reading: bool) =
        inherit Stream()
        override _.CanRead = reading
        override _.CanWrite = not reading
        override _.CanSeek = false
        override _.Length = raise (NotSupportedException())
        override _.Position
            with get () = raise (NotSupportedException())
            and set _ = raise (NotSupportedException())
        override _.Flush() = inner.Flush()
        override _.Seek(_, _) = raise (NotSupportedException())
        override _.SetLength _ = raise (NotSupportedException())
        override _.Read(buffer: byte[], offset, count) =
            let n = inner.Read(buffer, offset, count)
            hash.AppendData(buffer, offset, n)
            n
        override _.Read(buffer: Span<byte>) =
            let n = inner.Read buffer
            hash.AppendData(Span<byte>.op_Implicit (buffer.Slice(0, n)))
            n
        override _.Write(buffer: byte[], offset, count) =
            hash.AppendData(buffer, offset, count)
            inner.Write(buffer, offset, count)
        override _.Write(buffer: ReadOnlySpan<byte>) =
            hash.AppendData buffer
            inner.Write buffer

    let private header (kind: ObjectKind) (context: byte[]) (payloadLength: int64) =
        let h = Array.zeroCreate<byte> HeaderBytes
        magic.CopyTo(h, 0)
        BinaryPrimitives.WriteUInt16LittleEndian(Span(h, 8, 2), FormatVersion)
        BinaryPrimitives.WriteUInt16LittleEndian(Span(h, 10, 2), uint16 kind)
        context.CopyTo(h, 12)
        BinaryPrimitives.WriteInt64LittleEndian(Span(h, 44, 8), payloadLength)
        h

    /// Writes one framed object to any stream, seekable or not. The serializer runs twice: first into a counter to
    /// learn the payload length for the header (nothing is copied), then for real; it must be deterministic.
    let write (destination: Stream) (kind: ObjectKind) (context: byte[]) (writePayload: PayloadWriter -> unit) =
        if context.Length <> 32 then
            raise (ArgumentException("the context hash must be 32 bytes (SHA-256)", "context"))
        let length =
            let counter = PayloadWriter(Stream.Null)
            writePayload counter
            counter.Written
        use hash = IncrementalHash.CreateHash HashAlgorithmName.SHA256
        let hashing = new HashingStream(destination, hash, false)
        hashing.Write(ReadOnlySpan(header kind context length))
        let writer = PayloadWriter hashing
        writePayload writer
        if writer.Written <> length then
            raise (InvalidOperationException "a payload serializer wrote different bytes on two runs")
        destination.Write(ReadOnlySpan(hash.GetHashAndReset()))

    /// Reads one framed object: checks the header (magic, version, kind, context, length ≤ maxPayloadBytes), decodes
    /// the payload with <c>readPayload</c>, requires it to consume the payload exactly, then checks the checksum.
    /// Any failure raises <see cref="T:FheNet.Deploy.InvalidFheDataException"/>.
    let read
        (source: Stream)
        (kind: ObjectKind)
        (context: byte[])
        (maxPayloadBytes: int64)
        (readPayload: PayloadReader -> 'T)
        : 'T =
        use hash = IncrementalHash.CreateHash HashAlgorithmName.SHA256
        let hashing = new HashingStream(source, hash, true)
        let h = Array.zeroCreate<byte> HeaderBytes
        let mutable got = 0
        let mutable ended = false
        while got < HeaderBytes && not ended do
            let n = hashing.Read(h, got, HeaderBytes - got)
            if n = 0 then ended <- true else got <- got + n
        // Foreign data is named as such even when it is shorter than a header.
        let seen = min got magic.Length
        if not (ReadOnlySpan(h, 0, seen).SequenceEqual(ReadOnlySpan(magic, 0, seen))) || got = 0 then
            raise (InvalidFheDataException FormatError.NotFheNetData)
        if ended then
            raise (InvalidFheDataException FormatError.Truncated)
        let version = BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan(h, 8, 2))
        if version <> FormatVersion then
            raise (InvalidFheDataException(FormatError.UnsupportedVersion(version, FormatVersion)))
        let foundKind = BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan(h, 10, 2))
        if foundKind <> uint16 kind then
            raise (InvalidFheDataException(FormatError.WrongKind(kind, foundKind)))
        if not (ReadOnlySpan(h, 12, 32).SequenceEqual(ReadOnlySpan context)) then
            raise (InvalidFheDataException FormatError.ParameterMismatch)
        let length = BinaryPrimitives.ReadInt64LittleEndian(ReadOnlySpan(h, 44, 8))
        if length < 0L || length > maxPayloadBytes then
            raise (InvalidFheDataException(FormatError.TooLarge(length, maxPayloadBytes)))
        let payload = PayloadReader(hashing, length)
        let value =
            try
                readPayload payload
            with
            | :? InvalidFheDataException -> reraise ()
            | :? ArgumentException
            | :? InvalidOperationException
            | :? OverflowException
            | :? FormatException as e -> raise (InvalidFheDataException(FormatError.Malformed e.Message))
        if payload.Remaining <> 0L then
            raise (InvalidFheDataException(FormatError.Malformed $"%d{payload.Remaining} unread payload bytes"))
        let expected = hash.GetHashAndReset()
        let stored = Array.zeroCreate<byte> ChecksumBytes
        got <- 0
        while got < ChecksumBytes do
            let n = source.Read(stored, got, ChecksumBytes - got)
            if n = 0 then
                raise (InvalidFheDataException FormatError.Truncated)
            got <- got + n
        if not (CryptographicOperations.FixedTimeEquals(ReadOnlySpan expected, ReadOnlySpan stored)) then
            raise (InvalidFheDataException FormatError.ChecksumMismatch)
        value

    /// <see cref="write"/> into a new byte array.
    let toBytes kind context writePayload =
        use memory = new MemoryStream()
        write memory kind context writePayload
        memory.ToArray()

    /// <see cref="read"/> from a byte array; trailing bytes after the checksum are refused.
    let ofBytes (bytes: byte[]) kind context readPayload =
        use memory = new MemoryStream(bytes, false)
        let value = read memory kind context (int64 bytes.Length) readPayload
        if memory.Position <> memory.Length then
            raise (InvalidFheDataException(FormatError.Malformed "bytes after the checksum"))
        value
