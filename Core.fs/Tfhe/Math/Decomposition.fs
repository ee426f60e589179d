namespace FheNet.Tfhe

open System
open System.Runtime.Intrinsics

/// The signed gadget decomposition with rounding of TFHE-rs: x ≈ Σ_{j=1..ℓ} d_j · 2^(64 - β·j) with every digit
/// d_j in [-B/2, B/2] (B = 2^β). Only the top R = β·ℓ bits are represented; x is first rounded to them (half up).
/// Digits come out least-significant first: level ℓ, then ℓ-1, …, 1 — the order GGSW levels and KSK blocks use.
[<Struct>]
type Decomposer =
    { BaseLog: int
      Level: int }

    /// β·ℓ: the number of represented bits.
    member d.RepresentedBits = d.BaseLog * d.Level

    /// A decomposer of base 2^baseLog with `level` levels; raises unless 1 ≤ baseLog, 1 ≤ level, baseLog·level < 64.
    static member Create(baseLog: int, level: int) =
        FheNet.Guard.inRange "baseLog" 1 63 baseLog
        FheNet.Guard.inRange "level" 1 63 level
        if baseLog * level >= 64 then
            raise (FheNet.ParameterOutOfRangeException("baseLog * level", baseLog * level, "at most 63 represented bits"))
        { BaseLog = baseLog; Level = level }

    /// The closest value that the decomposition represents: x rounded (half up) to a multiple of 2^(64 - β·ℓ).
    member d.ClosestRepresentable(x: uint64) =
        let shift = 64 - d.RepresentedBits
        (((x >>> (shift - 1)) + 1UL) >>> 1) <<< shift

    /// The balanced state before digit extraction: x rounded to R bits, in (-2^(R-1), 2^(R-1)] as two's complement.
    member inline d.InitState(x: uint64) =
        let r = d.RepresentedBits
        let res = x >>> (64 - r - 1)
        let roundingBit = res &&& 1UL
        let res = ((res + 1UL) >>> 1) &&& ((1UL <<< r) - 1UL)
        // res > 2^(R-1), or res = 2^(R-1) with the rounding bit set, goes negative.
        let needBalance = ((((res - 1UL) ||| (roundingBit <<< (r - 1))) &&& res) >>> (r - 1))
        res - (needBalance <<< r)

    /// The next digit (least significant remaining level) and the updated state; ties break towards an even state.
    member inline d.NextDigit(state: byref<uint64>) =
        let beta = d.BaseLog
        let digit = state &&& ((1UL <<< beta) - 1UL)
        state <- uint64 (int64 state >>> beta)
        let carry = (((digit - 1UL) ||| state) &&& digit) >>> (beta - 1)
        state <- state + carry
        int64 (digit - (carry <<< beta))

    /// The ℓ digits of x, level ℓ first.
    member d.Decompose(x: uint64) =
        let mutable state = d.InitState x
        let digits = Array.zeroCreate<int64> d.Level
        for i in 0 .. d.Level - 1 do
            digits[i] <- d.NextDigit(&state)
        digits

    /// Σ d_j · 2^(64 - β·j) for digits given level ℓ first (the inverse of Decompose on representable values).
    member d.Recompose(digits: int64[]) =
        let mutable sum = 0UL
        for i in 0 .. digits.Length - 1 do
            let level = d.Level - i
            sum <- sum + (uint64 digits[i] <<< (64 - d.BaseLog * level))
        sum

    /// Decomposes every coefficient of a polynomial: digits[(i · N) + c] is digit i (level ℓ - i) of coefficient c.
    member d.DecomposePolynomial(coefficients: ReadOnlySpan<uint64>, digits: int64[]) =
        let n = coefficients.Length
        for c in 0 .. n - 1 do
            let mutable state = d.InitState coefficients[c]
            for i in 0 .. d.Level - 1 do
                digits[i * n + c] <- d.NextDigit(&state)

    /// InitState on 8 coefficients at once, in four vector operations: x + half a unit (wrapping) shifted right
    /// arithmetically rounds half up to R signed bits, which is the balanced state everywhere except on the top
    /// R bits 100…0 with the rounding bit clear (x in [-2^63, -2^63 + 2^(63-R))), where it gives -2^(R-1) and the
    /// scalar rule keeps +2^(R-1). The constants come from RoundingConstants512, so a loop can hoist them.
    static member inline InitState512(x: Vector512<uint64>, halfUnit: Vector512<uint64>, shift: int, boundary: Vector512<int64>, plusHalf: Vector512<int64>) =
        let rounded = Vector512.ShiftRightArithmetic((x + halfUnit).AsInt64(), shift)
        Vector512.ConditionalSelect(Vector512.LessThan(x.AsInt64(), boundary), plusHalf, rounded).AsUInt64()

    /// The constants of InitState512: half a unit 2^(63-R), the shift 64 - R, the boundary -2^63 + 2^(63-R) and
    /// +2^(R-1).
    member d.RoundingConstants512 =
        let r = d.RepresentedBits
        struct (Vector512.Create(1UL <<< (63 - r)), 64 - r, Vector512.Create(Int64.MinValue + (1L <<< (63 - r))), Vector512.Create(1L <<< (r - 1)))

    /// InitState on 8 coefficients at once.
    member inline d.InitState512(x: Vector512<uint64>) =
        let struct (halfUnit, shift, boundary, plusHalf) = d.RoundingConstants512
        Decomposer.InitState512(x, halfUnit, shift, boundary, plusHalf)

    /// Arithmetic right shift of four 64-bit lanes from AVX2 operations (AVX2 has no 64-bit arithmetic shift):
    /// complementing negative lanes around a logical shift.
    static member inline private ShiftRightArithmetic256(x: Vector256<int64>, shift: int) =
        let sign = Vector256.LessThan(x, Vector256<int64>.Zero)
        Vector256.ShiftRightLogical(x ^^^ sign, shift) ^^^ sign

    /// InitState on 4 coefficients at once, as InitState512.
    member inline d.InitState256(x: Vector256<uint64>) =
        let r = d.RepresentedBits
        let rounded = Decomposer.ShiftRightArithmetic256((x + Vector256.Create(1UL <<< (63 - r))).AsInt64(), 64 - r)
        let boundary = Vector256.Create(Int64.MinValue + (1L <<< (63 - r)))
        Vector256.ConditionalSelect(Vector256.LessThan(x.AsInt64(), boundary), Vector256.Create(1L <<< (r - 1)), rounded).AsUInt64()

    /// NextDigit on 4 states at once.
    member inline d.NextDigit256(state: byref<Vector256<uint64>>) =
        let beta = d.BaseLog
        let one = Vector256<uint64>.One
        let digit = state &&& Vector256.Create((1UL <<< beta) - 1UL)
        state <- Decomposer.ShiftRightArithmetic256(state.AsInt64(), beta).AsUInt64()
        let carry = Vector256.ShiftRightLogical(((digit - one) ||| state) &&& digit, beta - 1)
        state <- state + carry
        (digit - Vector256.ShiftLeft(carry, beta)).AsInt64()

    /// NextDigit on 8 states at once.
    member inline d.NextDigit512(state: byref<Vector512<uint64>>) =
        let beta = d.BaseLog
        let one = Vector512<uint64>.One
        let digit = state &&& Vector512.Create((1UL <<< beta) - 1UL)
        state <- Vector512.ShiftRightArithmetic(state.AsInt64(), beta).AsUInt64()
        let carry = Vector512.ShiftRightLogical(((digit - one) ||| state) &&& digit, beta - 1)
        state <- state + carry
        (digit - Vector512.ShiftLeft(carry, beta)).AsInt64()
