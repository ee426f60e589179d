namespace FheNet.Server

open System
open System.Collections.Concurrent
open System.IO
open System.Security.Claims
open System.Security.Cryptography
open System.Text.Encodings.Web
open System.Threading
open System.Threading.RateLimiting
open System.Threading.Tasks
open Microsoft.AspNetCore.Authentication
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.Http
open Microsoft.AspNetCore.Http.Features
open Microsoft.AspNetCore.RateLimiting
open Microsoft.AspNetCore.Server.Kestrel.Core
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Logging
open Microsoft.Extensions.Options
open FheNet.Deploy

/// A request body is larger than the endpoint accepts (answered with 413).
type private BodyTooLargeException(limit: int64) =
    inherit Exception($"the request body exceeds this endpoint's limit of %d{limit} bytes; send less data or raise the server's limit")

/// A request body does not have the exact size the model's parameter set gives (answered with 400 or 413).
type private WrongBodySizeException(what: string, expected: int64, declared: int64) =
    inherit Exception($"%s{what} of this model are exactly %d{expected} bytes; the request declares %d{declared}")

    member _.Expected = expected
    member _.Declared = declared

/// API keys through ASP.NET Core authentication: <c>Authorization: Bearer KEY</c>, compared by SHA-256 with the
/// hashes of the configured clients (the keys themselves are never stored). The client's name becomes the identity.
type ApiKeyAuthenticationOptions() =
    inherit AuthenticationSchemeOptions()

    /// The clients allowed in.
    member val Clients: ApiClient list = [] with get, set

/// The authentication handler of <see cref="T:FheNet.Server.ApiKeyAuthenticationOptions"/>.
type ApiKeyAuthenticationHandler(options: IOptionsMonitor<ApiKeyAuthenticationOptions>, logger: ILoggerFactory, encoder: UrlEncoder) =
    inherit AuthenticationHandler<ApiKeyAuthenticationOptions>(options, logger, encoder)

    /// The scheme's name.
    static member Scheme = "FheNetApiKey"

    override this.HandleAuthenticateAsync() =
        let header = string this.Request.Headers.Authorization
        let result =
            if not (header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) then
                AuthenticateResult.NoResult()
            else
                let hash = ApiKeys.hash (header.Substring(7).Trim())
                let matches (client: ApiClient) = CryptographicOperations.FixedTimeEquals(ReadOnlySpan client.KeySha256, ReadOnlySpan hash)
                match this.Options.Clients |> List.filter matches with
                | [ client ] ->
                    let identity = ClaimsIdentity([ Claim(ClaimTypes.Name, client.Name) ], ApiKeyAuthenticationHandler.Scheme)
                    AuthenticateResult.Success(AuthenticationTicket(ClaimsPrincipal identity, ApiKeyAuthenticationHandler.Scheme))
                | _ -> AuthenticateResult.Fail "unknown API key"
        Task.FromResult result

    override this.HandleChallengeAsync _ =
        this.Response.StatusCode <- 401
        this.Response.Headers.WWWAuthenticate <- "Bearer"
        this.Response.WriteAsJsonAsync(
            {| error = "unauthorized"
               detail = "send a valid API key as 'Authorization: Bearer KEY' (InferenceClient.ApiKey)" |},
            InferenceApi.JsonOptions
        )

/// What one server instance shares between requests: the key stores (one per client, over one shared memory budget),
/// the evaluation slots and the counters that <c>GET /health</c> reports.
[<Sealed>]
type private ServerState(options: ServerOptions) =
    let mutable inFlight = 0
    let mutable completed = 0L
    let mutable cancelled = 0L
    let mutable rejected = 0L
    let memory = SharedKeyMemory(options.KeyBudgetBytes)
    let stores = ConcurrentDictionary<string, KeyStore<obj>>()
    let clientBudget = min options.ClientKeyBudgetBytes options.KeyBudgetBytes

    /// The key store of a client (its name, or "" without authentication).
    member _.KeysOf(client: string) = stores.GetOrAdd(client, fun _ -> KeyStore<obj>(clientBudget, memory))
    member val Slots = new SemaphoreSlim(options.MaxConcurrentEvaluations, options.MaxConcurrentEvaluations)
    member _.Started() = Interlocked.Increment &inFlight |> ignore
    member _.Ended() = Interlocked.Decrement &inFlight |> ignore
    member _.Completed() = Interlocked.Increment &completed |> ignore
    member _.Cancelled() = Interlocked.Increment &cancelled |> ignore
    member _.Rejected() = Interlocked.Increment &rejected |> ignore

    member _.Health : ServerHealth =
        let stats = stores.Values |> Seq.map _.Stats |> Array.ofSeq
        { Status = "ok"
          Keys = stats |> Array.sumBy _.Keys
          KeyBytes = memory.UsedBytes
          KeyBudgetBytes = memory.BudgetBytes
          Evictions = stats |> Array.sumBy _.Evictions
          InFlight = Volatile.Read &inFlight
          MaxConcurrent = options.MaxConcurrentEvaluations
          Completed = Interlocked.Read &completed
          Cancelled = Interlocked.Read &cancelled
          Rejected = Interlocked.Read &rejected }

/// A read-only stream that hashes what passes through it (the id of streamed evaluation keys).
[<Sealed>]
type private HashingReadStream(inner: Stream) =
    inherit Stream()
    let hash = IncrementalHash.CreateHash HashAlgorithmName.SHA256
    let mutable read = 0L

    /// Bytes read so far.
    member _.BytesRead = read

    /// The lowercase hex SHA-256 of everything read.
    member _.Id() = Convert.ToHexStringLower(hash.GetHashAndReset())

    override _.CanRead = true
    override _.CanSeek = false
    override _.CanWrite = false
    override _.Length = raise (NotSupportedException())
    override _.Position with get () = read and set _ = raise (NotSupportedException())
    override _.Flush() = ()
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())
    override _.Write(_: byte[], _: int, _: int) = raise (NotSupportedException())

    override _.Read(buffer: byte[], offset: int, count: int) =
        let n = inner.Read(buffer, offset, count)
        hash.AppendData(buffer, offset, n)
        read <- read + int64 n
        n

    override _.Dispose(disposing: bool) =
        if disposing then hash.Dispose()
        base.Dispose disposing

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
                | :? WrongBodySizeException as e when e.Declared > e.Expected ->
                    do! writeError ctx 413 "request too large" e.Message
                | :? WrongBodySizeException as e -> do! writeError ctx 400 "invalid FheNet data" e.Message
                | :? KeyTooLargeException as e -> do! writeError ctx 413 "evaluation keys too large" e.Message
                | :? KeyMemoryFullException as e -> do! writeError ctx 507 "key memory full" e.Message
                | :? Microsoft.AspNetCore.Http.BadHttpRequestException as e -> do! writeError ctx e.StatusCode "bad request" e.Message
                | e ->
                    logger.LogError(e, "{Method} {Path} failed", ctx.Request.Method, ctx.Request.Path)
                    if not ctx.Response.HasStarted then
                        do! writeError ctx 500 "internal server error" "the server logged the failure"
            }
            :> Task)

    /// Sets this request's body limit, so that Kestrel itself refuses more bytes (413) on a chunked body too.
    let private limitBody (ctx: HttpContext) (limit: int64) =
        match ctx.Features.Get<IHttpMaxRequestBodySizeFeature>() with
        | null -> ()
        | feature when feature.IsReadOnly -> ()
        | feature -> feature.MaxRequestBodySize <- Nullable limit

    /// Reads the whole request body, refusing more than <c>limit</c> bytes: at once from Content-Length (with
    /// Expect: 100-continue nothing is uploaded), else while reading. The buffer grows with the bytes that arrive,
    /// never to a size a stranger merely declares.
    let private readBody (ctx: HttpContext) (limit: int64) : Task<byte[]> =
        task {
            limitBody ctx limit
            let declared = ctx.Request.ContentLength
            if declared.HasValue && declared.Value > limit then
                raise (BodyTooLargeException limit)
            let body = ctx.Request.Body
            let aborted = ctx.RequestAborted
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

    /// The body's declared size against the exact size the parameter set gives; Kestrel then refuses more.
    let private requireExactSize (ctx: HttpContext) (what: string) (expected: int64) =
        let declared = ctx.Request.ContentLength
        if declared.HasValue && declared.Value <> expected then
            raise (WrongBodySizeException(what, expected, declared.Value))
        limitBody ctx expected

    /// The name keys are stored under: the authenticated client's, or "" without authentication.
    let private clientOf (ctx: HttpContext) =
        match ctx.User.Identity with
        | null -> ""
        | identity when identity.IsAuthenticated -> string identity.Name
        | _ -> ""

    /// Runs CPU-heavy work in an evaluation slot on a dedicated thread (a multi-second computation must not hold a
    /// thread-pool thread that Kestrel needs for I/O; the slots bound how many such threads exist). Answers 503 when
    /// no slot frees within the queue timeout; the slot is released only when the work has returned, so the bound
    /// holds even for work that ignores cancellation.
    let private inSlot (state: ServerState) (options: ServerOptions) (ctx: HttpContext) (work: CancellationToken -> 'T) (answer: 'T -> Task) : Task =
        task {
            let aborted = ctx.RequestAborted
            let! entered = state.Slots.WaitAsync(options.QueueTimeout, aborted)
            if not entered then
                state.Rejected()
                let retryAfter = max 1 (int (ceil options.QueueTimeout.TotalSeconds))
                ctx.Response.Headers.RetryAfter <- string retryAfter
                do!
                    writeError ctx 503 "server busy"
                        $"all %d{options.MaxConcurrentEvaluations} evaluation slots stayed busy for %.0f{options.QueueTimeout.TotalMilliseconds} ms; retry after %d{retryAfter} s"
            else
                state.Started()
                let! result =
                    task {
                        try
                            try
                                let! result =
                                    Task.Factory.StartNew((fun () -> work aborted), aborted, TaskCreationOptions.LongRunning, TaskScheduler.Default)
                                return result
                            with :? OperationCanceledException when aborted.IsCancellationRequested ->
                                state.Cancelled()
                                return raise (OperationCanceledException aborted)
                        finally
                            state.Ended()
                            state.Slots.Release() |> ignore
                    }
                do! answer result
        }

    let private answerKeyId (ctx: HttpContext) (id: string) : Task =
        ctx.Response.WriteAsJsonAsync({| keyId = id |}, InferenceApi.JsonOptions)

    let private registerKeys (state: ServerState) (options: ServerOptions) (backend: IInferenceBackend) (ctx: HttpContext) =
        task {
            let keys = state.KeysOf(clientOf ctx)
            match backend with
            | :? IBoundedInferenceBackend as bounded ->
                requireExactSize ctx "evaluation keys" bounded.EvaluationKeyBytes
                // Read synchronously by the backend on the slot's own thread, as the bytes arrive.
                match ctx.Features.Get<IHttpBodyControlFeature>() with
                | null -> ()
                | control -> control.AllowSynchronousIO <- true
                do!
                    inSlot state options ctx
                        (fun cancellation ->
                            use hashing = new HashingReadStream(ctx.Request.Body)
                            let struct (key, size) = bounded.LoadEvaluationKeys(hashing, cancellation)
                            if hashing.ReadByte() <> -1 || hashing.BytesRead <> bounded.EvaluationKeyBytes then
                                raise (InvalidFheDataException(FormatError.Malformed "bytes after the evaluation keys"))
                            let id = hashing.Id()
                            keys.Add(id, key, size)
                            id)
                        (answerKeyId ctx)
            | _ ->
                let! body = readBody ctx options.MaxKeyRequestBytes
                do!
                    inSlot state options ctx
                        (fun cancellation ->
                            keys.Register(
                                body,
                                Func<_, _>(fun bytes ->
                                    cancellation.ThrowIfCancellationRequested()
                                    backend.LoadEvaluationKeys bytes)
                            ))
                        (answerKeyId ctx)
        }
        :> Task

    let private keyIdOf (request: HttpRequest) =
        let header = string request.Headers[InferenceApi.KeyIdHeader]
        if String.IsNullOrWhiteSpace header then string request.Query[InferenceApi.KeyIdQuery] else header

    let private predict (state: ServerState) (options: ServerOptions) (backend: IInferenceBackend) (ctx: HttpContext) =
        task {
            let id = keyIdOf ctx.Request
            let mutable key = Unchecked.defaultof<obj>
            if String.IsNullOrWhiteSpace id then
                do!
                    writeError ctx 400 "missing key id"
                        $"send the id returned by POST /keys in the %s{InferenceApi.KeyIdHeader} header or the %s{InferenceApi.KeyIdQuery} query parameter"
            elif not ((state.KeysOf(clientOf ctx)).TryGet(id, &key)) then
                do!
                    writeError ctx 404 "unknown key id"
                        "this server holds no evaluation keys of yours with this id (never registered, evicted to stay within your memory budget, or the server restarted); POST /keys again and retry with the returned id"
            else
                let limit =
                    match backend with
                    | :? IBoundedInferenceBackend as bounded ->
                        // A batch is told by its exact declared size: rows × the row size plus one frame.
                        let declared = ctx.Request.ContentLength
                        let batch =
                            if declared.HasValue && declared.Value <> bounded.CiphertextBytes then
                                Seq.init bounded.MaxBatchRows (fun i -> bounded.CiphertextBatchBytes(i + 1))
                                |> Seq.tryFind (fun size -> size = declared.Value)
                            else
                                None
                        match batch with
                        | Some size ->
                            limitBody ctx size
                            size
                        | None ->
                            requireExactSize ctx "input rows" bounded.CiphertextBytes
                            bounded.CiphertextBytes
                    | _ -> options.MaxPredictRequestBytes
                let! body = readBody ctx limit
                do!
                    inSlot state options ctx
                        (fun cancellation ->
                            let result = backend.Evaluate(key, body, cancellation)
                            state.Completed()
                            result)
                        (fun result ->
                            ctx.Response.ContentType <- octetStream
                            ctx.Response.ContentLength <- Nullable(int64 result.Length)
                            ctx.Response.Body.WriteAsync(result, ctx.RequestAborted).AsTask())
        }
        :> Task

    /// The limits Kestrel enforces before any endpoint runs: connections, header time, minimum upload rate, and
    /// the largest body (per endpoint limits are lower).
    let private configureKestrel (options: ServerOptions) (kestrel: KestrelServerOptions) =
        kestrel.AddServerHeader <- false
        kestrel.Limits.MaxConcurrentConnections <- Nullable options.MaxConnections
        kestrel.Limits.MaxConcurrentUpgradedConnections <- Nullable 0L
        kestrel.Limits.RequestHeadersTimeout <- options.HeadersTimeout
        kestrel.Limits.MinRequestBodyDataRate <- MinDataRate(options.MinUploadBytesPerSecond, options.SlowUploadGrace)
        kestrel.Limits.MaxRequestBodySize <- Nullable(max options.MaxKeyRequestBytes options.MaxPredictRequestBytes)
        match options.HttpsCertificate with
        | null -> ()
        | certificate -> kestrel.ConfigureHttpsDefaults(fun https -> https.ServerCertificate <- certificate)

    /// A fixed window of RequestsPerMinute per client: its API key's name, or its address without authentication.
    let private rateLimiter (options: ServerOptions) =
        PartitionedRateLimiter.Create<HttpContext, string>(fun ctx ->
            let partition =
                match clientOf ctx with
                | "" -> "address:" + string ctx.Connection.RemoteIpAddress
                | client -> "client:" + client
            if options.RequestsPerMinute = 0 then
                RateLimitPartition.GetNoLimiter partition
            else
                RateLimitPartition.GetFixedWindowLimiter(
                    partition,
                    fun _ ->
                        FixedWindowRateLimiterOptions(PermitLimit = options.RequestsPerMinute, Window = TimeSpan.FromMinutes 1.0, QueueLimit = 0)
                ))

    /// What the server says at start-up about how exposed it is.
    let securityNotice (options: ServerOptions) =
        let tls = if isNull options.HttpsCertificate then "plain HTTP" else "HTTPS"
        if options.ApiClients.IsEmpty then
            $"FheNet.Server: NO AUTHENTICATION, %s{tls} on %s{options.Urls}: anyone who reaches these addresses can upload keys and run the model. This is the development default; to expose the server pass --api-keys FILE and --https-certificate FILE.pfx (see docs/DEPLOYMENT_SECURITY.md)."
        else
            $"FheNet.Server: %d{options.ApiClients.Length} API clients, %s{tls} on %s{options.Urls}, %d{options.RequestsPerMinute} requests/min per client."

    /// Maps the four endpoints over a backend onto an application that already has authentication, authorization and
    /// rate limiting registered (createApp does it): the one place the HTTP contract is defined.
    let mapEndpoints (app: WebApplication) (options: ServerOptions) (backend: IInferenceBackend) =
        let state = ServerState options
        let logger = app.Logger
        let clientArtifact = backend.ClientArtifact
        let secured (endpoint: IEndpointConventionBuilder) =
            if not options.ApiClients.IsEmpty then
                endpoint.RequireAuthorization() |> ignore
        app.MapPost("/" + InferenceApi.KeysPath, guarded logger (registerKeys state options backend)) |> secured
        app.MapPost("/" + InferenceApi.PredictPath, guarded logger (predict state options backend)) |> secured
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

    /// Builds (without starting) the inference server for a backend. Start it with <c>StartAsync</c> or <c>Run</c>;
    /// with port 0 in <c>options.Urls</c> Kestrel picks a free port (read it from IServerAddressesFeature).
    let createApp (options: ServerOptions) (backend: IInferenceBackend) : WebApplication =
        let options = ServerOptions.validate options
        let builder = WebApplication.CreateSlimBuilder(WebApplicationOptions(Args = [||]))
        builder.WebHost.UseKestrelHttpsConfiguration() |> ignore
        builder.WebHost.ConfigureKestrel(configureKestrel options) |> ignore
        builder.WebHost.UseUrls(options.Urls) |> ignore
        builder.Logging.SetMinimumLevel LogLevel.Warning |> ignore
        // API keys use no cookies or protected payloads: the data-protection key ring's warning does not apply.
        builder.Logging.AddFilter("Microsoft.AspNetCore.DataProtection", LogLevel.Error) |> ignore
        builder.Services
            .AddAuthentication(ApiKeyAuthenticationHandler.Scheme)
            .AddScheme<ApiKeyAuthenticationOptions, ApiKeyAuthenticationHandler>(
                ApiKeyAuthenticationHandler.Scheme,
                fun o -> o.Clients <- options.ApiClients
            )
        |> ignore
        builder.Services.AddAuthorization() |> ignore
        builder.Services.AddRateLimiter(fun limiter ->
            limiter.RejectionStatusCode <- 429
            limiter.GlobalLimiter <- rateLimiter options)
        |> ignore
        let app = builder.Build()
        app.UseAuthentication() |> ignore
        app.UseAuthorization() |> ignore
        app.UseRateLimiter() |> ignore
        mapEndpoints app options backend
        app.Logger.LogWarning(securityNotice options)
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
