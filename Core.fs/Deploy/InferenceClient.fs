namespace FheNet.Deploy

open System
open System.Net
open System.Net.Http
open System.Net.Http.Headers
open System.Runtime.InteropServices
open System.Text.Json
open System.Threading
open System.Threading.Tasks

/// The HTTP contract shared by the inference server and <see cref="T:FheNet.Deploy.InferenceClient"/>.
module InferenceApi =

    /// The request header that names the registered evaluation keys of a prediction.
    [<Literal>]
    let KeyIdHeader = "X-FheNet-Key-Id"

    /// The query parameter accepted instead of <see cref="KeyIdHeader"/>.
    [<Literal>]
    let KeyIdQuery = "keyId"

    /// Registers evaluation keys: POST, body = serialized evaluation keys, answer = <c>{"keyId": "..."}</c>.
    [<Literal>]
    let KeysPath = "keys"

    /// Runs the encrypted model: POST, body = serialized ciphertexts, answer = the serialized encrypted result.
    [<Literal>]
    let PredictPath = "predict"

    /// The client artifact: GET, answer = its bytes.
    [<Literal>]
    let ClientPath = "client"

    /// The server's state: GET, answer = <see cref="T:FheNet.Deploy.ServerHealth"/> as JSON.
    [<Literal>]
    let HealthPath = "health"

    /// JSON options of every body the server writes and the client reads (camelCase names).
    let JsonOptions = JsonSerializerOptions(JsonSerializerDefaults.Web)

/// The state reported by <c>GET /health</c>. Counts only: nothing about any key or ciphertext.
[<CLIMutable>]
type ServerHealth =
    { /// "ok" while the server serves requests.
      Status: string
      /// Evaluation keys held in memory.
      Keys: int
      /// Their total size in memory.
      KeyBytes: int64
      /// The key store's memory budget.
      KeyBudgetBytes: int64
      /// Keys evicted so far to respect the budget.
      Evictions: int64
      /// Evaluations running now.
      InFlight: int
      /// The bound on concurrent evaluations.
      MaxConcurrent: int
      /// Evaluations that returned a result.
      Completed: int64
      /// Evaluations stopped because their client disconnected.
      Cancelled: int64
      /// Predictions refused with 503 because every evaluation slot stayed busy.
      Rejected: int64 }

/// The inference server answered with an HTTP error. <c>Error</c> and <c>Detail</c> are the server's own words.
type InferenceServerException(request: string, statusCode: int, error: string, detail: string) =
    inherit
        Exception(
            $"The FheNet inference server refused %s{request} with HTTP %d{statusCode}: %s{error}"
            + (if String.IsNullOrEmpty detail then "." else $" (%s{detail}).")
        )

    /// The HTTP status code.
    member _.StatusCode = statusCode
    /// The server's short description of the error.
    member _.Error = error
    /// The server's explanation (for example the reason serialized data was refused).
    member _.Detail = detail

/// HTTP 400: the server refused the request as malformed, typically serialized keys or ciphertexts that fail
/// validation (truncated, altered, made for another model...); <c>Detail</c> says why.
type RejectedFheDataException(request: string, error: string, detail: string) =
    inherit InferenceServerException(request, 400, error, detail)

/// HTTP 404: the server does not hold these evaluation keys (never registered, evicted, or the server restarted).
/// Register them again with <c>RegisterKeysAsync</c> and retry with the returned id.
type UnknownKeyException(request: string, keyId: string, error: string, detail: string) =
    inherit InferenceServerException(request, 404, error, detail)

    /// The id the server did not know.
    member _.KeyId = keyId

/// HTTP 413: the request body, or the loaded evaluation keys, exceed the server's limits.
type PayloadTooLargeException(request: string, error: string, detail: string) =
    inherit InferenceServerException(request, 413, error, detail)

/// HTTP 503: every evaluation slot stayed busy; retry after <c>RetryAfter</c>.
type ServerBusyException(request: string, retryAfter: Nullable<TimeSpan>, error: string, detail: string) =
    inherit InferenceServerException(request, 503, error, detail)

    /// How long the server asks the client to wait before retrying, when it says.
    member _.RetryAfter = retryAfter

/// The inference server could not be reached, or did not answer in time, or answered something that is not the
/// FheNet inference API.
type InferenceServerUnavailableException(baseAddress: Uri, problem: string, inner: exn | null) =
    inherit
        Exception(
            $"The FheNet inference server at %O{baseAddress} %s{problem}; check that it runs and that the address is right.",
            inner
        )

    /// The server's base address.
    member _.BaseAddress = baseAddress

/// A client of the FheNet HTTP inference server. It only moves bytes: evaluation keys, ciphertexts and results are
/// produced and decrypted by the model client, and the secret key never leaves it. Thread-safe. Everything the server
/// answers is checked before use: a key id that is not 64 hex digits or an answer that is not the API's JSON raises
/// InferenceServerUnavailableException, and an owned HttpClient refuses answers over 256 MiB.
/// <param name="baseAddress">The server's absolute base address, e.g. <c>https://models.example.com/</c>. Plain
/// <c>http</c> is accepted only for a loopback host unless <c>allowPlainHttp</c> is true: evaluation keys, API keys
/// and ciphertexts would otherwise travel unauthenticated over the network.</param>
/// <param name="httpClient">An HttpClient to use and not dispose; when null, the client creates and owns one with a
/// 10-minute timeout, since an encrypted prediction may wait for a slot and then take seconds.</param>
/// <param name="allowPlainHttp">Accept an <c>http</c> address of a non-loopback host (a trusted private network).</param>
[<Sealed>]
type InferenceClient(baseAddress: Uri, httpClient: HttpClient | null, allowPlainHttp: bool) =
    do
        if isNull (box baseAddress) || not baseAddress.IsAbsoluteUri then
            raise (
                ArgumentException(
                    "the server's base address must be an absolute URI, e.g. http://127.0.0.1:5000/",
                    "baseAddress"
                )
            )
        if baseAddress.Scheme <> Uri.UriSchemeHttps && baseAddress.Scheme <> Uri.UriSchemeHttp then
            raise (ArgumentException($"the server's address must be http or https, not %s{baseAddress.Scheme}", "baseAddress"))
        if baseAddress.Scheme = Uri.UriSchemeHttp && not baseAddress.IsLoopback && not allowPlainHttp then
            raise (
                ArgumentException(
                    $"refusing plain HTTP to %s{baseAddress.Host}, which is not a loopback address: use https:// (the server's --https-certificate), or pass allowPlainHttp = true for a trusted private network",
                    "baseAddress"
                )
            )

    // Relative paths resolve under the base path only when it ends with '/'.
    let root =
        if baseAddress.AbsolutePath.EndsWith '/' then baseAddress
        else Uri(baseAddress.AbsoluteUri + "/")

    let owned = isNull httpClient
    let mutable apiKey: string | null = null
    let http =
        match httpClient with
        | null -> new HttpClient(Timeout = TimeSpan.FromMinutes 10.0, MaxResponseContentBufferSize = (256L <<< 20))
        | given -> given

    /// A string field of a JSON object; None when the text is not such an object.
    let stringField (document: JsonDocument) (name: string) =
        if document.RootElement.ValueKind <> JsonValueKind.Object then
            None
        else
            match document.RootElement.TryGetProperty name with
            | true, value when value.ValueKind = JsonValueKind.String -> value.GetString() |> Option.ofObj
            | _ -> None

    /// A key id is the lowercase hex SHA-256 of the keys: anything else (which could smuggle header text) is refused.
    let keyIdOf (text: string) =
        use document = JsonDocument.Parse text
        stringField document "keyId"
        |> Option.filter (fun id -> id.Length = 64 && id |> Seq.forall Uri.IsHexDigit)

    let healthOf (text: string) =
        match JsonSerializer.Deserialize<ServerHealth>(text, InferenceApi.JsonOptions) |> Option.ofObj with
        | Some health when not (isNull (box health.Status)) -> Some health
        | _ -> None

    let errorBody (text: string) =
        try
            use document = JsonDocument.Parse text
            stringField document "error", stringField document "detail"
        with :? JsonException -> None, None

    let failure (request: string) (keyId: string | null) (response: HttpResponseMessage) : Task<exn> =
        task {
            let! text = response.Content.ReadAsStringAsync()
            let status = int response.StatusCode
            let error, detail =
                match errorBody text with
                | Some error, detail -> error, defaultArg detail ""
                | None, _ -> (response.ReasonPhrase |> Option.ofObj |> Option.defaultValue "error"), ""
            return
                match response.StatusCode with
                | HttpStatusCode.BadRequest -> RejectedFheDataException(request, error, detail) :> exn
                | HttpStatusCode.NotFound when not (isNull keyId) ->
                    UnknownKeyException(request, nonNull keyId, error, detail)
                | HttpStatusCode.RequestEntityTooLarge -> PayloadTooLargeException(request, error, detail)
                | HttpStatusCode.ServiceUnavailable ->
                    let retryAfter =
                        match response.Headers.RetryAfter with
                        | null -> Nullable()
                        | header when header.Delta.HasValue -> header.Delta
                        | header when header.Date.HasValue ->
                            Nullable(max TimeSpan.Zero (header.Date.Value - DateTimeOffset.UtcNow))
                        | _ -> Nullable()
                    ServerBusyException(request, retryAfter, error, detail)
                | _ -> InferenceServerException(request, status, error, detail)
        }

    /// Sends one request and reads a successful answer with <c>read</c>; maps transport failures and HTTP errors to
    /// typed exceptions. The caller's cancellation passes through as OperationCanceledException.
    let send
        (name: string)
        (request: HttpRequestMessage)
        (keyId: string | null)
        (read: HttpContent -> Task<'T>)
        (ct: CancellationToken)
        : Task<'T> =
        task {
            match apiKey with
            | null -> ()
            | key -> request.Headers.Authorization <- AuthenticationHeaderValue("Bearer", key)
            let! response =
                task {
                    try
                        return! http.SendAsync(request, HttpCompletionOption.ResponseContentRead, ct)
                    with
                    | :? HttpRequestException as e ->
                        return raise (InferenceServerUnavailableException(baseAddress, $"failed to answer %s{name} (%s{e.Message})", e))
                    | :? TaskCanceledException as e when not ct.IsCancellationRequested ->
                        return raise (InferenceServerUnavailableException(baseAddress, $"did not answer %s{name} within %O{http.Timeout}", e))
                }
            use response = response
            if response.IsSuccessStatusCode then
                return! read response.Content
            else
                let! error = failure name keyId response
                return raise error
        }

    let post (path: string) (body: byte[]) (keyId: string | null) =
        let request = new HttpRequestMessage(HttpMethod.Post, Uri(root, path))
        let content = new ByteArrayContent(body)
        content.Headers.ContentType <- MediaTypeHeaderValue "application/octet-stream"
        request.Content <- content
        // The server can refuse an oversized body or an unknown key before the client uploads it.
        request.Headers.ExpectContinue <- true
        match keyId with
        | null -> ()
        | id -> request.Headers.Add(InferenceApi.KeyIdHeader, id)
        request

    /// Reads a JSON answer; anything else means the address is not an FheNet inference server.
    let readJson (content: HttpContent) (name: string) (ct: CancellationToken) (parse: string -> 'T option) : Task<'T> =
        task {
            let! text = content.ReadAsStringAsync ct
            let parsed =
                try
                    parse text
                with :? JsonException -> None
            return
                match parsed with
                | Some value -> value
                | None ->
                    let problem = $"answered %s{name} with something that is not the FheNet API's JSON"
                    raise (InferenceServerUnavailableException(baseAddress, problem, null))
        }

    /// A client with a given HttpClient (or its own, when null); plain HTTP only to a loopback host.
    new(baseAddress: Uri, httpClient: HttpClient | null) = new InferenceClient(baseAddress, httpClient, false)

    /// A client with its own HttpClient; plain HTTP only to a loopback host.
    new(baseAddress: Uri) = new InferenceClient(baseAddress, null, false)

    /// The server's base address.
    member _.BaseAddress = root

    /// The API key sent with every request (as <c>Authorization: Bearer KEY</c>) to a server that requires one;
    /// null (the default) sends none.
    member _.ApiKey
        with get () = apiKey
        and set (value: string | null) =
            match value with
            | null -> apiKey <- null
            | key when key.Length = 0 || key |> Seq.exists (fun c -> c <= ' ' || c > '~') ->
                raise (ArgumentException("an API key is printable ASCII without spaces", "value"))
            | key -> apiKey <- key

    /// Uploads serialized evaluation keys and returns their id (the SHA-256 of the bytes, so registering the same keys
    /// again is cheap and returns the same id). Raises RejectedFheDataException or PayloadTooLargeException.
    member _.RegisterKeysAsync(evaluationKeys: byte[], [<Optional>] ct: CancellationToken) : Task<string> =
        task {
            use request = post InferenceApi.KeysPath evaluationKeys null
            return! send "POST /keys" request null (fun content -> readJson content "POST /keys" ct keyIdOf) ct
        }

    /// Runs the encrypted model on serialized ciphertexts (one row from QuantizeEncryptSerialize, or a batch from
    /// QuantizeEncryptSerializeBatch, whose rows the server evaluates in parallel) with the keys registered under
    /// <c>keyId</c>; returns the serialized encrypted result (one row's, or the batch's). Raises UnknownKeyException when the server no longer holds the keys (register
    /// them again), ServerBusyException (retry after its RetryAfter), RejectedFheDataException and
    /// PayloadTooLargeException.
    member _.PredictAsync(keyId: string, ciphertexts: byte[], [<Optional>] ct: CancellationToken) : Task<byte[]> =
        if String.IsNullOrWhiteSpace keyId then
            raise (ArgumentException("pass the id returned by RegisterKeysAsync", "keyId"))
        task {
            use request = post InferenceApi.PredictPath ciphertexts keyId
            return! send "POST /predict" request keyId (fun content -> content.ReadAsByteArrayAsync ct) ct
        }

    /// Downloads the client artifact (quantizers, output post-processing, parameters; nothing secret).
    member _.GetClientArtifactAsync([<Optional>] ct: CancellationToken) : Task<byte[]> =
        task {
            use request = new HttpRequestMessage(HttpMethod.Get, Uri(root, InferenceApi.ClientPath))
            return! send "GET /client" request null (fun content -> content.ReadAsByteArrayAsync ct) ct
        }

    /// The server's state: keys held, memory used, evaluations running and counted.
    member _.HealthAsync([<Optional>] ct: CancellationToken) : Task<ServerHealth> =
        task {
            use request = new HttpRequestMessage(HttpMethod.Get, Uri(root, InferenceApi.HealthPath))
            return! send "GET /health" request null (fun content -> readJson content "GET /health" ct healthOf) ct
        }

    interface IDisposable with
        /// Disposes the HttpClient when this client created it.
        member _.Dispose() =
            if owned then
                http.Dispose()
