module FheNet.Server.Program

open System
open FheNet.Server

/// This build has no FHE model server yet (the compile layer, issue 5): a server artifact is found but not loaded.
type ModelServerUnavailableException(artifact: string) =
    inherit NotSupportedException($"found the server artifact %s{artifact}, but this build of FheNet.Server cannot load it yet: FheModelServer (the FHE compile layer) is not part of it")

/// The backend of a model directory's server artifact.
let openBackend (artifact: string) : IInferenceBackend = raise (ModelServerUnavailableException artifact)

[<EntryPoint>]
let main argv =
    try
        let options = ServerOptions.parse argv
        let backend = openBackend (ModelDirectory.serverArtifact options.ModelDirectory)
        use app = Server.createApp options backend
        app.Run()
        0
    with
    | :? ServerOptionsException
    | :? ServerArtifactNotFoundException
    | :? ModelServerUnavailableException as e ->
        eprintfn "FheNet.Server: %s" e.Message
        2
