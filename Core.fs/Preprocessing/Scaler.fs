namespace FheNet.Preprocessing

open System
open FheNet

/// How a model scales its raw features before the network (scikit-learn's StandardScaler / RobustScaler).
[<RequireQualifiedAccess>]
type FeatureScaling =
    /// Features are used as they are.
    | None
    /// (x - mean) / standard deviation: the default.
    | Standard
    /// (x - median) / interquartile range: for heavy-tailed columns, where outliers would squeeze the rest.
    | Robust

module FeatureScaling =

    /// The setting's name of a scaling ("none", "standard", "robust").
    let name (s: FeatureScaling) =
        match s with
        | FeatureScaling.None -> "none"
        | FeatureScaling.Standard -> "standard"
        | FeatureScaling.Robust -> "robust"

    /// A scaling from its name (case-insensitive; also scikit-learn's class names).
    let parse (text: string) =
        match (string text).Trim().ToLowerInvariant() with
        | "none" | "passthrough" -> FeatureScaling.None
        | "standard" | "standardscaler" -> FeatureScaling.Standard
        | "robust" | "robustscaler" -> FeatureScaling.Robust
        | _ -> raise (ParameterOutOfRangeException("preprocessing", text, "standard, robust or none"))

/// A NaN or infinite feature value, naming its row and column.
type NonFiniteFeatureException(name: string, row: int, column: int, value: float32) =
    inherit
        ParameterOutOfRangeException(
            $"%s{name}[%d{row}][%d{column}]",
            value,
            $"a finite number in row %d{row}, column %d{column} (remove or impute NaN and infinite values first)"
        )

    /// The row of the value.
    member _.Row = row

    /// The column (feature index) of the value.
    member _.Column = column

/// A per-feature affine map learned on training rows: x_j ↦ (x_j − Center_j) / Scale_j, computed in float64 and
/// rounded once to float32. The model applies it before its input quantizer, in the clear (on the client when
/// deployed), so it costs nothing in FHE and the client reproduces the model's codes bit for bit.
type FeatureScaler = { Center: float[]; Scale: float[] }

/// The real-valued range of raw features a compiled circuit was calibrated for (its calibration rows' range widened
/// by the compile margin): rows outside it may overflow an accumulator and differ from the clear model.
type FeatureRange = { Min: float[]; Max: float[] }

/// What a deployed client does with a raw row before quantizing it: scale it, and check it against the range.
type InputContract = { Scaler: FeatureScaler; Range: FeatureRange }

/// One feature of a row outside the range the circuit was calibrated for.
type OutOfRangeFeature = { Column: int; Value: float; Min: float; Max: float }

/// The range check of one row: empty Features when every value lies in the calibrated range.
type RangeCheck =
    { Features: OutOfRangeFeature[] }

    /// True when every feature lies in the calibrated range.
    member this.InRange = this.Features.Length = 0

module FeatureScaler =

    /// The map that leaves every one of <c>features</c> features as it is.
    let identity (features: int) =
        { Center = Array.zeroCreate features; Scale = Array.create features 1.0 }

    /// True when the scaler changes no value.
    let isIdentity (s: FeatureScaler) =
        Array.forall ((=) 0.0) s.Center && Array.forall ((=) 1.0) s.Scale

    /// Raises NonFiniteFeatureException for the first NaN or infinite value of the rows.
    let checkFinite (name: string) (rows: float32[][]) =
        rows
        |> Array.iteri (fun i row ->
            for j in 0 .. row.Length - 1 do
                if not (Single.IsFinite row[j]) then
                    raise (NonFiniteFeatureException(name, i, j, row[j])))

    /// Linear-interpolated quantile (numpy's default) of sorted values.
    let private quantile (sorted: float[]) (q: float) =
        let position = q * float (sorted.Length - 1)
        let lo = int (floor position)
        let hi = min (lo + 1) (sorted.Length - 1)
        sorted[lo] + (position - float lo) * (sorted[hi] - sorted[lo])

    /// A spread within 1e-6 of the column's magnitude (about 8 float32 steps) is rounding noise or none at all:
    /// such a column is only centred, as scikit-learn does, so a (near-)constant column never divides by ~0.
    let private spreadOrOne (spread: float) (magnitude: float) =
        if spread > 1e-6 * magnitude then spread else 1.0

    /// Learns the scaling of finite rows of equal width.
    let fit (scaling: FeatureScaling) (x: float32[][]) : FeatureScaler =
        let features = x[0].Length
        let column j = x |> Array.map (fun r -> float r[j])
        let magnitude (values: float[]) = values |> Array.fold (fun m v -> max m (abs v)) 0.0
        match scaling with
        | FeatureScaling.None -> identity features
        | FeatureScaling.Standard ->
            let columns = Array.init features column
            let mean = columns |> Array.map Array.average
            { Center = mean
              Scale =
                Array.init features (fun j ->
                    let std = sqrt (columns[j] |> Array.averageBy (fun v -> (v - mean[j]) ** 2.0))
                    spreadOrOne std (magnitude columns[j])) }
        | FeatureScaling.Robust ->
            let sorted = Array.init features (column >> Array.sort)
            { Center = sorted |> Array.map (fun s -> quantile s 0.5)
              Scale = sorted |> Array.map (fun s -> spreadOrOne (quantile s 0.75 - quantile s 0.25) (magnitude s)) }

    /// One row scaled (rows are checked for width and finiteness by the caller).
    let transformRow (s: FeatureScaler) (row: float32[]) : float32[] =
        Array.init row.Length (fun j -> float32 ((float row[j] - s.Center[j]) / s.Scale[j]))

    /// Rows scaled; the rows themselves when the scaler is the identity.
    let transform (s: FeatureScaler) (rows: float32[][]) : float32[][] =
        if isIdentity s then rows else Array.map (transformRow s) rows

module FeatureRange =

    /// No bound on any of <c>features</c> features (a circuit compiled for every input).
    let unbounded (features: int) =
        { Min = Array.create features -Double.MaxValue; Max = Array.create features Double.MaxValue }

    /// The per-feature range of calibration rows, widened by <c>margin</c> of its width on both sides (infinity:
    /// unbounded), as the compiler widens the accumulator ranges.
    let ofRows (margin: float) (rows: float32[][]) : FeatureRange =
        let features = rows[0].Length
        let widen (lo: float) (hi: float) =
            let extra = margin * (hi - lo)
            let clamp v = Math.Clamp(v, -Double.MaxValue, Double.MaxValue)
            if Double.IsFinite extra then clamp (lo - extra), clamp (hi + extra) else -Double.MaxValue, Double.MaxValue
        let bounds =
            Array.init features (fun j ->
                let values = rows |> Array.map (fun r -> float r[j])
                widen (Array.min values) (Array.max values))
        { Min = bounds |> Array.map fst; Max = bounds |> Array.map snd }

    /// The features of a row outside the range.
    let check (range: FeatureRange) (row: float32[]) : RangeCheck =
        { Features =
            [| for j in 0 .. row.Length - 1 do
                   let v = float row[j]
                   if not (v >= range.Min[j] && v <= range.Max[j]) then
                       { Column = j; Value = v; Min = range.Min[j]; Max = range.Max[j] } |] }

module InputContract =

    /// A contract that neither scales nor bounds features.
    let identity (features: int) =
        { Scaler = FeatureScaler.identity features; Range = FeatureRange.unbounded features }
