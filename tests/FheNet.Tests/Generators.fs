/// FsCheck generators shared by the test layers.
module FheNet.Tests.Generators

open System
open FsCheck
open FsCheck.FSharp
open FheNet.Quantization

/// Scales as training produces them: powers of two across float32's useful range, and arbitrary positive reals.
let scale: Gen<Scale> =
    Gen.oneof
        [ Gen.choose (-24, 24) |> Gen.map Scale.PowerOfTwo
          Gen.choose (1, 1_000_000) |> Gen.map (fun k -> Scale.Real(float k * 1e-4)) ]

/// Every valid combination of bit-width, signedness, range kind, scale and zero point.
let quantizer: Gen<Quantizer> =
    gen {
        let! signed = Gen.elements [ true; false ]
        let! narrow = Gen.elements [ true; false ]
        let! bits = Gen.choose ((if signed && narrow then 2 else 1), 16)
        let! s = scale
        let template = Quantizer.create bits signed narrow s 0
        let! zp = Gen.oneof [ Gen.constant 0; Gen.choose (template.QMin, template.QMax) ]
        return Quantizer.create bits signed narrow s zp
    }

/// A real value within `spread` times the quantizer's representable range (so some values clip).
let valueNear (q: Quantizer) (spread: float) : Gen<float> =
    let lo, hi = Quantizer.representableRange q
    let mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0 * spread
    Gen.choose (-1_000_000, 1_000_000) |> Gen.map (fun k -> mid + half * float k / 1e6)

let forAll (g: Gen<'a>) (property: 'a -> bool) = Prop.forAll (Arb.fromGen g) property
