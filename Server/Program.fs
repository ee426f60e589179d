module FheNet.Server.Program

open System
open System.IO
open FheNet.Deploy
open FheNet.Server

/// The backend of a model directory: its server artifact (named error when absent) loaded and validated.
let openBackend (directory: string) : IInferenceBackend =
    ModelDirectory.serverArtifact directory |> ignore
    FheBackend directory

/// What --help prints: the endpoints, the syntax and each option with its default.
let help =
    String.concat
        Environment.NewLine
        [ "fhenet-server: serves a compiled FheNet model over HTTP to clients that keep their secret key"
          "(POST /keys, POST /predict, GET /client, GET /health)."
          ServerOptionsException.Usage
          "  --model DIR           the directory written by FheModelDev.Save (server.fhe, client.fhe)"
          "  --urls URLS           addresses to listen on, separated by ';' (default http://127.0.0.1:5000;"
          "                        port 0 picks a free port)"
          "  --max-concurrent N    evaluations running at once (default: one per core)"
          "  --key-budget-mb N     memory budget of the loaded evaluation keys; the least recently used are evicted"
          "                        beyond it (default 4096)"
          "  --max-key-mb N        largest POST /keys body (default 1024)"
          "  --max-request-mb N    largest POST /predict body (default 64)"
          "  --queue-timeout-ms N  how long a prediction waits for a slot before 503 (default 2000)"
          "  --client-key-budget-mb N  each client's share of the key budget (its own keys are evicted beyond it)"
          "  --api-keys FILE       NAME:SHA256-HEX lines (make one with --new-api-key NAME); without it, no authentication"
          "  --allow-anonymous     serve a non-loopback address without API keys"
          "  --https-certificate FILE.pfx  serve HTTPS (password in FHENET_CERTIFICATE_PASSWORD)"
          "  --max-connections N, --min-upload-kbps N, --headers-timeout-ms N, --requests-per-minute N  Kestrel limits"
          "                        and the per-client rate limit"
          "  --new-api-key CLIENT  prints a fresh API key and its --api-keys line, then exits" ]

[<EntryPoint>]
let main argv =
    if argv |> Array.exists (fun arg -> arg = "--help" || arg = "-h") then
        printfn "%s" help
        0
    else
        try
            match argv with
            | [| "--new-api-key"; client |] ->
                let key = ApiKeys.generate ()
                printfn "API key for %s (give it to the client, store it nowhere else):" client
                printfn "  %s" key
                printfn "Line for the server's --api-keys file (the key's SHA-256):"
                printfn "  %s" (ApiKeys.line client key)
                0
            | _ ->
                let options = ServerOptions.parse argv
                let backend = openBackend options.ModelDirectory
                // The app logs Server.securityNotice (a warning without authentication) as it is built.
                use app = Server.createApp options backend
                app.Run()
                0
        with
        | :? ServerOptionsException
        | :? ServerArtifactNotFoundException
        | :? FileNotFoundException
        | :? InvalidFheDataException as e ->
            eprintfn "fhenet-server: %s" e.Message
            2
