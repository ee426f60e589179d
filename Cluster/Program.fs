module FheNet.Cluster.Program

open System
open System.IO
open FheNet.Deploy
open FheNet.Server
open FheNet.Cluster

[<EntryPoint>]
let main argv =
    try
        let settings = ClusterSettings.parse argv
        let running = (ClusterHost.start settings).GetAwaiter().GetResult()
        let urls = String.Join(" ", running.Urls)
        printfn $"FheNet.Cluster: silo %O{settings.Address}:%d{settings.SiloPort} serving %s{urls}"
        running.WaitForShutdownAsync().GetAwaiter().GetResult()
        0
    with
    | :? ClusterOptionsException
    | :? ServerOptionsException
    | :? ServerArtifactNotFoundException
    | :? FileNotFoundException
    | :? InvalidFheDataException as e ->
        eprintfn "FheNet.Cluster: %s" e.Message
        2
