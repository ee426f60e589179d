#nowarn "9" // NativePtr: the prefetch instruction takes an address

namespace FheNet.Tfhe

open System
open System.Runtime.Intrinsics
open System.Runtime.Intrinsics.X86
open Microsoft.FSharp.NativeInterop

/// The LWE-to-LWE keyswitch (TFHE-rs `lwe_keyswitch.rs`): out = (0, …, 0, b) - Σ_i Σ_j d_ij·KSK[i][j], where d_ij
/// are the signed digits of input mask coefficient a_i.
module Keyswitch =

    /// Keyswitches `input` (n_in + 1 values at `inputOffset`) into `output` (n_out + 1 values, overwritten). The
    /// Vector512 path runs the multiply-subtract over the output dimension 8 lanes at a time (AVX-512 DQ
    /// multiply-low), the Vector256 path 4 lanes at a time from 32-bit products (AVX2); both prefetch the key
    /// sixteen rows (about 120 KiB) ahead: the keyswitch streams its whole key from memory, and after a bootstrap has
    /// streamed its own key that distance keeps more lines in flight than four rows did (KS-PBS about 0.15 ms
    /// faster). The scalar path is the reference.
    let keyswitchInto (path: SimdPath) (key: LweKeyswitchKey) (input: uint64[]) (inputOffset: int) (output: uint64[]) =
        if input.Length - inputOffset < key.InputDimension + 1 then
            raise (DimensionMismatchException("input", "the LWE dimension of the ciphertext", key.InputDimension, input.Length - inputOffset - 1))
        if output.Length <> key.OutputDimension + 1 then
            raise (DimensionMismatchException("output", "the LWE dimension of the output", key.OutputDimension, output.Length - 1))
        let size = key.OutputDimension + 1
        let decomposer = key.Decomposer
        let level = decomposer.Level
        let data = key.Data
        use keyPtr = fixed data
        let prefetchDistance = 16 * size
        Array.Clear output
        output[key.OutputDimension] <- input[inputOffset + key.InputDimension]
        if path <> SimdPath.Scalar && not (SimdPath.isSupported path) then
            raise (PlatformNotSupportedException $"The %A{path} keyswitch path is not supported on this machine.")
        let vectorEnd =
            match path with
            | SimdPath.Vector512 -> size - size % 8
            | SimdPath.Vector256 -> size - size % 4
            | SimdPath.Scalar -> 0
        for i in 0 .. key.InputDimension - 1 do
            let mutable state = decomposer.InitState input[inputOffset + i]
            for j in 0 .. level - 1 do
                let signedDigit = decomposer.NextDigit(&state)
                let digit = uint64 signedDigit
                if digit <> 0UL then
                    let row = (i * level + j) * size
                    let mutable t = 0
                    if path = SimdPath.Vector512 then
                        let d = Vector512.Create digit
                        while t < vectorEnd do
                            if row + t + prefetchDistance < data.Length then
                                Sse.Prefetch1(NativePtr.toVoidPtr (NativePtr.add keyPtr (row + t + prefetchDistance)))
                            let product = Avx512DQ.MultiplyLow(d, Vector512.LoadUnsafe(&data[row + t]))
                            Vector512.StoreUnsafe(Vector512.LoadUnsafe(&output[t]) - product, &output[t])
                            t <- t + 8
                    elif path = SimdPath.Vector256 && abs signedDigit < (1L <<< 32) then
                        // AVX2 has no 64-bit multiply: |d|·k = |d|·k_lo + ((|d|·k_hi) << 32) from two 32×32→64-bit
                        // products (|d| < 2^32, true of any practical base), then subtract for d > 0, add for d < 0
                        // (d·k mod 2^64 = −|d|·k).
                        let magnitude = Vector256.Create(uint64 (abs signedDigit)).AsUInt32()
                        let negative = signedDigit < 0L
                        while t < vectorEnd do
                            if row + t + prefetchDistance < data.Length then
                                Sse.Prefetch1(NativePtr.toVoidPtr (NativePtr.add keyPtr (row + t + prefetchDistance)))
                            let k = Vector256.LoadUnsafe(&data[row + t])
                            let low = Avx2.Multiply(k.AsUInt32(), magnitude)
                            let high = Avx2.Multiply(Vector256.ShiftRightLogical(k, 32).AsUInt32(), magnitude)
                            let product = low + Vector256.ShiftLeft(high, 32)
                            let current = Vector256.LoadUnsafe(&output[t])
                            Vector256.StoreUnsafe((if negative then current + product else current - product), &output[t])
                            t <- t + 4
                    for u in t .. size - 1 do
                        output[u] <- output[u] - digit * data[row + u]
