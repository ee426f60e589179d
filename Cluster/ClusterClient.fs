namespace FheNet.Cluster

open System
open System.Threading
open System.Threading.Tasks
open FheNet.Deploy

/// One client's view of the cluster over HTTP: the same API as InferenceClient, through any of several front doors.
/// A front door that does not answer is left for the next one; a front door that does not know the client's keys (a
/// new one, or one that restarted) gets them registered again. Thread-safe; owns its InferenceClients.
/// <param name="frontDoors">The silos' HTTP base addresses.</param>
/// <param name="evaluationKeys">The client's serialized evaluation keys, registered wherever they are needed.</param>
/// <param name="attempts">Requests tried in all for one prediction before the last failure is raised.</param>
[<Sealed>]
type ClusterInferenceClient(frontDoors: Uri[], evaluationKeys: byte[], attempts: int) =
    do
        if isNull (box frontDoors) || frontDoors.Length = 0 then
            raise (ArgumentException("pass the HTTP address of at least one silo", "frontDoors"))
        if attempts < 1 then
            raise (ArgumentOutOfRangeException("attempts", attempts, "at least one attempt"))

    let clients = frontDoors |> Array.map (fun address -> new InferenceClient(address))
    // Per front door: whether it holds the keys (registered under the same content id everywhere).
    let registered = Array.create clients.Length false
    let keyId = KeyStore<obj>.IdOf evaluationKeys
    let mutable current = 0
    let mutable failovers = 0

    let rec attempt (tried: int) (ciphertexts: byte[]) (ct: CancellationToken) : Task<byte[]> =
        task {
            let door = Volatile.Read &current
            let client = clients[door]
            let! outcome =
                task {
                    try
                        if not (Volatile.Read &registered[door]) then
                            let! _ = client.RegisterKeysAsync(evaluationKeys, ct)
                            Volatile.Write(&registered[door], true)
                        let! result = client.PredictAsync(keyId, ciphertexts, ct)
                        return Ok result
                    with
                    | :? UnknownKeyException as e ->
                        Volatile.Write(&registered[door], false)
                        return Error(e :> exn, TimeSpan.Zero)
                    | :? ServerBusyException as e ->
                        return Error(e :> exn, (if e.RetryAfter.HasValue then e.RetryAfter.Value else TimeSpan.FromSeconds 1.0))
                    | :? InferenceServerUnavailableException as e ->
                        // This front door is gone: the next one takes over.
                        Interlocked.CompareExchange(&current, (door + 1) % clients.Length, door) |> ignore
                        Interlocked.Increment &failovers |> ignore
                        Volatile.Write(&registered[door], false)
                        return Error(e :> exn, TimeSpan.FromMilliseconds 200.0)
                    | :? InferenceServerException as e when e.StatusCode >= 500 ->
                        return Error(e :> exn, TimeSpan.FromSeconds 1.0)
                }
            match outcome with
            | Ok result -> return result
            | Error(_, pause) when tried < attempts ->
                do! Task.Delay(pause, ct)
                return! attempt (tried + 1) ciphertexts ct
            | Error(e, _) -> return raise e
        }

    /// A client trying each prediction up to 20 times.
    new(frontDoors: Uri[], evaluationKeys: byte[]) = new ClusterInferenceClient(frontDoors, evaluationKeys, 20)

    /// The front door requests go to now.
    member _.FrontDoor = frontDoors[Volatile.Read &current]

    /// How many times a front door that did not answer was left for the next one.
    member _.Failovers = Volatile.Read &failovers

    /// Runs the encrypted model on serialized ciphertexts; returns the serialized encrypted result. Raises
    /// RejectedFheDataException and PayloadTooLargeException at once (the request itself is wrong), and the last
    /// failure when every attempt failed.
    member _.PredictAsync(ciphertexts: byte[], [<System.Runtime.InteropServices.Optional>] ct: CancellationToken) =
        attempt 1 ciphertexts ct

    interface IDisposable with
        member _.Dispose() =
            for client in clients do
                (client :> IDisposable).Dispose()
