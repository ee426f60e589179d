namespace FheNet.Cluster

open System
open System.Threading
open Microsoft.Extensions.Logging
open Orleans
open Orleans.Runtime
open FheNet.Deploy
open FheNet.Server

/// The checks a front door makes before it sends bytes into the cluster: the model's own parsers, cheap next to
/// preparing keys or evaluating, so that bad bytes are refused with the server's 400 where they arrive.
type ModelChecks =
    { /// Raises InvalidFheDataException unless the bytes are evaluation keys of this model.
      EvaluationKeys: byte[] -> unit
      /// Raises InvalidFheDataException unless the bytes are one request's ciphertexts for this model.
      Ciphertexts: byte[] -> unit }

/// The checks of a saved FHE model.
module ModelChecks =

    let ofModel (model: FheModelServer) =
        let circuit = model.Circuit
        let context = ModelContext.ofCircuit circuit
        let features = circuit.Model.Layers[0].Weights[0].Length
        { EvaluationKeys = fun bytes -> FheSerializer.evaluationKeysOfBytes circuit.Parameters context bytes |> ignore
          Ciphertexts = fun bytes -> FheSerializer.inputsOfBytes circuit.Parameters features context bytes |> ignore }

/// What a front door's key store holds for a registered key: its content id and the compressed bytes the client sent
/// (a few MB, against hundreds once prepared), kept to store them again if a non-durable storage lost them.
type ClusterKey = { Id: string; Compressed: byte[] }

/// How long a front door keeps retrying an evaluation that failed for a reason other than the request itself (a silo
/// that died with the replica, an activation that failed during the failover...).
type RetryPolicy =
    { /// Tries in all, the first included.
      Attempts: int
      /// The pause before the second try; doubled after each failure, up to <c>MaxDelay</c>.
      FirstDelay: TimeSpan
      MaxDelay: TimeSpan }

module RetryPolicy =

    /// Long enough to outlast the declaration of a dead silo (seconds to tens of seconds with Orleans' defaults).
    let defaults =
        { Attempts = 12
          FirstDelay = TimeSpan.FromMilliseconds 250.0
          MaxDelay = TimeSpan.FromSeconds 10.0 }

/// The server's backend on a silo: keys go to the key grain of their content id (persisted through the cluster's key
/// storage), and each evaluation to a replica of the key, replica after replica over the active silos, so that the
/// requests of a key fan out over the cluster. Failures of the cluster are retried; the request's own faults
/// (refused bytes, cancellation) are not.
[<Sealed>]
type ClusterBackend
    (
        grains: IGrainFactory,
        clientArtifact: byte[],
        checks: ModelChecks,
        activeSilos: unit -> int,
        retry: RetryPolicy,
        logger: ILogger
    ) =
    let mutable nextReplica = -1

    /// Runs <c>work</c> until it succeeds, retrying the cluster's failures with growing pauses.
    let retrying (what: string) (cancellation: CancellationToken) (work: unit -> 'T) : 'T =
        let rec attempt (tried: int) (delay: TimeSpan) =
            let outcome =
                try
                    Ok(work ())
                with
                | :? OperationCanceledException when cancellation.IsCancellationRequested -> reraise ()
                | e -> Error e
            match outcome with
            | Ok result -> result
            | Error e when tried < retry.Attempts ->
                logger.LogWarning(
                    "{What} failed ({Error}); retry {Try} of {Tries} in {Delay} ms",
                    what, e.Message, tried, retry.Attempts - 1, delay.TotalMilliseconds)
                cancellation.WaitHandle.WaitOne delay |> ignore
                cancellation.ThrowIfCancellationRequested()
                attempt (tried + 1) (min retry.MaxDelay (delay * 2.0))
            | Error e ->
                raise (InvalidOperationException($"the cluster failed %s{what} %d{retry.Attempts} times; the last failure: %s{e.Message}", e))
        attempt 1 retry.FirstDelay

    let store (key: ClusterKey) (cancellation: CancellationToken) =
        retrying $"storing key %s{key.Id}" cancellation (fun () ->
            grains.GetGrain<IEvaluationKeyGrain>(key.Id).Store(key.Compressed).GetAwaiter().GetResult())

    let evaluate (key: ClusterKey) (ciphertexts: byte[]) (cancellation: CancellationToken) =
        retrying $"an evaluation with key %s{key.Id}" cancellation (fun () ->
            // Replica i sits on the i-th active silo: cycling over as many replicas as silos spreads the load.
            let replica = (Interlocked.Increment &nextReplica &&& Int32.MaxValue) % activeSilos ()
            let grain = grains.GetGrain<IKeyReplicaGrain>(ClusterNames.ReplicaKey(key.Id, replica))
            try
                grain.Evaluate(ciphertexts, cancellation).GetAwaiter().GetResult()
            with :? EvaluationKeyNotStoredException ->
                // The storage lost the key (the in-memory storage of a silo that died): store it again, then retry.
                store key cancellation
                reraise ())

    interface IInferenceBackend with
        member _.ClientArtifact = clientArtifact

        member _.LoadEvaluationKeys serialized =
            checks.EvaluationKeys serialized
            let key = { Id = ClusterNames.ContentId serialized; Compressed = serialized }
            store key CancellationToken.None
            struct (key :> obj, int64 serialized.Length)

        member _.Evaluate(keys, ciphertexts, cancellation) =
            checks.Ciphertexts ciphertexts
            evaluate (keys :?> ClusterKey) ciphertexts cancellation

/// The silo-side services of the cluster backend.
module ClusterBackend =

    /// Active silos in this silo's view of the membership (at least 1: this one).
    let activeSilos (membership: IClusterMembershipService) () =
        membership.CurrentSnapshot.Members.Values
        |> Seq.filter (fun m -> m.Status = SiloStatus.Active)
        |> Seq.length
        |> max 1
