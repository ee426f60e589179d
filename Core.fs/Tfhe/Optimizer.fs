namespace FheNet.Tfhe

open System
open System.Collections.Concurrent
open FheNet

/// No secure KS-PBS parameter set in the optimizer's domain meets the request. The message names the request, why
/// it fails and what to change.
type InfeasibleParametersException(precisionBits: int, maxNoiseLevel: int, log2PError: float, reason: string) =
    inherit
        Exception(
            $"No secure KS-PBS parameter set for %d{precisionBits}-bit lookups at 2-norm ν = %d{maxNoiseLevel} and "
            + $"p_error = 2^%.2f{log2PError}: %s{reason}. Lower the lookup's precision, reduce ν (smaller weights or "
            + "fewer terms between two lookups), or accept a larger p_error."
        )

    /// The requested plaintext precision, in bits.
    member _.PrecisionBits = precisionBits
    /// The requested 2-norm ν, rounded up.
    member _.MaxNoiseLevel = maxNoiseLevel
    /// The requested log2 p_error per lookup.
    member _.Log2PError = log2PError

/// What a circuit needs of a KS-PBS set's noise, one requirement per kind of operation. A ciphertext carries
/// PbsVarianceFactor × the variance of a bootstrap output (e.g. ν² for a linear combination of 2-norm ν of bootstrap
/// outputs; 2^(2B)·ν² when that combination is first multiplied by 2^B), and must decode correctly, i.e. its noise
/// stay below 1/(4·PlaintextModulus).
[<Struct>]
type LookupRequirement =
    { PbsVarianceFactor: float
      PlaintextModulus: int
      /// True for a lookup (the keyswitch and the modulus switch add their noise first); false for a ciphertext
      /// that the client decrypts as it is.
      ThroughBlindRotation: bool }

/// Searches the cheapest secure KS-PBS parameter set for one lookup precision, as Concrete's optimizer does: noise
/// fixed to the security minimum of TFHE-rs's curve, Concrete's cost model, every (k, N, n) of the domain, and for
/// each the Pareto fronts (cost, noise) of the bootstrapping and keyswitching decompositions.
///
/// TUniform is the default family rather than Gaussian: it is TFHE-rs's current default, its sampler is exact
/// integer arithmetic (no floating-point tails to get wrong, constant time), and its sets compare directly with
/// TFHE-rs's default sets. Gaussian is available (optimizeWith) to cross-check against the 36 Gaussian presets.
module Optimizer =

    /// Concrete's cost of one CMux: (k+1)·ℓ forward FFTs and k+1 inverse FFTs of N log2 N + N each, and
    /// (k+1)²·ℓ·N multiply-adds in the Fourier domain.
    let cmuxCost (k: int) (polynomialSize: int) (level: int) =
        let bigN, glweSize, levelF = float polynomialSize, float (k + 1), float level
        let fft = bigN * Math.Log2 bigN + bigN
        glweSize * levelF * fft + glweSize * fft + glweSize * glweSize * levelF * bigN

    /// Concrete's cost of a keyswitch from dimension nIn to nOut with ℓ levels: decompositions, multiplications
    /// and additions.
    let keyswitchCost (nIn: int) (nOut: int) (level: int) =
        let terms = float nIn * float level
        let outSize = float (nOut + 1)
        terms + terms * outSize + (terms - 1.0) * outSize + 1.0

    /// Concrete's cost of one KS-PBS lookup with a parameter set: the keyswitch and n CMuxes. (The linear combination
    /// before it is left out: it depends on the circuit, not on the set.)
    let cost (p: TfheParameters) =
        keyswitchCost p.BigLweDimension p.LweDimension p.KsLevel
        + float p.LweDimension * cmuxCost p.GlweDimension p.PolynomialSize p.PbsLevel

    /// GLWE dimensions k searched.
    let glweDimensions = [| 1..6 |]

    /// log2 of the polynomial sizes N searched (256 … 131072).
    let polynomialSizeLogs = [| 8..17 |]

    /// Small LWE dimensions n searched (the security curve starts at 450).
    let lweDimensionRange = 450, 2047

    /// A decomposition (base log, levels) on a Pareto front, with its noise and its cost per unit.
    [<Struct>]
    type private Decomposition = { BaseLog: int; Level: int; Noise: float; Cost: float }

    /// Keeps, among candidates sorted by increasing cost, those whose noise is strictly below every cheaper one's.
    let private paretoFront (candidates: Decomposition seq) =
        let front = ResizeArray()
        for c in candidates do
            if front.Count = 0 || c.Noise < front[front.Count - 1].Noise then
                front.Add c
        front.ToArray()

    /// For each level, the base with the least noise; βℓ never beyond the 64 bits of the torus.
    let private bestPerLevel (noise: int -> int -> float) (levelCost: int -> float) =
        seq {
            for level in 1..64 do
                let best = seq { 1 .. 64 / level } |> Seq.minBy (fun b -> noise b level)
                yield { BaseLog = best; Level = level; Noise = noise best level; Cost = levelCost level }
        }
        |> paretoFront

    /// Bootstrapping decompositions of (k, N) with the family's minimal GLWE noise: noise and cost of one CMux.
    let private pbsFronts = ConcurrentDictionary<struct (NoiseFamily * int * int), Decomposition[]>()

    let private pbsFront family k polynomialSize =
        pbsFronts.GetOrAdd(
            struct (family, k, polynomialSize),
            fun _ ->
                let glwe = (Security.minimalNoise family (k * polynomialSize)).Variance
                bestPerLevel (NoiseModel.cmuxVariance k polynomialSize glwe) (cmuxCost k polynomialSize)
        )

    /// Keyswitching decompositions into a small key with the given noise: noise per input coefficient; the cost is
    /// the level count (the keyswitch cost grows with it). TUniform keys share one front per bound.
    let private ksFronts = ConcurrentDictionary<NoiseDistribution, Decomposition[]>()

    let private ksFront lweNoise =
        ksFronts.GetOrAdd(
            lweNoise,
            fun (noise: NoiseDistribution) -> bestPerLevel (NoiseModel.keyswitchVariancePerInput noise.Variance) float
        )

    /// The cheapest choice found so far.
    [<Struct>]
    type private Candidate =
        { N: int; K: int; BigN: int; Pbs: Decomposition; Ks: Decomposition; Cost: float }

    /// Cheapest feasible (n, decompositions) for one (k, N), or none; `bound` prunes choices costing more. Each
    /// constraint is (factor on the PBS variance, largest variance allowed, through the blind rotation or not).
    let private searchGlwe family (k: int) (polynomialSize: int) (constraints: struct (float * float * bool)[]) (bound: float) =
        let pbs = pbsFront family k polynomialSize
        let bigN = k * polynomialSize
        let nMin, nMax = lweDimensionRange
        let mutable best = ValueNone
        let mutable bestCost = bound
        let mutable n = nMin
        // Every cost grows with n: stop at the first n whose cheapest conceivable lookup costs more than the best.
        while n <= nMax && float n * pbs[0].Cost + keyswitchCost bigN n 1 < bestCost do
            let ms = NoiseModel.modulusSwitchVarianceOf ModulusSwitchKind.CenteredMean n polynomialSize
            let ks = ksFront (Security.minimalNoise family n)
            let mutable i = 0
            while i < pbs.Length && float n * pbs[i].Cost < bestCost do
                let pbsNoise = float n * pbs[i].Noise
                // What is left for the keyswitch under the tightest lookup; decryptions only bound the PBS noise.
                let mutable budget = Double.PositiveInfinity
                let mutable decryptable = true
                for struct (factor, maxVariance, throughBlindRotation) in constraints do
                    if throughBlindRotation then
                        budget <- min budget (maxVariance - factor * pbsNoise - ms)
                    elif factor * pbsNoise > maxVariance then
                        decryptable <- false
                if decryptable && budget > 0.0 then
                    // The cheapest keyswitch that fits the remaining budget (fronts are sorted by cost).
                    match ks |> Array.tryFind (fun d -> float bigN * d.Noise <= budget) with
                    | Some d ->
                        let c = float n * pbs[i].Cost + keyswitchCost bigN n d.Level
                        if c < bestCost then
                            bestCost <- c
                            best <- ValueSome { N = n; K = k; BigN = polynomialSize; Pbs = pbs[i]; Ks = d; Cost = c }
                    | None -> ()
                i <- i + 1
            n <- n + 1
        best

    let private familyPrefix family =
        match family with
        | NoiseFamily.TUniform -> "TU"
        | NoiseFamily.Gaussian -> "GA"

    /// The KS-PBS set the optimizer builds from its choices of n, k, N and the two decompositions (base log, level),
    /// noise at the security minimum of `family`, for plaintexts of `precisionBits` bits and a 2-norm
    /// `maxNoiseLevel`: what a compiled circuit with these choices runs on.
    let parametersOf family (name: string) precisionBits maxNoiseLevel (n: int) (k: int) (bigN: int) (pbsBase: int, pbsLevel: int) (ksBase: int, ksLevel: int) =
        { Name = $"%s{name}_n%d{n}_k%d{k}_N%d{bigN}_pbs%d{pbsBase}x%d{pbsLevel}_ks%d{ksBase}x%d{ksLevel}"
          LweDimension = n
          GlweDimension = k
          PolynomialSize = bigN
          LweNoise = Security.minimalNoise family n
          GlweNoise = Security.minimalNoise family (k * bigN)
          PbsBaseLog = pbsBase
          PbsLevel = pbsLevel
          KsBaseLog = ksBase
          KsLevel = ksLevel
          MessageModulus = 1 <<< precisionBits
          CarryModulus = 1
          MaxNoiseLevel = maxNoiseLevel
          PublishedLog2PFail = 0.0
          Order = PbsOrder.KeyswitchBootstrap
          ModulusSwitch = ModulusSwitchKind.CenteredMean
          Insecure = false }

    let private toParameters family (name: string) precisionBits maxNoiseLevel (c: Candidate) =
        parametersOf family name precisionBits maxNoiseLevel c.N c.K c.BigN (c.Pbs.BaseLog, c.Pbs.Level) (c.Ks.BaseLog, c.Ks.Level)

    /// The cheapest candidate over the whole domain meeting every requirement at p_error 2^log2PError.
    let private search family (requirements: LookupRequirement[]) log2PError (infeasible: string -> exn) =
        let constraints =
            requirements
            |> Array.map (fun r ->
                struct (r.PbsVarianceFactor,
                        NoiseModel.maxVarianceForLog2PFail r.PlaintextModulus log2PError,
                        r.ThroughBlindRotation))
        let mutable best = ValueNone
        let mutable bestCost = Double.PositiveInfinity
        for k in glweDimensions do
            for logN in polynomialSizeLogs do
                match searchGlwe family k (1 <<< logN) constraints bestCost with
                | ValueSome c ->
                    best <- ValueSome c
                    bestCost <- c.Cost
                | ValueNone -> ()
        match best with
        | ValueSome c -> c
        | ValueNone ->
            let largestModulus = requirements |> Array.map _.PlaintextModulus |> Array.max
            raise (
                infeasible (
                    $"even the largest sets searched (N up to 2^%d{Array.last polynomialSizeLogs}, k up to %d{Array.last glweDimensions}, "
                    + $"n up to %d{snd lweDimensionRange}) leave too much noise for a decoding bound of 1/%d{4 * largestModulus}"
                )
            )

    let private checkLog2PError (log2PError: float) =
        // Up to p_error near 1: a user may ask for very noisy lookups to see their effect.
        if not (log2PError < 0.0 && log2PError >= -1000.0) then
            raise (ParameterOutOfRangeException("log2PError", log2PError, "a log2 probability in [-1000, 0)"))

    let private results = ConcurrentDictionary<struct (NoiseFamily * int * int * float), TfheParameters>()

    /// The cheapest secure KS-PBS set (Concrete's cost model) for lookups on `precisionBits`-bit plaintexts (plus a
    /// padding bit) whose input is a combination of bootstrap outputs of 2-norm at most ν, each failing with
    /// probability at most 2^log2PError. ν is rounded up to an integer (the set's MaxNoiseLevel); the set's
    /// PublishedLog2PFail is its modelled log2 p_fail at that ν. Results are cached per request.
    /// Raises InfeasibleParametersException when no set of the domain qualifies.
    let optimizeWith (family: NoiseFamily) (precisionBits: int) (nu: float) (log2PError: float) =
        Guard.inRange "precisionBits" 1 8 precisionBits
        if not (Double.IsFinite nu && nu >= 1.0 && nu <= 1e9) then
            raise (ParameterOutOfRangeException("nu", nu, "a 2-norm in [1, 1e9]"))
        checkLog2PError log2PError
        let maxNoiseLevel = int (Math.Ceiling nu)
        results.GetOrAdd(
            struct (family, precisionBits, maxNoiseLevel, log2PError),
            fun _ ->
                let requirement =
                    { PbsVarianceFactor = float maxNoiseLevel * float maxNoiseLevel
                      PlaintextModulus = 1 <<< precisionBits
                      ThroughBlindRotation = true }
                let infeasible reason =
                    InfeasibleParametersException(precisionBits, maxNoiseLevel, log2PError, reason) :> exn
                let c = search family [| requirement |] log2PError infeasible
                let name = $"OPT_%s{familyPrefix family}_P%d{precisionBits}_NU%d{maxNoiseLevel}_2M%.0f{-log2PError}"
                let set = toParameters family name precisionBits maxNoiseLevel c
                { set with PublishedLog2PFail = NoiseModel.log2PFailAtMaxNoiseLevel set }
        )

    /// optimizeWith TUniform noise, the optimizer's default family.
    let optimizeLog2 (precisionBits: int) (nu: float) (log2PError: float) =
        optimizeWith NoiseFamily.TUniform precisionBits nu log2PError

    /// optimizeLog2 with p_error given as a probability in (0, 1), e.g. 2^-128 ≈ 2.9e-39.
    let optimize (precisionBits: int) (nu: float) (pError: float) =
        if not (pError > 0.0 && pError < 1.0) then
            raise (ParameterOutOfRangeException("pError", pError, "a probability in (0, 1)"))
        optimizeLog2 precisionBits nu (Math.Log2 pError)

    let private circuitResults =
        ConcurrentDictionary<struct (NoiseFamily * LookupRequirement list * float), TfheParameters>()

    /// The modelled log2 p_fail of a requirement with a parameter set.
    let log2PFailOf (p: TfheParameters) (r: LookupRequirement) =
        let carried = r.PbsVarianceFactor * NoiseModel.pbsVariance p
        NoiseModel.log2PFailOfVariance
            r.PlaintextModulus
            (if r.ThroughBlindRotation then NoiseModel.blindRotationVariance p carried else carried)

    /// The cheapest secure KS-PBS set (Concrete's cost model) on which every lookup of a circuit fails with
    /// probability at most 2^log2PError, one key set for the whole circuit. Its message modulus is the largest
    /// plaintext modulus required; its PublishedLog2PFail the worst requirement's modelled log2 p_fail; its
    /// MaxNoiseLevel the square root of the largest factor, rounded up. Cached per request. Raises
    /// InfeasibleParametersException when no set of the domain meets them all.
    let optimizeCircuit (family: NoiseFamily) (requirements: LookupRequirement list) (log2PError: float) =
        if requirements.IsEmpty then
            raise (InvalidShapeException("requirements", "is empty; a circuit needs at least one lookup to choose keys for"))
        for r in requirements do
            if not (Double.IsFinite r.PbsVarianceFactor && r.PbsVarianceFactor >= 1.0) then
                raise (ParameterOutOfRangeException("PbsVarianceFactor", r.PbsVarianceFactor, "a finite factor >= 1"))
            if r.PlaintextModulus < 1 || r.PlaintextModulus > (1 <<< 16) || (r.PlaintextModulus &&& (r.PlaintextModulus - 1)) <> 0 then
                raise (ParameterOutOfRangeException("PlaintextModulus", r.PlaintextModulus, "a power of two in [1, 2^16]"))
        checkLog2PError log2PError
        let requirements = List.distinct requirements
        circuitResults.GetOrAdd(
            struct (family, requirements, log2PError),
            fun _ ->
                let reqs = Array.ofList requirements
                // The set's message space serves the widest table (decrypted values need no table).
                let precisionBits =
                    reqs
                    |> Array.filter _.ThroughBlindRotation
                    |> Array.map (fun r -> Numerics.BitOperations.Log2(uint32 r.PlaintextModulus))
                    |> Array.fold max 1
                let maxNoiseLevel = reqs |> Array.map (fun r -> Math.Ceiling(sqrt r.PbsVarianceFactor)) |> Array.max |> min 1e9 |> int
                let infeasible reason =
                    InfeasibleParametersException(precisionBits, maxNoiseLevel, log2PError, reason) :> exn
                let c = search family reqs log2PError infeasible
                let name = $"OPT_%s{familyPrefix family}_CIRCUIT_P%d{precisionBits}_2M%.0f{-log2PError}"
                let set = toParameters family name precisionBits maxNoiseLevel c
                { set with PublishedLog2PFail = reqs |> Array.map (log2PFailOf set) |> Array.max }
        )
