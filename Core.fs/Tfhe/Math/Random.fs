namespace FheNet.Tfhe

open System
open System.Buffers.Binary
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86
open System.Security.Cryptography

/// The 128-bit seed of a mask generator: what a seeded (compressed) ciphertext or key stores instead of its masks.
[<Struct>]
type Seed =
    { Low: uint64
      High: uint64 }

    /// A fresh seed from the operating system's CSPRNG.
    static member Fresh() =
        let bytes = RandomNumberGenerator.GetBytes 16
        { Low = BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes, 0, 8))
          High = BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes, 8, 8)) }

    /// The seed as the 16-byte AES key (little-endian halves).
    member s.ToBytes() =
        let bytes = Array.zeroCreate<byte> 16
        BinaryPrimitives.WriteUInt64LittleEndian(Span(bytes, 0, 8), s.Low)
        BinaryPrimitives.WriteUInt64LittleEndian(Span(bytes, 8, 8), s.High)
        bytes

/// AES-128 (FIPS-197) block encryption: a portable byte-wise implementation and an AES-NI one.
module Aes128 =

    let private xtime (b: byte) =
        let shifted = int b <<< 1
        byte (if shifted &&& 0x100 <> 0 then shifted ^^^ 0x11b else shifted)

    let private gmul (a: byte) (b: byte) =
        let mutable x = a
        let mutable y = b
        let mutable r = 0uy
        while y <> 0uy do
            if y &&& 1uy <> 0uy then r <- r ^^^ x
            x <- xtime x
            y <- y >>> 1
        r

    /// The S-box, computed from its definition (multiplicative inverse in GF(2^8), then the affine map).
    let private sbox =
        let rotl (b: byte) n = byte ((int b <<< n) ||| (int b >>> (8 - n)))
        Array.init 256 (fun v ->
            let x = byte v
            // x^254 is the inverse of x in GF(2^8) (and 0 for 0).
            let mutable inv = 1uy
            for _ in 1..254 do
                inv <- gmul inv x
            let inv = if v = 0 then 0uy else inv
            inv ^^^ rotl inv 1 ^^^ rotl inv 2 ^^^ rotl inv 3 ^^^ rotl inv 4 ^^^ 0x63uy)

    /// The 11 round keys (176 bytes) of a 16-byte key.
    let expandKey (key: ReadOnlySpan<byte>) : byte[] =
        if key.Length <> 16 then
            raise (DimensionMismatchException("key", "the AES-128 key length in bytes", 16, key.Length))
        let w = Array.zeroCreate<byte> 176
        key.CopyTo(Span w)
        let mutable rcon = 1uy
        for i in 4..43 do
            let t = Array.init 4 (fun j -> w[(i - 1) * 4 + j])
            let t =
                if i % 4 = 0 then
                    let r = [| sbox[int t[1]] ^^^ rcon; sbox[int t[2]]; sbox[int t[3]]; sbox[int t[0]] |]
                    rcon <- xtime rcon
                    r
                else
                    t
            for j in 0..3 do
                w[i * 4 + j] <- w[(i - 4) * 4 + j] ^^^ t[j]
        w

    /// Encrypts one 16-byte block with the portable implementation.
    let encryptBlockPortable (roundKeys: byte[]) (input: ReadOnlySpan<byte>) (output: Span<byte>) =
        let s = Array.zeroCreate<byte> 16
        for i in 0..15 do
            s[i] <- input[i] ^^^ roundKeys[i]
        let t = Array.zeroCreate<byte> 16
        for round in 1..10 do
            // SubBytes and ShiftRows: row r of column c comes from column (c + r) mod 4.
            for c in 0..3 do
                for r in 0..3 do
                    t[r + 4 * c] <- sbox[int s[r + 4 * ((c + r) % 4)]]
            if round < 10 then
                for c in 0..3 do
                    let a0, a1, a2, a3 = t[4 * c], t[4 * c + 1], t[4 * c + 2], t[4 * c + 3]
                    s[4 * c] <- xtime a0 ^^^ (xtime a1 ^^^ a1) ^^^ a2 ^^^ a3
                    s[4 * c + 1] <- a0 ^^^ xtime a1 ^^^ (xtime a2 ^^^ a2) ^^^ a3
                    s[4 * c + 2] <- a0 ^^^ a1 ^^^ xtime a2 ^^^ (xtime a3 ^^^ a3)
                    s[4 * c + 3] <- (xtime a0 ^^^ a0) ^^^ a1 ^^^ a2 ^^^ xtime a3
            else
                Array.blit t 0 s 0 16
            for i in 0..15 do
                s[i] <- s[i] ^^^ roundKeys[16 * round + i]
        for i in 0..15 do
            output[i] <- s[i]

    /// Whether the AES-NI path can run on this machine.
    let hardwareSupported = Aes.IsSupported

    /// The round keys as AES-NI operands.
    let hardwareRoundKeys (roundKeys: byte[]) =
        Array.init 11 (fun r -> Vector128.Create<byte>(ReadOnlySpan(roundKeys, 16 * r, 16)))

    /// Encrypts one block with AES-NI (requires `hardwareSupported`).
    let inline encryptBlockHardware (keys: Vector128<byte>[]) (block: Vector128<byte>) =
        let mutable s = Sse2.Xor(block, keys[0])
        for r in 1..9 do
            s <- Aes.Encrypt(s, keys[r])
        Aes.EncryptLast(s, keys[10])

/// Which AES-128 implementation a generator runs. All three give the same stream.
[<RequireQualifiedAccess>]
type AesPath =
    /// AES-NI instructions (x86-64): constant time, the fastest.
    | Hardware
    /// The platform's AES (System.Security.Cryptography.Aes in ECB mode over counter blocks): OpenSSL, CNG or
    /// CommonCrypto, which run the CPU's AES instructions (ARMv8 Cryptography Extensions, AES-NI) or a constant-time
    /// software AES. Secret streams use it wherever AES-NI is missing.
    | Platform
    /// The byte-wise reference implementation of this file: its S-box is a table indexed by secret bytes, so its
    /// timing depends on the cache. The reference the other paths are tested against; never used for secrets.
    | Portable

/// AES-128 in counter mode as a stream of u64, the construction of TFHE-rs's CSPRNG (tfhe-csprng, seeded with a
/// 128-bit Seed): block i is AES_seed(i) with the counter a 128-bit little-endian integer starting at 0, and the key
/// the seed's 16 little-endian bytes; each block's 16 bytes are read as two little-endian u64. A known-answer test
/// checks the stream against tfhe-csprng's published test vector. Deterministic in the seed, so masks drawn from it
/// can be regenerated from the seed alone. Not thread-safe: one generator per thread.
type AesCtrGenerator(seed: Seed, path: AesPath) =
    // 8 blocks per refill keep several independent AES chains in flight (and amortize a platform call).
    let blocks = 8
    let buffer = Array.zeroCreate<uint64> (2 * blocks)
    let mutable position = buffer.Length
    let mutable counterLow = 0UL
    let mutable counterHigh = 0UL
    let key = seed.ToBytes()
    let roundKeys =
        match path with
        | AesPath.Platform -> [||]
        | _ -> Aes128.expandKey (ReadOnlySpan key)
    let hardwareKeys =
        match path with
        | AesPath.Hardware ->
            if not Aes128.hardwareSupported then
                raise (PlatformNotSupportedException "AES-NI is not available on this machine; use AesPath.Platform.")
            Aes128.hardwareRoundKeys roundKeys
        | _ -> [||]
    let platform: Aes | null =
        match path with
        | AesPath.Platform ->
            let aes = Aes.Create()
            aes.Key <- key
            aes
        | _ -> null
    do CryptographicOperations.ZeroMemory(Span key)
    let counters = Array.zeroCreate<byte> (16 * blocks)
    let output = Array.zeroCreate<byte> (16 * blocks)

    let nextCounter () =
        let low, high = counterLow, counterHigh
        counterLow <- counterLow + 1UL
        if counterLow = 0UL then counterHigh <- counterHigh + 1UL
        struct (low, high)

    let refill () =
        match path with
        | AesPath.Hardware ->
            for b in 0 .. blocks - 1 do
                let struct (low, high) = nextCounter ()
                let out = (Aes128.encryptBlockHardware hardwareKeys (Vector128.Create(low, high).AsByte())).AsUInt64()
                buffer[2 * b] <- out.GetElement 0
                buffer[2 * b + 1] <- out.GetElement 1
        | AesPath.Platform ->
            for b in 0 .. blocks - 1 do
                let struct (low, high) = nextCounter ()
                BinaryPrimitives.WriteUInt64LittleEndian(Span(counters, 16 * b, 8), low)
                BinaryPrimitives.WriteUInt64LittleEndian(Span(counters, 16 * b + 8, 8), high)
            (nonNull platform).EncryptEcb(ReadOnlySpan counters, Span output, PaddingMode.None) |> ignore
            for i in 0 .. buffer.Length - 1 do
                buffer[i] <- BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(output, 8 * i, 8))
        | AesPath.Portable ->
            for b in 0 .. blocks - 1 do
                let struct (low, high) = nextCounter ()
                let block = Span(output, 0, 16)
                BinaryPrimitives.WriteUInt64LittleEndian(block.Slice(0, 8), low)
                BinaryPrimitives.WriteUInt64LittleEndian(block.Slice(8, 8), high)
                Aes128.encryptBlockPortable roundKeys (ReadOnlySpan(output, 0, 16)) block
                buffer[2 * b] <- BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(output, 0, 8))
                buffer[2 * b + 1] <- BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(output, 8, 8))
        position <- 0

    /// The constant-time path of this machine: AES-NI where present, else the platform's AES.
    static member FastestConstantTimePath = if Aes128.hardwareSupported then AesPath.Hardware else AesPath.Platform

    /// A generator on the fastest constant-time path this machine supports.
    new(seed: Seed) = AesCtrGenerator(seed, AesCtrGenerator.FastestConstantTimePath)

    /// A generator seeded from the operating system's CSPRNG, for secret keys and noise, on a constant-time path.
    /// Its seed exists only inside it: no member returns it, and the key bytes are wiped once expanded.
    static member Secret() = AesCtrGenerator(Seed.Fresh())

    /// The AES implementation this generator runs.
    member _.Path = path

    /// The next 64 random bits.
    member _.NextUInt64() =
        if position = buffer.Length then refill ()
        let v = buffer[position]
        position <- position + 1
        v

    /// Fills a span with random u64.
    member g.Fill(destination: Span<uint64>) =
        for i in 0 .. destination.Length - 1 do
            destination[i] <- g.NextUInt64()

    /// A uniform real in the open interval (0, 1), 53 random bits.
    member g.NextOpenUnit() =
        (float (g.NextUInt64() >>> 11) + 0.5) * (1.0 / 9007199254740992.0)
