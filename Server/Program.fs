module FheNet.Server.Program

open System.IO
open FheNet.Deploy
open FheNet.Server

/// The backend of a model directory: its server artifact (named error when absent) loaded and validated.
let openBackend (directory: string) : IInferenceBackend =
    ModelDirectory.serverArtifact directory |> ignore
    FheBackend directory

[<EntryPoint>]
let main argv =
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
        eprintfn "FheNet.Server: %s" e.Message
        2
