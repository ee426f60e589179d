namespace FheNet

open System

/// An argument lies outside the range the library accepts. The message names the argument, the value received
/// and the allowed range, so the caller can fix the call without reading the source.
type ParameterOutOfRangeException(paramName: string, value: obj, allowed: string) =
    inherit
        ArgumentOutOfRangeException(
            paramName,
            value,
            $"'%s{paramName}' = %A{value} is not allowed: expected %s{allowed}."
        )

    /// The allowed range, in words.
    member _.Allowed = allowed

/// An input collection is empty or has the wrong shape for the operation.
type InvalidShapeException(paramName: string, problem: string) =
    inherit ArgumentException($"'%s{paramName}': %s{problem}", paramName)

/// An estimator was asked to predict, score, compile or dump before it was fitted.
type NotFittedException(what: string) =
    inherit InvalidOperationException($"%s{what} needs a fitted model: call Fit first.")

/// An estimator was asked for FHE simulation or execution (or keys) before it was compiled for FHE.
type FheNotAvailableException(mode: string) =
    inherit
        InvalidOperationException(
            $"fhe = %s{mode} needs a model compiled for FHE: call Compile(X_calibration) first, or use FheMode.Disable for the integer model in the clear."
        )

    /// The mode asked for.
    member _.Mode = mode

/// Argument checks shared by the whole core; each raises a typed exception naming the argument and the fix.
module Guard =

    /// Requires lo <= value <= hi.
    let inRange (paramName: string) (lo: int) (hi: int) (value: int) =
        if value < lo || value > hi then
            raise (ParameterOutOfRangeException(paramName, value, $"an integer in [%d{lo}, %d{hi}]"))

    /// Requires a finite value strictly greater than zero.
    let positiveFinite (paramName: string) (value: float) =
        if not (Double.IsFinite value) || value <= 0.0 then
            raise (ParameterOutOfRangeException(paramName, value, "a finite number greater than 0"))

    /// Requires a finite value (no NaN, no infinity).
    let finite (paramName: string) (value: float) =
        if not (Double.IsFinite value) then
            raise (ParameterOutOfRangeException(paramName, value, "a finite number (not NaN or infinity)"))

    /// Requires a non-empty input.
    let nonEmpty (paramName: string) (length: int) =
        if length = 0 then
            raise (InvalidShapeException(paramName, "is empty; pass at least one value"))

    /// Requires two spans of the same length.
    let sameLength (paramName: string) (expected: int) (actual: int) =
        if expected <> actual then
            raise (
                InvalidShapeException(
                    paramName,
                    $"has length %d{actual} but %d{expected} was expected (it must match the input's length)"
                )
            )

    /// Requires every value of a span to be finite; names the first offending index.
    let allFinite (paramName: string) (values: ReadOnlySpan<float32>) =
        for i in 0 .. values.Length - 1 do
            if not (Single.IsFinite values[i]) then
                raise (
                    ParameterOutOfRangeException(
                        $"%s{paramName}[%d{i}]",
                        values[i],
                        "a finite number (remove or impute NaN and infinite values first)"
                    )
                )
