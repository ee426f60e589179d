module FheNet.Server.Tests.ServerTests

open System
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Http
open System.Threading
open System.Threading.Tasks
open Expecto
open FheNet.Deploy
open FheNet.Server
open FheNet.Server.Tests.ToyBackend

let private keyA = { Multiplier = 3UL; Addend = 7UL; MemoryBytes = 1000L }
let private keyB = { Multiplier = 0x9E3779B97F4A7C15UL; Addend = 1UL; MemoryBytes = 1000L }
let private keyC = { Multiplier = 5UL; Addend = UInt64.MaxValue; MemoryBytes = 1000L }

/// Input words drawn from a seeded PRNG (test data, not a secret).
let private words (seed: int) (count: int) =
    let rng = Random seed
    Array.init count (fun _ -> rng.NextInt64() |> uint64)

let private seconds (s: float) = TimeSpan.FromSeconds s

/// The exception of type 'E that the call raised; fails the test on success or on another exception.
let private failsWith<'E when 'E :> exn> (work: unit -> Task) : Task<'E> =
    task {
        let! outcome =
            task {
                try
                    do! work ()
                    return None
                with e ->
                    return Some e
            }
        return
            match outcome with
            | Some(:? 'E as e) -> e
            | Some e -> failtestf "expected %s, got %O" typeof<'E>.Name e
            | None -> failtestf "expected %s, but the call succeeded" typeof<'E>.Name
    }

/// The exception of type 'E that the call raised; fails the test otherwise.
let private raises<'E when 'E :> exn> (work: unit -> unit) : 'E =
    let outcome =
        try
            work ()
            None
        with e ->
            Some e
    match outcome with
    | Some(:? 'E as e) -> e
    | Some e -> failtestf "expected %s, got %O" typeof<'E>.Name e
    | None -> failtestf "expected %s, but the call succeeded" typeof<'E>.Name

/// The message the backend itself gives for bad bytes, to compare with what the server sends back.
let private inProcessError (load: unit -> unit) =
    try
        load ()
        failtest "the mutated bytes were accepted in process"
    with :? InvalidFheDataException as e ->
        e.Message

/// Polls a condition for up to five seconds.
let private eventually (condition: unit -> Task<bool>) =
    task {
        let watch = Stopwatch.StartNew()
        let mutable holds = false
        while not holds && watch.Elapsed < seconds 5.0 do
            let! now = condition ()
            holds <- now
            if not holds then
                do! Task.Delay 20
        return holds
    }

/// Sends a request head (no body) over a raw loopback socket and returns the response's status line.
let private statusLineFor (address: Uri) (head: string) =
    task {
        use tcp = new Sockets.TcpClient()
        do! tcp.ConnectAsync(address.Host, address.Port)
        use stream = tcp.GetStream()
        do! stream.WriteAsync(Text.Encoding.ASCII.GetBytes(head.ReplaceLineEndings "\r\n"))
        use reader = new StreamReader(stream)
        use timeout = new CancellationTokenSource(seconds 5.0)
        return! reader.ReadLineAsync(timeout.Token)
    }

/// A test that runs a task (Expecto's testTask binds `use` to IAsyncDisposable only).
let private serverTest name (work: unit -> Task<unit>) =
    testCaseAsync name (async { do! work () |> Async.AwaitTask })

let private percentile (sorted: float[]) (p: float) =
    sorted[min (sorted.Length - 1) (int (ceil (p * float sorted.Length)) - 1)]

[<Tests>]
let options =
    testList
        "Server.Options"
        [ test "every option is read from the command line" {
              let o =
                  ServerOptions.parse
                      [| "--model"; "m"; "--urls"; "http://127.0.0.1:0"; "--max-concurrent"; "3"
                         "--key-budget-mb"; "10"
                         "--max-key-mb"; "5"; "--max-request-mb"; "2"; "--queue-timeout-ms"; "250" |]
              Expect.equal
                  o
                  { ServerOptions.defaults "m" with
                      Urls = "http://127.0.0.1:0"
                      MaxConcurrentEvaluations = 3
                      KeyBudgetBytes = 10L <<< 20
                      ClientKeyBudgetBytes = 10L <<< 20
                      MaxKeyRequestBytes = 5L <<< 20
                      MaxPredictRequestBytes = 2L <<< 20
                      QueueTimeout = TimeSpan.FromMilliseconds 250.0 }
                  "parsed options"
              Expect.equal (ServerOptions.parse [| "--model"; "m" |]) (ServerOptions.defaults "m") "defaults"
          }

          test "bad command lines are refused with the option named" {
              for argv, named in
                  [ [||], "--model"
                    [| "--model"; "m"; "--max-concurrent"; "0" |], "--max-concurrent"
                    [| "--model"; "m"; "--max-concurrent"; "-2" |], "--max-concurrent"
                    [| "--model"; "m"; "--max-key-mb"; "4096" |], "--max-key-mb"
                    [| "--model"; "m"; "--max-request-mb"; "lots" |], "--max-request-mb"
                    [| "--model"; "m"; "--queue-timeout-ms" |], "--queue-timeout-ms"
                    [| "--model"; "m"; "--port"; "1" |], "--port" ] do
                  let e = raises<ServerOptionsException> (fun () -> ServerOptions.parse argv |> ignore)
                  Expect.stringContains e.Message named "the message names the option"
                  Expect.stringContains e.Message "usage:" "the message shows the usage"
          }

          test "a directory without a server artifact is named with the fix" {
              let directory = Directory.CreateTempSubdirectory "fhenet-server-test"
              try
                  let e =
                      raises<ServerArtifactNotFoundException> (fun () ->
                          ModelDirectory.serverArtifact directory.FullName |> ignore)
                  Expect.equal
                      e.Message
                      $"no FheNet server artifact in %s{directory.FullName}: save one with FheModelDev(...).Save(%s{directory.FullName})"
                      "message"
                  File.WriteAllBytes(Path.Combine(directory.FullName, ModelDirectory.ServerArtifactFile), [| 1uy |])
                  Expect.equal
                      (ModelDirectory.serverArtifact directory.FullName)
                      (Path.Combine(directory.FullName, ModelDirectory.ServerArtifactFile))
                      "found"
              finally
                  directory.Delete true
          }

          test "main exits with status 2, before listening, on a bad command line or a directory without a model" {
              let directory = Directory.CreateTempSubdirectory "fhenet-server-test"
              try
                  let model = directory.FullName
                  Expect.equal (Program.main [| "--model"; model; "--urls"; "http://127.0.0.1:0" |]) 2 "no artifact"
                  Expect.equal (Program.main [| "--model"; model; "--max-concurrent"; "0" |]) 2 "bad option"
              finally
                  directory.Delete true
          } ]

[<Tests>]
let server =
    testSequenced
    <| testList
        "Server.Http"
        [ serverTest "predictions over HTTP equal the backend's in-process results" (fun () ->
              task {
                  let backend = ToyBackend()
                  let local = backend :> IInferenceBackend
                  use! running = start testOptions backend
                  let! id = running.Client.RegisterKeysAsync(keyBytes keyA)
                  Expect.equal id (KeyStore<obj>.IdOf(keyBytes keyA)) "the id is the SHA-256 of the key bytes"
                  let! again = running.Client.RegisterKeysAsync(keyBytes keyA)
                  Expect.equal again id "registering again gives the same id"
                  let struct (loaded, _) = local.LoadEvaluationKeys(keyBytes keyA)
                  for count in [ 0; 1; 17; 4096 ] do
                      let input = ciphertextBytes Mode.Run (words count count)
                      let! remote = running.Client.PredictAsync(id, input)
                      Expect.equal remote (local.Evaluate(loaded, input, CancellationToken.None)) $"%d{count} words"
                      Expect.equal (resultWords remote) (expectedWords keyA (words count count)) "the model's values"
                  let! artifact = running.Client.GetClientArtifactAsync()
                  Expect.equal artifact local.ClientArtifact "GET /client serves the client artifact"
              })

          serverTest "the key id may come as a query parameter; without one the request is refused" (fun () ->
              task {
                  use! running = start testOptions (ToyBackend())
                  let! id = running.Client.RegisterKeysAsync(keyBytes keyB)
                  use http = new HttpClient()
                  let input = words 5 8
                  use! byQuery = http.PostAsync(Uri(running.Address, $"/predict?keyId=%s{id}"), new ByteArrayContent(ciphertextBytes Mode.Run input))
                  Expect.equal byQuery.StatusCode HttpStatusCode.OK "served"
                  let! body = byQuery.Content.ReadAsByteArrayAsync()
                  Expect.equal (resultWords body) (expectedWords keyB input) "result"
                  let noKeyBody = new ByteArrayContent(ciphertextBytes Mode.Run input)
                  use! noKey = http.PostAsync(Uri(running.Address, "/predict"), noKeyBody)
                  Expect.equal noKey.StatusCode HttpStatusCode.BadRequest "no key id"
                  let! error = noKey.Content.ReadAsStringAsync()
                  Expect.stringContains error "\"error\":\"missing key id\"" "a JSON error body"
                  Expect.stringContains error InferenceApi.KeyIdHeader "names the header"
                  Expect.throwsT<ArgumentException>
                      (fun () -> running.Client.PredictAsync(" ", [||]) |> ignore)
                      "the client refuses a blank id itself"
              })

          serverTest "mutated ciphertexts and keys are refused with 400 and the format error" (fun () ->
              task {
                  let backend = ToyBackend()
                  let local = backend :> IInferenceBackend
                  use! running = start testOptions backend
                  let! id = running.Client.RegisterKeysAsync(keyBytes keyA)
                  let struct (loaded, _) = local.LoadEvaluationKeys(keyBytes keyA)
                  let good = ciphertextBytes Mode.Run (words 1 64)
                  let goodKey = keyBytes keyC
                  // Magic, version, kind, context, length, payload and checksum bytes, and a truncation.
                  let mutations (bytes: byte[]) =
                      [ for position in [ 0; 8; 10; 12; 44; 52; 60; bytes.Length - 1 ] do
                            let copy = Array.copy bytes
                            copy[position] <- copy[position] ^^^ 0x40uy
                            yield copy
                        yield bytes[.. bytes.Length - 2] ]
                  for bad in mutations good do
                      let expected =
                          inProcessError (fun () -> local.Evaluate(loaded, bad, CancellationToken.None) |> ignore)
                      let! e = failsWith<RejectedFheDataException> (fun () -> running.Client.PredictAsync(id, bad))
                      Expect.equal e.StatusCode 400 "status"
                      Expect.equal e.Detail expected "the server sends the format error"
                  for bad in mutations goodKey do
                      let expected = inProcessError (fun () -> local.LoadEvaluationKeys bad |> ignore)
                      let! e = failsWith<RejectedFheDataException> (fun () -> running.Client.RegisterKeysAsync bad)
                      Expect.equal e.Detail expected "the server sends the format error"
                  let! health = running.Client.HealthAsync()
                  Expect.equal health.Keys 1 "no refused key was stored"
                  Expect.equal health.Completed 0L "no refused ciphertext was evaluated to a result"
              })

          serverTest "300 random corruptions of ciphertexts all get 400, never another status" (fun () ->
              task {
                  let backend = ToyBackend()
                  let local = backend :> IInferenceBackend
                  use! running = start testOptions backend
                  let! id = running.Client.RegisterKeysAsync(keyBytes keyB)
                  let struct (loaded, _) = local.LoadEvaluationKeys(keyBytes keyB)
                  let good = ciphertextBytes Mode.Run (words 12 32)
                  let rng = Random 12
                  for case in 1..300 do
                      let bad =
                          match rng.Next 3 with
                          | 0 ->
                              let copy = Array.copy good
                              let position = rng.Next copy.Length
                              copy[position] <- copy[position] ^^^ byte (rng.Next(1, 256))
                              copy
                          | 1 -> good[.. rng.Next good.Length - 1]
                          | _ -> Array.append good (Array.init (rng.Next(1, 9)) byte)
                      let expected =
                          inProcessError (fun () -> local.Evaluate(loaded, bad, CancellationToken.None) |> ignore)
                      let! e = failsWith<RejectedFheDataException> (fun () -> running.Client.PredictAsync(id, bad))
                      Expect.equal e.Detail expected $"case %d{case}"
              })

          serverTest "evicted keys give 404 until they are registered again" (fun () ->
              task {
                  use! running = start { testOptions with KeyBudgetBytes = 2000L } (ToyBackend())
                  let client = running.Client
                  let! idA = client.RegisterKeysAsync(keyBytes keyA)
                  let! _ = client.RegisterKeysAsync(keyBytes keyB)
                  let! _ = client.RegisterKeysAsync(keyBytes keyC)
                  let input = words 2 10
                  let! e =
                      failsWith<UnknownKeyException> (fun () -> client.PredictAsync(idA, ciphertextBytes Mode.Run input))
                  Expect.equal e.KeyId idA "the unknown id"
                  Expect.stringContains e.Message "POST /keys again" "tells the client what to do"
                  let unregistered = String('0', 64)
                  let! never =
                      failsWith<UnknownKeyException> (fun () ->
                          client.PredictAsync(unregistered, ciphertextBytes Mode.Run input))
                  Expect.equal never.StatusCode 404 "never registered"
                  let! idA' = client.RegisterKeysAsync(keyBytes keyA)
                  Expect.equal idA' idA "same id"
                  let! result = client.PredictAsync(idA, ciphertextBytes Mode.Run input)
                  Expect.equal (resultWords result) (expectedWords keyA input) "served after re-registration"
                  let! health = client.HealthAsync()
                  Expect.equal (health.Keys, health.KeyBytes, health.Evictions) (2, 2000L, 2L) "A evicted, then B"
              })

          serverTest "oversized bodies and keys are refused with 413" (fun () ->
              task {
                  use! running = start testOptions (ToyBackend())
                  let client = running.Client
                  let! id = client.RegisterKeysAsync(keyBytes keyA)
                  let big = ciphertextBytes Mode.Run (words 3 (300 * 1024 / 8))
                  let! e = failsWith<PayloadTooLargeException> (fun () -> client.PredictAsync(id, big))
                  Expect.stringContains e.Detail "262144 bytes" "names the limit"
                  let oversizedKeys = Array.zeroCreate<byte> (65 * 1024)
                  let! e = failsWith<PayloadTooLargeException> (fun () -> client.RegisterKeysAsync oversizedKeys)
                  Expect.stringContains e.Detail "65536 bytes" "names the key limit"
                  let hugeKey = keyBytes { keyA with MemoryBytes = 2L <<< 20 }
                  let! e = failsWith<PayloadTooLargeException> (fun () -> client.RegisterKeysAsync hugeKey)
                  Expect.stringContains e.Detail "exceeds the key store's budget" "a key larger than the budget"
                  // A chunked body (no Content-Length) is cut off while it is read.
                  use http = new HttpClient()
                  use request = new HttpRequestMessage(HttpMethod.Post, Uri(running.Address, "/predict"))
                  request.Headers.Add(InferenceApi.KeyIdHeader, id)
                  request.Content <- new StreamContent(new MemoryStream(big))
                  request.Headers.TransferEncodingChunked <- true
                  use! response = http.SendAsync request
                  Expect.equal response.StatusCode HttpStatusCode.RequestEntityTooLarge "chunked body"
                  let! health = client.HealthAsync()
                  Expect.equal health.Keys 1 "nothing stored"
              })

          serverTest "with Expect: 100-continue, too large bodies and unknown keys are refused before upload" (fun () ->
              task {
                  use! running = start testOptions (ToyBackend())
                  let! id = running.Client.RegisterKeysAsync(keyBytes keyA)
                  let head (path: string) (keyId: string) (length: int64) =
                      $"POST /%s{path} HTTP/1.1\nHost: localhost\n%s{InferenceApi.KeyIdHeader}: %s{keyId}\nContent-Length: %d{length}\nExpect: 100-continue\n\n"
                  let! tooLarge = statusLineFor running.Address (head "predict" id (1L <<< 30))
                  Expect.stringStarts tooLarge "HTTP/1.1 413" "a 1 GiB prediction is refused without being sent"
                  let! keysTooLarge = statusLineFor running.Address (head "keys" "" (1L <<< 30))
                  Expect.stringStarts keysTooLarge "HTTP/1.1 413" "1 GiB of keys are refused without being sent"
                  let! unknown = statusLineFor running.Address (head "predict" (String('f', 64)) 1000L)
                  Expect.stringStarts unknown "HTTP/1.1 404" "an unknown key is reported before the upload"
                  let! accepted = statusLineFor running.Address (head "predict" id 1000L)
                  Expect.stringStarts accepted "HTTP/1.1 100" "a valid request is told to send its body"
              })

          serverTest "beyond the concurrency bound a prediction waits, then gets 503 with Retry-After" (fun () ->
              task {
                  let backend = ToyBackend()
                  let options =
                      { testOptions with
                          MaxConcurrentEvaluations = 1
                          QueueTimeout = TimeSpan.FromMilliseconds 200.0 }
                  use! running = start options backend
                  let client = running.Client
                  let! id = client.RegisterKeysAsync(keyBytes keyA)
                  let input = words 4 16
                  let held = client.PredictAsync(id, ciphertextBytes Mode.Hold input)
                  Expect.isTrue (backend.WaitEntered(seconds 5.0)) "the held evaluation started"
                  let waited = Diagnostics.Stopwatch.StartNew()
                  let! busy =
                      failsWith<ServerBusyException> (fun () -> client.PredictAsync(id, ciphertextBytes Mode.Run input))
                  Expect.isGreaterThanOrEqual waited.Elapsed.TotalMilliseconds 190.0 "it waited for a slot (QueueTimeout 200 ms) first"
                  Expect.equal busy.RetryAfter (Nullable(seconds 1.0)) "Retry-After"
                  Expect.stringContains busy.Detail "evaluation slots stayed busy" "says why"
                  let! health = client.HealthAsync()
                  Expect.equal (health.InFlight, health.Rejected) (1, 1L) "one running, one rejected"
                  backend.Release 1
                  let! result = held
                  Expect.equal (resultWords result) (expectedWords keyA input) "the held evaluation completes"
                  Expect.equal backend.MostRunning 1 "never more than the bound at once"
              })

          serverTest "a prediction queued within the timeout is served when a slot frees" (fun () ->
              task {
                  let backend = ToyBackend()
                  use! running = start { testOptions with MaxConcurrentEvaluations = 1 } backend
                  let client = running.Client
                  let! id = client.RegisterKeysAsync(keyBytes keyA)
                  let held = client.PredictAsync(id, ciphertextBytes Mode.Hold (words 6 4))
                  Expect.isTrue (backend.WaitEntered(seconds 5.0)) "the held evaluation started"
                  let queued = client.PredictAsync(id, ciphertextBytes Mode.Run (words 7 4))
                  do! Task.Delay 300
                  Expect.isFalse queued.IsCompleted "the second prediction waits for the slot"
                  backend.Release 1
                  let! _ = held
                  let! result = queued
                  Expect.equal (resultWords result) (expectedWords keyA (words 7 4)) "served after the wait"
              })

          serverTest "a client disconnect cancels the evaluation and frees its slot" (fun () ->
              task {
                  let backend = ToyBackend()
                  use! running = start { testOptions with MaxConcurrentEvaluations = 1 } backend
                  let client = running.Client
                  let! id = client.RegisterKeysAsync(keyBytes keyA)
                  use cts = new CancellationTokenSource()
                  let held = client.PredictAsync(id, ciphertextBytes Mode.Hold (words 8 4), cts.Token)
                  Expect.isTrue (backend.WaitEntered(seconds 5.0)) "the held evaluation started"
                  cts.Cancel()
                  let! _ = failsWith<OperationCanceledException> (fun () -> held)
                  let! seen = eventually (fun () -> task { return backend.CancellationsSeen = 1 })
                  Expect.isTrue seen "Evaluate observed its token"
                  let! settled =
                      eventually (fun () ->
                          task {
                              let! h = client.HealthAsync()
                              return h.InFlight = 0 && h.Cancelled = 1L
                          })
                  Expect.isTrue settled "the evaluation ended and was counted as cancelled"
                  let! result = client.PredictAsync(id, ciphertextBytes Mode.Run (words 9 4))
                  Expect.equal (resultWords result) (expectedWords keyA (words 9 4)) "the slot is free again"
              })

          serverTest "a client timeout is reported as such and cancels the evaluation" (fun () ->
              task {
                  let backend = ToyBackend()
                  use! running = start testOptions backend
                  let! id = running.Client.RegisterKeysAsync(keyBytes keyA)
                  use http = new HttpClient(Timeout = TimeSpan.FromMilliseconds 300.0)
                  use impatient = new InferenceClient(running.Address, http)
                  let held = ciphertextBytes Mode.Hold (words 11 4)
                  let! e = failsWith<InferenceServerUnavailableException> (fun () -> impatient.PredictAsync(id, held))
                  Expect.stringContains e.Message "did not answer POST /predict within 00:00:00.3" "says what happened"
                  let! seen = eventually (fun () -> task { return backend.CancellationsSeen = 1 })
                  Expect.isTrue seen "Evaluate observed its token"
              })

          serverTest "a backend failure is answered 500 without its details" (fun () ->
              task {
                  use! running = start testOptions (ToyBackend())
                  let! id = running.Client.RegisterKeysAsync(keyBytes keyA)
                  let crash = ciphertextBytes Mode.Crash (words 13 4)
                  let! e = failsWith<InferenceServerException> (fun () -> running.Client.PredictAsync(id, crash))
                  Expect.equal (e.StatusCode, e.Error) (500, "internal server error") "a JSON 500"
                  Expect.isFalse (e.Message.Contains "DEADBEEF") "the backend's message stays on the server"
                  let! health = running.Client.HealthAsync()
                  Expect.equal (health.InFlight, health.Completed) (0, 0L) "the slot was released"
                  let! result = running.Client.PredictAsync(id, ciphertextBytes Mode.Run (words 14 4))
                  Expect.equal (resultWords result) (expectedWords keyA (words 14 4)) "the server still serves"
              })

          serverTest "health reports keys, memory, budget and evaluations" (fun () ->
              task {
                  use! running = start testOptions (ToyBackend())
                  let client = running.Client
                  let! id = client.RegisterKeysAsync(keyBytes keyA)
                  let! _ = client.RegisterKeysAsync(keyBytes { keyB with MemoryBytes = 2500L })
                  for i in 1..3 do
                      let! _ = client.PredictAsync(id, ciphertextBytes Mode.Run (words i 4))
                      ()
                  let! health = client.HealthAsync()
                  Expect.equal
                      health
                      { Status = "ok"
                        Keys = 2
                        KeyBytes = 3500L
                        KeyBudgetBytes = 1L <<< 20
                        Evictions = 0L
                        InFlight = 0
                        MaxConcurrent = 2
                        Completed = 3L
                        Cancelled = 0L
                        Rejected = 0L }
                      "health"
              })

          serverTest "after a restart the client re-registers its keys and gets identical results" (fun () ->
              task {
                  let input = ciphertextBytes Mode.Run (words 10 32)
                  let! id, before =
                      task {
                          use! first = start testOptions (ToyBackend())
                          let! id = first.Client.RegisterKeysAsync(keyBytes keyC)
                          let! result = first.Client.PredictAsync(id, input)
                          return id, result
                      }
                  use! second = start testOptions (ToyBackend())
                  let! _ = failsWith<UnknownKeyException> (fun () -> second.Client.PredictAsync(id, input))
                  let! id' = second.Client.RegisterKeysAsync(keyBytes keyC)
                  Expect.equal id' id "same id"
                  let! after = second.Client.PredictAsync(id', input)
                  Expect.equal after before "identical results"
              })

          serverTest "a server that is not running is reported as unavailable" (fun () ->
              task {
                  let! address =
                      task {
                          use! stopped = start testOptions (ToyBackend())
                          return stopped.Address
                      }
                  use client = new InferenceClient(address)
                  let! e = failsWith<InferenceServerUnavailableException> (fun () -> client.HealthAsync())
                  Expect.stringContains e.Message "failed to answer GET /health" "says what happened"
              })

          serverTest "load: 4 clients x 10 predictions, none failed or lost" (fun () ->
              task {
                  let backend = ToyBackend()
                  use! running = start testOptions backend
                  let! id = running.Client.RegisterKeysAsync(keyBytes keyB)
                  // One untimed prediction first, so that JIT compilation is not counted as latency.
                  let! _ = running.Client.PredictAsync(id, ciphertextBytes Mode.Run (words 0 2048))
                  let clientCount, perClient = 4, 10
                  let one (c: int) =
                      task {
                          use client = new InferenceClient(running.Address)
                          let latencies = ResizeArray()
                          for r in 1..perClient do
                              let input = words (100 * c + r) 2048
                              let watch = Stopwatch.StartNew()
                              let! result = client.PredictAsync(id, ciphertextBytes Mode.Run input)
                              latencies.Add watch.Elapsed.TotalMilliseconds
                              Expect.equal (resultWords result) (expectedWords keyB input) $"client %d{c} request %d{r}"
                          return latencies.ToArray()
                      }
                  let total = Stopwatch.StartNew()
                  let! all = Task.WhenAll [ for c in 1..clientCount -> one c ]
                  let elapsed = total.Elapsed.TotalSeconds
                  let sorted = Array.concat all |> Array.sort
                  Expect.equal sorted.Length (clientCount * perClient) "every request answered"
                  let! health = running.Client.HealthAsync()
                  Expect.equal (health.Completed, health.Rejected, health.InFlight) (41L, 0L, 0) "all completed"
                  Expect.isLessThanOrEqual backend.MostRunning 2 "the concurrency bound held"
                  printfn
                      "server load test (toy backend, 16 KiB per request, 2 slots): p50 %.2f ms, p99 %.2f ms, %.0f requests/s"
                      (percentile sorted 0.50)
                      (percentile sorted 0.99)
                      (float sorted.Length / elapsed)
              }) ]

/// A client of a running server that authenticates with an API key.
let private clientWith (address: Uri) (http: HttpClient | null) (apiKey: string | null) =
    let client = new InferenceClient(address, http)
    client.ApiKey <- apiKey
    client

/// The toy keys a flood sends: distinct (each its own id) and each claiming 1000 bytes of memory.
let private floodKey (i: int) = keyBytes { Multiplier = uint64 i; Addend = 1UL; MemoryBytes = 1000L }

/// A self-signed certificate for 127.0.0.1 and localhost, with its private key, for the TLS tests.
let private loopbackCertificate () =
    use key = Security.Cryptography.ECDsa.Create(Security.Cryptography.ECCurve.NamedCurves.nistP256)
    let request =
        Security.Cryptography.X509Certificates.CertificateRequest("CN=localhost", key, Security.Cryptography.HashAlgorithmName.SHA256)
    let names = Security.Cryptography.X509Certificates.SubjectAlternativeNameBuilder()
    names.AddIpAddress IPAddress.Loopback
    names.AddDnsName "localhost"
    request.CertificateExtensions.Add(names.Build())
    let now = DateTimeOffset.UtcNow
    use created = request.CreateSelfSigned(now.AddMinutes -5.0, now.AddHours 1.0)
    // Through PKCS#12, as Kestrel loads certificates from files.
    Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12(created.Export(Security.Cryptography.X509Certificates.X509ContentType.Pkcs12), null)

[<Tests>]
let exposure =
    let alice, bob, carol = ApiKeys.generate (), ApiKeys.generate (), ApiKeys.generate ()
    let clients =
        [ { Name = "alice"; KeySha256 = ApiKeys.hash alice }
          { Name = "bob"; KeySha256 = ApiKeys.hash bob }
          { Name = "carol"; KeySha256 = ApiKeys.hash carol } ]
    let authenticated =
        { testOptions with
            ApiClients = clients
            KeyBudgetBytes = 4000L
            ClientKeyBudgetBytes = 2000L }
    testSequenced
    <| testList
        "Server.Exposure"
        [ test "API keys: generated keys are 256-bit, the file holds their SHA-256, bad files name the line" {
              let key = ApiKeys.generate ()
              Expect.equal key.Length 43 "32 bytes in base64url"
              Expect.notEqual (ApiKeys.generate ()) key "fresh each time"
              let line = ApiKeys.line "alice" key
              Expect.isFalse (line.Contains key) "the line does not contain the key"
              let parsed = ApiKeys.parse $"# clients\n%s{line}\n\nbob:%s{String('a', 64)}\n"
              Expect.equal (parsed |> List.map _.Name) [ "alice"; "bob" ] "names"
              Expect.equal parsed.Head.KeySha256 (ApiKeys.hash key) "the hash"
              let e = raises<ServerOptionsException> (fun () -> ApiKeys.parse "alice:1234" |> ignore)
              Expect.stringContains e.Message "line 1" "names the line"
              let e = raises<ServerOptionsException> (fun () -> ApiKeys.parse (line + "\n" + line) |> ignore)
              Expect.stringContains e.Message "twice" "a client named twice"
          }

          test "a server on a non-loopback address refuses to start without authentication or with https but no certificate" {
              let e = raises<ServerOptionsException> (fun () -> ServerOptions.validate { testOptions with Urls = "http://0.0.0.0:0" } |> ignore)
              Expect.stringContains e.Message "--api-keys" "names the fix"
              ServerOptions.validate { testOptions with Urls = "http://0.0.0.0:0"; AllowAnonymousRemote = true } |> ignore
              ServerOptions.validate { testOptions with Urls = "http://0.0.0.0:0"; ApiClients = clients } |> ignore
              let e = raises<ServerOptionsException> (fun () -> ServerOptions.validate { testOptions with Urls = "https://127.0.0.1:0" } |> ignore)
              Expect.stringContains e.Message "--https-certificate" "names the fix"
              Expect.stringContains (Server.securityNotice testOptions) "NO AUTHENTICATION" "the development default says so"
          }

          test "InferenceClient refuses plain HTTP to a host that is not loopback unless told otherwise" {
              let e = raises<ArgumentException> (fun () -> (new InferenceClient(Uri "http://models.example.com/")) |> ignore)
              Expect.stringContains e.Message "https://" "names the fix"
              use _ = new InferenceClient(Uri "https://models.example.com/")
              use _ = new InferenceClient(Uri "http://models.example.com/", null, true)
              use _ = new InferenceClient(Uri "http://localhost:5000/")
              use _ = new InferenceClient(Uri "http://[::1]:5000/")
              ()
          }

          serverTest "an unauthenticated flood of distinct keys is refused and evicts nothing" (fun () ->
              task {
                  use! running = start authenticated (ToyBackend())
                  use aliceClient = clientWith running.Address null alice
                  let! aliceId = aliceClient.RegisterKeysAsync(keyBytes keyA)
                  use anonymous = clientWith running.Address null null
                  use forger = clientWith running.Address null (ApiKeys.generate ())
                  for i in 1..100 do
                      let! e = failsWith<InferenceServerException> (fun () -> anonymous.RegisterKeysAsync(floodKey i))
                      Expect.equal e.StatusCode 401 "no API key"
                      let! e = failsWith<InferenceServerException> (fun () -> forger.RegisterKeysAsync(floodKey (1000 + i)))
                      Expect.equal e.StatusCode 401 "an unknown API key"
                  let! e = failsWith<InferenceServerException> (fun () -> anonymous.PredictAsync(aliceId, ciphertextBytes Mode.Run (words 1 4)))
                  Expect.equal e.StatusCode 401 "predictions need a key too"
                  let! result = aliceClient.PredictAsync(aliceId, ciphertextBytes Mode.Run (words 2 4))
                  Expect.equal (resultWords result) (expectedWords keyA (words 2 4)) "alice's keys still serve"
                  let! health = anonymous.HealthAsync()
                  Expect.equal (health.Keys, health.KeyBytes, health.Evictions) (1, 1000L, 0L) "only alice's key is held"
              })

          serverTest "an authenticated client over its quota evicts only its own keys; a full server refuses, never evicts" (fun () ->
              task {
                  use! running = start { authenticated with RequestsPerMinute = 0 } (ToyBackend())
                  use aliceClient = clientWith running.Address null alice
                  use bobClient = clientWith running.Address null bob
                  use carolClient = clientWith running.Address null carol
                  let! aliceId = aliceClient.RegisterKeysAsync(keyBytes keyA)
                  let mutable bobLast = ""
                  for i in 1..200 do
                      let! id = bobClient.RegisterKeysAsync(floodKey i)
                      bobLast <- id
                      let! health = bobClient.HealthAsync()
                      Expect.isLessThanOrEqual health.KeyBytes 3000L "alice's 1000 bytes and bob's 2000 at most"
                  let! result = aliceClient.PredictAsync(aliceId, ciphertextBytes Mode.Run (words 3 4))
                  Expect.equal (resultWords result) (expectedWords keyA (words 3 4)) "alice's key survived bob's flood"
                  let! _ = failsWith<UnknownKeyException> (fun () -> aliceClient.PredictAsync(bobLast, ciphertextBytes Mode.Run (words 3 4)))
                  let! _ = failsWith<UnknownKeyException> (fun () -> bobClient.PredictAsync(aliceId, ciphertextBytes Mode.Run (words 3 4)))
                  let! _ = aliceClient.RegisterKeysAsync(keyBytes keyB)
                  // 4000 of 4000 bytes held: carol's key fits her quota but not the server's memory.
                  let! e = failsWith<InferenceServerException> (fun () -> carolClient.RegisterKeysAsync(keyBytes keyC))
                  Expect.equal (e.StatusCode, e.Error) (507, "key memory full") "refused, not evicted"
                  let! health = carolClient.HealthAsync()
                  Expect.equal (health.Keys, health.KeyBytes, health.Evictions) (4, 4000L, 198L) "bob's own 198 evictions only"
                  let! result = aliceClient.PredictAsync(aliceId, ciphertextBytes Mode.Run (words 4 4))
                  Expect.equal (resultWords result) (expectedWords keyA (words 4 4)) "alice still served"
              })

          serverTest "each client is rate-limited on its own" (fun () ->
              task {
                  use! running = start { authenticated with RequestsPerMinute = 5 } (ToyBackend())
                  use aliceClient = clientWith running.Address null alice
                  use bobClient = clientWith running.Address null bob
                  for _ in 1..5 do
                      let! _ = aliceClient.RegisterKeysAsync(keyBytes keyA)
                      ()
                  let! e = failsWith<InferenceServerException> (fun () -> aliceClient.RegisterKeysAsync(keyBytes keyA))
                  Expect.equal e.StatusCode 429 "the sixth request in a minute"
                  let! id = bobClient.RegisterKeysAsync(keyBytes keyB)
                  Expect.equal id (KeyStore<obj>.IdOf(keyBytes keyB)) "bob is not limited by alice's requests"
              })

          serverTest "a slow sender is cut off, and so is a client that never finishes its headers" (fun () ->
              task {
                  let options =
                      { testOptions with
                          MinUploadBytesPerSecond = 1000.0
                          SlowUploadGrace = seconds 1.5
                          HeadersTimeout = seconds 1.0 }
                  use! running = start options (ToyBackend())
                  let trickle (head: string) (bytesPerTick: int) =
                      task {
                          use tcp = new Sockets.TcpClient()
                          do! tcp.ConnectAsync(running.Address.Host, running.Address.Port)
                          use stream = tcp.GetStream()
                          do! stream.WriteAsync(Text.Encoding.ASCII.GetBytes(head.ReplaceLineEndings "\r\n"))
                          let watch = Stopwatch.StartNew()
                          let mutable cutOff = false
                          // Bounded at 15 s; the server's limits cut it off long before.
                          while not cutOff && watch.Elapsed < seconds 15.0 do
                              try
                                  if bytesPerTick > 0 then
                                      do! stream.WriteAsync(ReadOnlyMemory(Array.create bytesPerTick 0uy))
                                  do! Task.Delay 200
                                  if tcp.Client.Poll(0, Sockets.SelectMode.SelectRead) then
                                      cutOff <- true
                              with :? IOException ->
                                  cutOff <- true
                          return cutOff, watch.Elapsed
                      }
                  // 500 bytes/s: above Kestrel's default minimum (240), below this server's 1000.
                  let! cutOff, after = trickle "POST /keys HTTP/1.1\nHost: localhost\nContent-Length: 100000\n\n" 100
                  Expect.isTrue cutOff "the slow upload was ended by the server"
                  Expect.isLessThan after (seconds 8.0) "within a few seconds of the grace period"
                  let! cutOff, after = trickle "POST /keys HTTP/1.1\nHost: localhost\n" 0
                  Expect.isTrue cutOff "the unfinished headers were ended by the server"
                  Expect.isLessThan after (seconds 8.0) "within a few seconds of the headers timeout"
                  let! health = running.Client.HealthAsync()
                  Expect.equal (health.Keys, health.InFlight) (0, 0) "nothing stored, no slot held"
              })

          serverTest "over HTTPS with a generated certificate, an authenticated client registers and predicts" (fun () ->
              task {
                  use certificate = loopbackCertificate ()
                  let options = { authenticated with Urls = "https://127.0.0.1:0"; HttpsCertificate = certificate }
                  use! running = start options (ToyBackend())
                  Expect.equal running.Address.Scheme "https" "listening with TLS"
                  // The client pins the server's certificate (it is self-signed, so no authority vouches for it).
                  use handler =
                      new HttpClientHandler(
                          ServerCertificateCustomValidationCallback =
                              fun _ presented _ _ ->
                                  match presented with
                                  | null -> false
                                  | c -> c.Thumbprint = certificate.Thumbprint
                      )
                  use http = new HttpClient(handler)
                  use aliceClient = clientWith running.Address http alice
                  let! id = aliceClient.RegisterKeysAsync(keyBytes keyA)
                  let! result = aliceClient.PredictAsync(id, ciphertextBytes Mode.Run (words 5 8))
                  Expect.equal (resultWords result) (expectedWords keyA (words 5 8)) "served over TLS"
                  use anonymous = clientWith running.Address http null
                  let! e = failsWith<InferenceServerException> (fun () -> anonymous.RegisterKeysAsync(keyBytes keyB))
                  Expect.equal e.StatusCode 401 "TLS alone does not let a stranger in"
                  // A client that trusts only the system's authorities refuses the self-signed certificate.
                  use strict = clientWith running.Address null alice
                  let! _ = failsWith<InferenceServerUnavailableException> (fun () -> strict.HealthAsync())
                  ()
              }) ]
