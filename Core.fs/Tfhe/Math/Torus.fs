namespace FheNet.Tfhe

open System
open System.Numerics

/// Two TFHE objects that must agree (a key and a ciphertext, two ciphertexts, a table and a parameter set) do not.
/// The message names both sizes and what has to match.
type DimensionMismatchException(paramName: string, what: string, expected: int, actual: int) =
    inherit
        ArgumentException(
            $"'%s{paramName}': %s{what} is %d{actual} but %d{expected} was expected; use a ciphertext, key or table made for the same parameter set.",
            paramName
        )

    /// The size the operation needed.
    member _.Expected = expected
    /// The size it received.
    member _.Actual = actual

/// Arithmetic on the discretised torus T_q with q = 2^64: every value is a u64 and every operation wraps.
/// The real torus value of x is x / 2^64 in [0, 1).
module Torus =

    /// A real number in [-1/2, 1/2) (or any real: only its fractional part matters) as a torus element, rounded.
    let ofReal (x: float) =
        let fract = x - Math.Round x
        // fract·2^64 fits in an int64 except for exactly +1/2, which wraps to the same torus element -1/2.
        let scaled = fract * 18446744073709551616.0
        if scaled >= 9223372036854775808.0 then 0x8000000000000000UL else uint64 (int64 scaled)

    /// The torus element as a real in [-1/2, 1/2).
    let toReal (x: uint64) = float (int64 x) * (1.0 / 18446744073709551616.0)

    /// Rounds x to the nearest multiple of 2^(64 - bits) and returns that multiple's index in [0, 2^bits).
    /// A tie rounds up. This is the modulus switch to 2^bits.
    let inline roundToBits (bits: int) (x: uint64) =
        let shift = 64 - bits
        (((x >>> (shift - 1)) + 1UL) >>> 1) &&& ((1UL <<< bits) - 1UL)

/// How a message of a p-element plaintext space sits on the torus: m ↦ m·Δ with Δ = 2^64 / (2p), so that the most
/// significant bit (the padding bit) is 0 for every m in [0, p). The padding bit keeps a programmable bootstrap
/// away from the negacyclic wrap and absorbs the carry of a sum that leaves [0, p).
[<Struct>]
type Encoding =
    private
        { plaintextModulus: int
          deltaLog2: int }

    /// p: the number of messages.
    member e.PlaintextModulus = e.plaintextModulus
    /// Δ = 2^64 / (2p).
    member e.Delta = 1UL <<< e.deltaLog2
    /// log2 Δ.
    member e.DeltaLog2 = e.deltaLog2

    /// The encoding of a p-element space with one padding bit; p must be a power of two in [2, 2^16].
    static member WithPadding(plaintextModulus: int) =
        if plaintextModulus < 2 || plaintextModulus > 65536 || not (BitOperations.IsPow2 plaintextModulus) then
            raise (
                FheNet.ParameterOutOfRangeException(
                    "plaintextModulus",
                    plaintextModulus,
                    "a power of two between 2 and 65536"
                )
            )
        { plaintextModulus = plaintextModulus
          deltaLog2 = 63 - BitOperations.Log2(uint32 plaintextModulus) }

    /// m·Δ for a message m in [0, p); raises for a message outside the space.
    member e.Encode(message: int64) =
        if message < 0L || message >= int64 e.plaintextModulus then
            raise (
                FheNet.ParameterOutOfRangeException(
                    "message",
                    message,
                    $"an integer in [0, %d{e.plaintextModulus - 1}] (use EncodeWrapping for signed or padding-bit values)"
                )
            )
        uint64 message <<< e.deltaLog2

    /// m·Δ for any integer m, reduced modulo 2p: a negative m is its two's complement in the 2p-element space
    /// (the padding bit set). Decode with `DecodeSigned` to read it back as a signed value.
    member e.EncodeWrapping(message: int64) = uint64 message <<< e.deltaLog2

    /// round(x / Δ) mod 2p: the message in [0, 2p), the padding bit included.
    member e.Decode(x: uint64) =
        let r = ((x >>> (e.deltaLog2 - 1)) + 1UL) >>> 1
        int64 (r &&& uint64 (2 * e.plaintextModulus - 1))

    /// round(x / Δ) as a signed value in [-p, p): the inverse of EncodeWrapping on that range.
    member e.DecodeSigned(x: uint64) =
        let m = e.Decode x
        if m >= int64 e.plaintextModulus then m - 2L * int64 e.plaintextModulus else m

    /// The signed distance of x from its decoded message's encoding, in torus units (the noise, when x is a phase).
    member e.Error(x: uint64) = int64 (x - (uint64 (e.Decode x) <<< e.deltaLog2))
