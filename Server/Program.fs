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
