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
          "  --queue-timeout-ms N  how long a prediction waits for a slot before 503 (default 2000)" ]

[<EntryPoint>]
let main argv =
    if argv |> Array.exists (fun arg -> arg = "--help" || arg = "-h") then
        printfn "%s" help
        0
    else
        try
            let options = ServerOptions.parse argv
            let backend = openBackend options.ModelDirectory
            use app = Server.createApp options backend
            app.Run()
            0
        with
        | :? ServerOptionsException
        | :? ServerArtifactNotFoundException
        | :? FileNotFoundException
        | :? InvalidFheDataException as e ->
            eprintfn "FheNet.Server: %s" e.Message
            2
