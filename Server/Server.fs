namespace FheNet.Server

open System
open System.IO
open System.Threading
open System.Threading.Tasks
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.Http
open Microsoft.AspNetCore.Http.Features
open Microsoft.Extensions.Logging
open FheNet.Deploy

/// A request body is larger than the endpoint accepts (answered with 413).
type private BodyTooLargeException(limit: int64) =
    inherit Exception($"the request body exceeds this endpoint's limit of %d{limit} bytes; send less data or raise the server's limit")

/// What one server instance shares between requests: the key store, the evaluation slots and the counters that
/// <c>GET /health</c> reports.
[<Sealed>]
type private ServerState(options: ServerOptions) =
    let mutable inFlight = 0
    let mutable completed = 0L
    let mutable cancelled = 0L
    let mutable rejected = 0L

    member val Keys = KeyStore<obj>(options.KeyBudgetBytes)
    member val Slots = new SemaphoreSlim(options.MaxConcurrentEvaluations, options.MaxConcurrentEvaluations)
    member _.Started() = Interlocked.Increment &inFlight |> ignore
    member _.Ended() = Interlocked.Decrement &inFlight |> ignore
    member _.Completed() = Interlocked.Increment &completed |> ignore
    member _.Cancelled() = Interlocked.Increment &cancelled |> ignore
    member _.Rejected() = Interlocked.Increment &rejected |> ignore

    member this.Health : ServerHealth =
        let keys = this.Keys.Stats
        { Status = "ok"
          Keys = keys.Keys
          KeyBytes = keys.Bytes
          KeyBudgetBytes = keys.BudgetBytes
          Evictions = keys.Evictions
          InFlight = Volatile.Read &inFlight
          MaxConcurrent = options.MaxConcurrentEvaluations
          Completed = Interlocked.Read &completed
          Cancelled = Interlocked.Read &cancelled
          Rejected = Interlocked.Read &rejected }

/// The HTTP inference server: <c>POST /keys</c>, <c>POST /predict</c>, <c>GET /client</c>, <c>GET /health</c>.
module Server =

    let private octetStream = "application/octet-stream"

    let private writeError (ctx: HttpContext) (status: int) (error: string) (detail: string) : Task =
        ctx.Response.StatusCode <- status
        ctx.Response.WriteAsJsonAsync({| error = error; detail = detail |}, InferenceApi.JsonOptions)

    /// Runs a handler and answers its typed failures as JSON errors. A request whose client disconnected gets no
    /// answer; anything unexpected is logged and answered 500 without detail.
    let private guarded (logger: ILogger) (handler: HttpContext -> Task) =
        RequestDelegate(fun ctx ->
            task {
                try
                    do! handler ctx
                with
                // Cancelled or reset by the disconnect: nobody is left to answer.
                | _ when ctx.RequestAborted.IsCancellationRequested -> ()
                | :? InvalidFheDataException as e -> do! writeError ctx 400 "invalid FheNet data" e.Message
                | :? BodyTooLargeException as e -> do! writeError ctx 413 "request too large" e.Message
                | :? KeyTooLargeException as e -> do! writeError ctx 413 "evaluation keys too large" e.Message
                | :? BadHttpRequestException as e -> do! writeError ctx e.StatusCode "bad request" e.Message
                | e ->
                    logger.LogError(e, "{Method} {Path} failed", ctx.Request.Method, ctx.Request.Path)
                    if not ctx.Response.HasStarted then
                        do! writeError ctx 500 "internal server error" "the server logged the failure"
            }
            :> Task)

    /// Reads the whole request body, refusing more than <c>limit</c> bytes: at once from Content-Length (with
    /// Expect: 100-continue nothing is uploaded), else while reading a chunked body.
    let private readBody (ctx: HttpContext) (limit: int64) : Task<byte[]> =
        task {
            match ctx.Features.Get<IHttpMaxRequestBodySizeFeature>() with
            | null -> ()
            | feature when feature.IsReadOnly -> ()
            | feature -> feature.MaxRequestBodySize <- Nullable limit
            let body = ctx.Request.Body
            let aborted = ctx.RequestAborted
            match ctx.Request.ContentLength with
            | declared when declared.HasValue ->
                if declared.Value > limit then
                    raise (BodyTooLargeException limit)
                let bytes = Array.zeroCreate<byte> (int declared.Value)
                do! body.ReadExactlyAsync(bytes, aborted)
                return bytes
            | _ ->
                use buffer = new MemoryStream()
                let chunk = Array.zeroCreate<byte> 81920
                let mutable reading = true
                while reading do
                    let! n = body.ReadAsync(chunk, aborted)
                    if n = 0 then
                        reading <- false
                    else if buffer.Length + int64 n > limit then
                        raise (BodyTooLargeException limit)
                    else
                        buffer.Write(chunk, 0, n)
                return buffer.ToArray()
        }

    let private registerKeys (state: ServerState) (options: ServerOptions) (backend: IInferenceBackend) ctx =
        task {
            let! body = readBody ctx options.MaxKeyRequestBytes
            let id = state.Keys.Register(body, Func<_, _> backend.LoadEvaluationKeys)
            do! ctx.Response.WriteAsJsonAsync({| keyId = id |}, InferenceApi.JsonOptions)
        }
        :> Task

    let private keyIdOf (request: HttpRequest) =
        let header = string request.Headers[InferenceApi.KeyIdHeader]
        if String.IsNullOrWhiteSpace header then string request.Query[InferenceApi.KeyIdQuery] else header

    /// Runs one evaluation in a slot, off the request threads. The slot is released only when Evaluate has returned,
    /// so the bound holds even for an evaluation that ignores cancellation.
    let private evaluate (state: ServerState) (backend: IInferenceBackend) key body (aborted: CancellationToken) =
        task {
            state.Started()
            try
                try
                    // A dedicated thread: a multi-second CPU-bound evaluation must not hold a thread-pool thread that
                    // Kestrel needs for I/O; the slots bound how many such threads exist.
                    let! result =
                        Task.Factory.StartNew(
                            (fun () -> backend.Evaluate(key, body, aborted)),
                            aborted,
                            TaskCreationOptions.LongRunning,
                            TaskScheduler.Default
                        )
                    state.Completed()
                    return result
                with :? OperationCanceledException when aborted.IsCancellationRequested ->
                    state.Cancelled()
                    return raise (OperationCanceledException aborted)
            finally
                state.Ended()
                state.Slots.Release() |> ignore
        }

    let private predict (state: ServerState) (options: ServerOptions) (backend: IInferenceBackend) (ctx: HttpContext) =
        task {
            let id = keyIdOf ctx.Request
            let mutable key = Unchecked.defaultof<obj>
            if String.IsNullOrWhiteSpace id then
                do!
                    writeError ctx 400 "missing key id"
                        $"send the id returned by POST /keys in the %s{InferenceApi.KeyIdHeader} header or the %s{InferenceApi.KeyIdQuery} query parameter"
            elif not (state.Keys.TryGet(id, &key)) then
                do!
                    writeError ctx 404 "unknown key id"
                        $"this server holds no evaluation keys with id %s{id} (never registered, evicted to stay within the memory budget, or the server restarted); POST /keys again and retry with the returned id"
            else
                let! body = readBody ctx options.MaxPredictRequestBytes
                let! entered = state.Slots.WaitAsync(options.QueueTimeout, ctx.RequestAborted)
                if not entered then
                    state.Rejected()
                    let retryAfter = max 1 (int (ceil options.QueueTimeout.TotalSeconds))
                    ctx.Response.Headers.RetryAfter <- string retryAfter
                    do!
                        writeError ctx 503 "server busy"
                            $"all %d{options.MaxConcurrentEvaluations} evaluation slots stayed busy for %.0f{options.QueueTimeout.TotalMilliseconds} ms; retry after %d{retryAfter} s"
                else
                    let! result = evaluate state backend key body ctx.RequestAborted
                    ctx.Response.ContentType <- octetStream
                    ctx.Response.ContentLength <- Nullable(int64 result.Length)
                    do! ctx.Response.Body.WriteAsync(result, ctx.RequestAborted)
        }
        :> Task

    /// Builds (without starting) the inference server for a backend. Start it with <c>StartAsync</c> or <c>Run</c>;
    /// with port 0 in <c>options.Urls</c> Kestrel picks a free port (read it from IServerAddressesFeature).
    let createApp (options: ServerOptions) (backend: IInferenceBackend) : WebApplication =
        let options = ServerOptions.validate options
        let builder = WebApplication.CreateSlimBuilder(WebApplicationOptions(Args = [||]))
        builder.WebHost.UseUrls(options.Urls) |> ignore
        builder.Logging.SetMinimumLevel LogLevel.Warning |> ignore
        let app = builder.Build()
        let state = ServerState options
        let logger = app.Logger
        let clientArtifact = backend.ClientArtifact
        app.MapPost("/" + InferenceApi.KeysPath, guarded logger (registerKeys state options backend)) |> ignore
        app.MapPost("/" + InferenceApi.PredictPath, guarded logger (predict state options backend)) |> ignore
        app.MapGet(
            "/" + InferenceApi.ClientPath,
            guarded logger (fun ctx ->
                ctx.Response.ContentType <- octetStream
                ctx.Response.ContentLength <- Nullable(int64 clientArtifact.Length)
                ctx.Response.Body.WriteAsync(clientArtifact, ctx.RequestAborted).AsTask())
        )
        |> ignore
        app.MapGet(
            "/" + InferenceApi.HealthPath,
            guarded logger (fun ctx -> ctx.Response.WriteAsJsonAsync(state.Health, InferenceApi.JsonOptions))
        )
        |> ignore
        app

/// No server artifact where the server was told to find the model.
type ServerArtifactNotFoundException(directory: string, path: string) =
    inherit FileNotFoundException($"no FheNet server artifact in %s{directory}: save one with FheModelDev(...).Save(%s{directory})", path)

    /// The model directory that was searched.
    member _.Directory = directory

/// The files of a model directory written by FheModelDev(...).Save(DIR).
module ModelDirectory =

    /// The server artifact's file name within a model directory.
    [<Literal>]
    let ServerArtifactFile = ModelFiles.ServerArtifact

    /// The path of the directory's server artifact; raises
    /// <see cref="T:FheNet.Server.ServerArtifactNotFoundException"/> when the directory or the file does not exist.
    let serverArtifact (directory: string) =
        let path = Path.Combine(directory, ServerArtifactFile)
        if not (File.Exists path) then
            raise (ServerArtifactNotFoundException(directory, path))
        path
