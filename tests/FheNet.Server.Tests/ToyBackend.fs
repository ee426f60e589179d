/// A deterministic stand-in for the FHE model behind the server: Container-framed keys and ciphertexts of a toy model
/// y = a·x + b (mod 2^64), which can hold an evaluation until the test releases it or cancels it.
module FheNet.Server.Tests.ToyBackend

open System
open System.Threading
open System.Threading.Tasks
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting.Server
open Microsoft.AspNetCore.Hosting.Server.Features
open Microsoft.Extensions.DependencyInjection
open FheNet.Deploy
open FheNet.Server

/// The toy model's identity; every framed object is bound to it.
let context = Container.contextHash "FheNet.Server.Tests toy model: y = a*x + b (mod 2^64), v1"

/// Public evaluation keys of the toy model and the memory they claim once loaded.
type ToyKey =
    { Multiplier: uint64
      Addend: uint64
      MemoryBytes: int64 }

/// Serialized evaluation keys.
let keyBytes (key: ToyKey) =
    Container.toBytes ObjectKind.EvaluationKey context (fun w ->
        w.WriteUInt64 key.Multiplier
        w.WriteUInt64 key.Addend
        w.WriteInt64 key.MemoryBytes)

let private readKey (bytes: byte[]) =
    Container.ofBytes bytes ObjectKind.EvaluationKey context (fun r ->
        let key =
            { Multiplier = r.ReadUInt64()
              Addend = r.ReadUInt64()
              MemoryBytes = r.ReadInt64() }
        if key.MemoryBytes <= 0L then
            raise (InvalidFheDataException(FormatError.Malformed "the key's memory size must be positive"))
        key)

/// How the toy backend treats a request.
type Mode =
    /// Evaluates at once.
    | Run = 0uy
    /// Waits for the test's release (or the cancellation) before evaluating.
    | Hold = 1uy
    /// Fails with an unexpected (non-format) exception, as a bug in a backend would.
    | Crash = 2uy

/// Serialized "ciphertexts": the mode and the input words.
let ciphertextBytes (mode: Mode) (words: uint64[]) =
    Container.toBytes ObjectKind.Ciphertexts context (fun w ->
        w.WriteByte(byte mode)
        w.WriteUInt64Array words)

/// The text of the exception a Crash request raises inside the backend.
let crashMessage = "toy backend bug: internal state 0xDEADBEEF"

/// The words of a serialized result.
let resultWords (bytes: byte[]) =
    Container.ofBytes bytes ObjectKind.Ciphertexts context (fun r -> r.ReadUInt64Array())

/// The toy model in clear: what the result must decode to.
let expectedWords (key: ToyKey) (words: uint64[]) =
    words |> Array.map (fun x -> key.Multiplier * x + key.Addend)

/// The in-test backend. Counts what the server made it do; held evaluations wait on <c>Release</c>.
[<Sealed>]
type ToyBackend() =
    let entered = new SemaphoreSlim(0)
    let releases = new SemaphoreSlim(0)
    let mutable running = 0
    let mutable mostRunning = 0
    let mutable cancellationsSeen = 0

    /// Waits until a held evaluation has started; false on timeout.
    member _.WaitEntered(timeout: TimeSpan) = entered.Wait timeout
    /// Lets <c>count</c> held evaluations finish.
    member _.Release(count: int) = releases.Release count |> ignore
    /// Evaluations that observed their cancellation token fire.
    member _.CancellationsSeen = Volatile.Read &cancellationsSeen
    /// The most evaluations that ran at once.
    member _.MostRunning = Volatile.Read &mostRunning

    interface IInferenceBackend with
        member _.ClientArtifact =
            Container.toBytes ObjectKind.ClientArtifact context (fun w ->
                w.WriteString "toy client: identity quantizers")

        member _.LoadEvaluationKeys serialized =
            let key = readKey serialized
            struct (key :> obj, key.MemoryBytes)

        member _.Evaluate(keys, ciphertexts, cancellation) =
            let key = keys :?> ToyKey
            let mode, words =
                Container.ofBytes ciphertexts ObjectKind.Ciphertexts context (fun r ->
                    LanguagePrimitives.EnumOfValue<byte, Mode>(r.ReadByte()), r.ReadUInt64Array())
            let now = Interlocked.Increment &running
            let mutable seen = Volatile.Read &mostRunning
            while now > seen && Interlocked.CompareExchange(&mostRunning, now, seen) <> seen do
                seen <- Volatile.Read &mostRunning
            try
                if mode = Mode.Crash then
                    raise (InvalidOperationException crashMessage)
                if mode = Mode.Hold then
                    entered.Release() |> ignore
                    try
                        releases.Wait cancellation
                    with :? OperationCanceledException ->
                        Interlocked.Increment &cancellationsSeen |> ignore
                        reraise ()
                let result = expectedWords key words
                Container.toBytes ObjectKind.Ciphertexts context (fun w -> w.WriteUInt64Array result)
            finally
                Interlocked.Decrement &running |> ignore

/// Options for a test server on a free loopback port.
let testOptions =
    { ServerOptions.defaults "unused: the backend is given directly" with
        Urls = "http://127.0.0.1:0"
        MaxConcurrentEvaluations = 2
        KeyBudgetBytes = 1L <<< 20
        MaxKeyRequestBytes = 64L * 1024L
        MaxPredictRequestBytes = 256L * 1024L
        QueueTimeout = TimeSpan.FromSeconds 5.0 }

/// A started server and a client of it; disposing stops the server.
[<Sealed>]
type RunningServer(app: WebApplication, address: Uri) =
    let client = new InferenceClient(address)

    /// The bound address (the port Kestrel picked).
    member _.Address = address
    /// A client of this server.
    member _.Client = client

    interface IAsyncDisposable with
        member _.DisposeAsync() =
            task {
                (client :> IDisposable).Dispose()
                do! app.StopAsync()
                do! app.DisposeAsync()
            }
            |> ValueTask

/// Starts a server for a backend on a free loopback port.
let start (options: ServerOptions) (backend: IInferenceBackend) : Task<RunningServer> =
    task {
        let app = Server.createApp options backend
        do! app.StartAsync()
        let addresses = nonNull (app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>())
        return new RunningServer(app, Uri(Seq.exactlyOne addresses.Addresses))
    }
