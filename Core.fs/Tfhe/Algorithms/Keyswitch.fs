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
    /// multiply-low) and prefetches the key sixteen rows (about 120 KiB) ahead: the keyswitch streams its whole key
    /// from memory, and after a bootstrap has streamed its own key that distance keeps more lines in flight than four
    /// rows did (KS-PBS about 0.15 ms faster). The scalar path is the reference.
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
        if path = SimdPath.Vector512 && not (SimdPath.isSupported path) then
            raise (PlatformNotSupportedException "The Vector512 keyswitch path is not supported on this machine.")
        let vectorEnd = if path = SimdPath.Vector512 then size - size % 8 else 0
        for i in 0 .. key.InputDimension - 1 do
            let mutable state = decomposer.InitState input[inputOffset + i]
            for j in 0 .. level - 1 do
                let digit = uint64 (decomposer.NextDigit(&state))
                if digit <> 0UL then
                    let row = (i * level + j) * size
                    let d = Vector512.Create digit
                    let mutable t = 0
                    while t < vectorEnd do
                        if row + t + prefetchDistance < data.Length then
                            Sse.Prefetch1(NativePtr.toVoidPtr (NativePtr.add keyPtr (row + t + prefetchDistance)))
                        let product = Avx512DQ.MultiplyLow(d, Vector512.LoadUnsafe(&data[row + t]))
                        Vector512.StoreUnsafe(Vector512.LoadUnsafe(&output[t]) - product, &output[t])
                        t <- t + 8
                    for u in vectorEnd .. size - 1 do
                        output[u] <- output[u] - digit * data[row + u]
