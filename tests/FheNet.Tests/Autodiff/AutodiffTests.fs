module FheNet.Tests.Autodiff.AutodiffTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open FheNet.Numerics
open FheNet.Autodiff
open FheNet.Tests.Generators

/// A matrix in float64 (the check path) and the same values in float32.
type M64 = { R: int; C: int; V: float[] }

let private toTensor (m: M64) = Tensor.ofArray m.R m.C (m.V |> Array.map float32)

let private matrix rows cols =
    Gen.arrayOfLength (rows * cols) (Gen.choose (-2000, 2000) |> Gen.map (fun k -> float k / 1000.0))
    |> Gen.map (fun v -> { R = rows; C = cols; V = v |> Array.map (fun x -> float (float32 x)) })

let private dims = Gen.choose (1, 5)

/// Central finite differences of f at x (float64), for every element.
let private finiteDifferences (f: float[] -> float) (x: float[]) =
    let h = 1e-6
    Array.init x.Length (fun i ->
        let up = Array.copy x
        let down = Array.copy x
        up[i] <- up[i] + h
        down[i] <- down[i] - h
        (f up - f down) / (2.0 * h))

let private close (expected: float[]) (actual: float32[]) =
    Array.forall2 (fun (e: float) (a: float32) -> abs (e - float a) <= 2e-3 + 2e-3 * abs e) expected actual

/// Checks d(Σ r ⊙ op(inputs))/d(input i) from the tape against finite differences of the float64 reference.
let private gradientsMatch
    (inputs: M64 list)
    (weights: M64)
    (reference: M64 list -> float[])
    (op: Tape -> Var list -> Var)
    =
    let vars = inputs |> List.map (toTensor >> Ad.parameter)
    let tape = Tape 1
    let out = op tape vars
    let loss = Ad.sum tape (Ad.mul tape out (Ad.constant (toTensor weights)))
    tape.Backward loss
    inputs
    |> List.mapi (fun i m ->
        let objective (x: float[]) =
            let replaced = inputs |> List.mapi (fun j other -> if j = i then { m with V = x } else other)
            Array.fold2 (fun acc a b -> acc + a * b) 0.0 (reference replaced) weights.V
        close (finiteDifferences objective m.V) vars[i].Grad)
    |> List.forall id

let private matmul64 (a: M64) (b: M64) =
    Array.init (a.R * b.C) (fun k ->
        let i, j = k / b.C, k % b.C
        Seq.sum (seq { for t in 0 .. a.C - 1 -> a.V[i * a.C + t] * b.V[t * b.C + j] }))

let private binaryCase broadcast =
    gen {
        let! r = dims
        let! c = dims
        let! a = matrix r c
        let! b = matrix (if broadcast then 1 else r) c
        let! w = matrix r c
        return a, b, w
    }

let private lossCase =
    gen {
        let! r = dims
        let! c = Gen.choose (2, 5)
        let! logits = matrix r c
        let! labels = Gen.arrayOfLength r (Gen.choose (0, c - 1))
        let! weights = Gen.arrayOfLength c (Gen.choose (1, 4) |> Gen.map float32)
        let! target = matrix r c
        return logits, labels, weights, target
    }

/// Values kept at least 0.01 away from every activation's kinks, where the derivative is one-sided.
let private awayFromKinks (m: M64) =
    let kinks = [ -3.0; -1.0; 0.0; 1.0; 3.0; 6.0 ]
    { m with V = m.V |> Array.map (fun x -> if kinks |> List.exists (fun k -> abs (x - k) < 0.01) then x + 0.05 else x) }

let private softmaxCe64 (logits: M64) (labels: int[]) (w: float32[]) =
    let mutable total = 0.0
    let mutable weightSum = 0.0
    for i in 0 .. logits.R - 1 do
        let row = logits.V[i * logits.C .. (i + 1) * logits.C - 1]
        let m = Array.max row
        let lse = m + log (row |> Array.sumBy (fun v -> exp (v - m)))
        total <- total + float w[labels[i]] * (lse - row[labels[i]])
        weightSum <- weightSum + float w[labels[i]]
    total / weightSum

[<Tests>]
let tests =
    testList
        "Numerics and Autodiff"
        [ testProperty "blocked parallel matmul equals the reference product, whatever the thread count"
          <| forAll
              (gen {
                  let! r = Gen.choose (1, 40)
                  let! k = Gen.choose (1, 300)
                  let! c = Gen.choose (1, 40)
                  let! a = matrix r k
                  let! b = matrix k c
                  return a, b
              })
              (fun (a, b) ->
                  let reference = Tensor.matmulReference (toTensor a) (toTensor b)
                  let one = Tensor.matmul 1 (toTensor a) (toTensor b)
                  let two = Tensor.matmul 2 (toTensor a) (toTensor b)
                  one.Data = two.Data
                  && Array.forall2 (fun (x: float32) y -> abs (x - y) <= 1e-3f * (1.0f + abs y)) one.Data reference.Data)

          test "a large product is bit-identical on 1 and 4 threads" {
              let rng = TrainingRng 5UL
              let a = Tensor.init 96 257 (fun _ _ -> float32 (rng.NextGaussian()))
              let b = Tensor.init 257 130 (fun _ _ -> float32 (rng.NextGaussian()))
              Expect.equal (Tensor.matmul 4 a b).Data (Tensor.matmul 1 a b).Data "same bits"
          }

          testProperty "transpose is an involution and moves (i, j) to (j, i)"
          <| forAll (gen { let! r = dims in let! c = dims in return! matrix r c }) (fun m ->
              let t = toTensor m
              let tt = Tensor.transpose t
              Tensor.transpose tt = t && Seq.forall (fun k -> tt[k % t.Cols, k / t.Cols] = t[k / t.Cols, k % t.Cols]) [ 0 .. t.Length - 1 ])

          testProperty "matmul gradient = finite differences"
          <| forAll
              (gen {
                  let! r = dims
                  let! k = dims
                  let! c = dims
                  let! a = matrix r k
                  let! b = matrix k c
                  let! w = matrix r c
                  return a, b, w
              })
              (fun (a, b, w) ->
                  gradientsMatch [ a; b ] w (fun m -> matmul64 m[0] m[1]) (fun tape v -> Ad.matmul tape v[0] v[1]))

          testProperty "transpose gradient = finite differences"
          <| forAll (gen { let! r = dims in let! c = dims in let! a = matrix r c in let! w = matrix c r in return a, w }) (fun (a, w) ->
              gradientsMatch [ a ] w (fun m -> Array.init (m[0].R * m[0].C) (fun k -> m[0].V[(k % m[0].R) * m[0].C + k / m[0].R])) (fun tape v -> Ad.transpose tape v[0]))

          for broadcast in [ false; true ] do
              testProperty $"add gradient = finite differences (row broadcast: %b{broadcast})"
              <| forAll (binaryCase broadcast) (fun (a, b, w) ->
                  gradientsMatch [ a; b ] w (fun m -> Array.init m[0].V.Length (fun k -> m[0].V[k] + m[1].V[if broadcast then k % m[0].C else k])) (fun tape v -> Ad.add tape v[0] v[1]))

              testProperty $"mul gradient = finite differences (row broadcast: %b{broadcast})"
              <| forAll (binaryCase broadcast) (fun (a, b, w) ->
                  gradientsMatch [ a; b ] w (fun m -> Array.init m[0].V.Length (fun k -> m[0].V[k] * m[1].V[if broadcast then k % m[0].C else k])) (fun tape v -> Ad.mul tape v[0] v[1]))

          testProperty "sum and mean gradients = finite differences"
          <| forAll (binaryCase false) (fun (a, _, w) ->
              let w1 = { w with R = 1; C = 1; V = [| w.V[0] |] }
              gradientsMatch [ a ] w1 (fun m -> [| Array.sum m[0].V |]) (fun tape v -> Ad.sum tape v[0])
              && gradientsMatch [ a ] w1 (fun m -> [| Array.average m[0].V |]) (fun tape v -> Ad.mean tape v[0]))

          for act in Activation.all do
              testProperty $"%s{Activation.name act} gradient = finite differences"
              <| forAll (binaryCase false) (fun (a, _, w) ->
                  let a = awayFromKinks a
                  gradientsMatch [ a ] w (fun m -> m[0].V |> Array.map (Activation.value64 act)) (fun tape v -> Ad.activation tape act v[0]))

          testProperty "span kernels of every activation equal the scalar value and derivative, at any length"
          <| forAll
              (Gen.zip3
                  (Gen.elements Activation.all)
                  (Gen.choose (0, 70) |> Gen.bind (fun n -> Gen.arrayOfLength n (Gen.choose (-4000, 4000))))
                  (Gen.choose (-1000, 1000)))
              (fun (act, codes, gradSeed) ->
                  // Values around the kinks (0 among them) as well as spread out; the length crosses vector widths.
                  let x = codes |> Array.map (fun c -> float32 c / 500.0f)
                  let outputGrad = Array.init x.Length (fun k -> float32 ((k * 37 + gradSeed) % 200 - 100) / 64.0f)
                  let start = Array.init x.Length (fun k -> float32 (k % 7) - 3.0f)
                  let values = Array.zeroCreate x.Length
                  Activation.valueInto act (ReadOnlySpan x) (Span values)
                  let grad = Array.copy start
                  Activation.accumulateGradient act (ReadOnlySpan x) (ReadOnlySpan outputGrad) (Span grad)
                  values = Array.map (Activation.value act) x
                  && grad = Array.init x.Length (fun k -> start[k] + outputGrad[k] * Activation.derivative act x[k]))

          testProperty "weighted softmax cross-entropy gradient = finite differences"
          <| forAll lossCase (fun (logits, labels, weights, _) ->
              let one = { R = 1; C = 1; V = [| 1.0 |] }
              gradientsMatch [ logits ] one (fun m -> [| softmaxCe64 m[0] labels weights |]) (fun tape v -> Ad.softmaxCrossEntropy tape v[0] labels weights))

          testProperty "mean squared error gradient = finite differences"
          <| forAll lossCase (fun (prediction, _, _, target) ->
              let one = { R = 1; C = 1; V = [| 1.0 |] }
              gradientsMatch [ prediction ] one (fun m -> [| Array.average (Array.map2 (fun p t -> (p - t) * (p - t)) m[0].V target.V) |]) (fun tape v -> Ad.meanSquaredError tape v[0] (toTensor target)))

          testProperty "scaleExp2 gradient (x and log2 scales) = finite differences"
          <| forAll (binaryCase false) (fun (a, _, w) ->
              let t1 = { R = 1; C = 1; V = [| 0.25 |] }
              let t2 = { R = 1; C = 1; V = [| -0.5 |] }
              gradientsMatch [ a; t1; t2 ] w (fun m -> m[0].V |> Array.map (fun x -> x * 2.0 ** (m[1].V[0] + m[2].V[0]))) (fun tape v -> Ad.scaleExp2 tape false v[0] [ v[1]; v[2] ]))

          testProperty "fake quantization: codes in range, STE gradient on x, LSQ gradient on the scale"
          <| forAll (gen { let! r = dims in let! c = dims in let! a = matrix r c in let! e = Gen.choose (-3, 1) in return a, e }) (fun (a, e) ->
              let spec = { QMin = -4; QMax = 3; Rounding = Rounding.HalfUp }
              let x = Ad.parameter (toTensor a)
              let theta = Ad.parameter (Tensor.scalar (float32 e))
              let tape = Tape 1
              let q = Ad.quantize tape true spec x [ theta ]
              let y = Ad.scaleExp2 tape true q [ theta ]
              tape.Backward(Ad.sum tape y)
              let s = Math.ScaleB(1.0, e)
              let codesOk = q.Value.Data |> Array.forall (fun c -> c = MathF.Round c && c >= -4.0f && c <= 3.0f)
              let inside (v: float) = v / s >= -4.0 && v / s <= 3.0
              let steOk = Array.forall2 (fun (v: float) (g: float32) -> g = (if inside v then 1.0f else 0.0f)) a.V x.Grad
              let lsq =
                  Array.map2 (fun (v: float) (c: float32) -> if inside v then float c - v / s else float c) a.V q.Value.Data
                  |> Array.sum
                  |> (*) (s * Math.Log 2.0)
              codesOk && steOk && abs (lsq - float theta.Grad[0]) <= 1e-3 * (1.0 + abs lsq))

          testProperty "quantizedLinear equals the composition of quantize, mask, matmul, add and scaleExp2 (values and gradients)"
          <| forAll
              (gen {
                  let! m = dims
                  let! k = dims
                  let! n = dims
                  let! x = matrix m k
                  let! w = matrix n k
                  let! b = matrix 1 n
                  let! g = matrix m n
                  let! masked = Gen.elements [ true; false ]
                  let! mask = Gen.arrayOfLength (n * k) (Gen.elements [ 0.0f; 1.0f ])
                  let! ex = Gen.choose (-3, 0)
                  let! ew = Gen.choose (-3, 0)
                  let! pot = Gen.elements [ true; false ]
                  return x, w, b, g, (if masked then mask else Array.empty), float32 ex + 0.3f, float32 ew - 0.2f, pot
              })
              (fun (x, w, b, g, mask, ex, ew, pot) ->
                  let inputCodes = { QMin = -4; QMax = 3; Rounding = Rounding.HalfUp }
                  let weightCodes = { QMin = -8; QMax = 7; Rounding = Rounding.HalfEven }
                  let biasCodes = { QMin = -1024; QMax = 1023; Rounding = Rounding.HalfUp }
                  let run fused =
                      let xv, wv, bv = Ad.parameter (toTensor x), Ad.parameter (toTensor w), Ad.parameter (toTensor b)
                      let tx, tw = Ad.parameter (Tensor.scalar ex), Ad.parameter (Tensor.scalar ew)
                      let tape = Tape 1
                      let y =
                          if fused then
                              let struct (y, _) = Ad.quantizedLinear tape pot inputCodes weightCodes biasCodes xv wv mask bv tx tw (Some(LinearBuffers()))
                              y
                          else
                              let weff = if mask.Length = 0 then wv else Ad.mul tape wv (Ad.constant (Tensor.ofArray w.R w.C mask))
                              let qx = Ad.quantize tape pot inputCodes xv [ tx ]
                              let qw = Ad.quantize tape pot weightCodes weff [ tw ]
                              let qb = Ad.quantize tape pot biasCodes bv [ Ad.detach tx; Ad.detach tw ]
                              Ad.scaleExp2 tape pot (Ad.add tape (Ad.matmul tape qx (Ad.transpose tape qw)) qb) [ tx; tw ]
                      tape.Backward(Ad.sum tape (Ad.mul tape y (Ad.constant (toTensor g))))
                      y.Value.Data, [ xv.Grad; wv.Grad; bv.Grad; tx.Grad; tw.Grad ]
                  let yf, gf = run true
                  let yc, gc = run false
                  let near (a: float32[]) (b: float32[]) =
                      Array.forall2 (fun (u: float32) v -> abs (u - v) <= 1e-4f * (1.0f + abs v)) a b
                  yf = yc && List.forall2 near gf gc)

          testProperty "linear equals add (matmul x (transpose W)) b (values and gradients)"
          <| forAll
              (gen {
                  let! m = dims
                  let! k = dims
                  let! n = dims
                  let! x = matrix m k
                  let! w = matrix n k
                  let! b = matrix 1 n
                  let! g = matrix m n
                  return x, w, b, g
              })
              (fun (x, w, b, g) ->
                  let run fused =
                      let xv, wv, bv = Ad.parameter (toTensor x), Ad.parameter (toTensor w), Ad.parameter (toTensor b)
                      let tape = Tape 1
                      let y =
                          if fused then Ad.linear tape xv wv bv (Some(LinearBuffers()))
                          else Ad.add tape (Ad.matmul tape xv (Ad.transpose tape wv)) bv
                      tape.Backward(Ad.sum tape (Ad.mul tape y (Ad.constant (toTensor g))))
                      y.Value.Data, [ xv.Grad; wv.Grad; bv.Grad ]
                  let yf, gf = run true
                  let yc, gc = run false
                  let near (a: float32[]) (b: float32[]) =
                      Array.forall2 (fun (u: float32) v -> abs (u - v) <= 1e-4f * (1.0f + abs v)) a b
                  near yf yc && List.forall2 near gf gc)

          test "round half up sends ties towards +infinity; half even to the even neighbour" {
              let up = { QMin = -8; QMax = 7; Rounding = Rounding.HalfUp }
              let even = { up with Rounding = Rounding.HalfEven }
              Expect.equal ([ -1.5f; -0.5f; 0.5f; 2.5f ] |> List.map (CodeSpec.code up)) [ -1.0f; 0.0f; 1.0f; 3.0f ] "half up"
              Expect.equal ([ -1.5f; -0.5f; 0.5f; 2.5f ] |> List.map (CodeSpec.code even)) [ -2.0f; -0.0f; 0.0f; 2.0f ] "half even"
          } ]
