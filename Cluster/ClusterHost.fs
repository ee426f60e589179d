namespace FheNet.Cluster

open System
open System.Globalization
open System.Net
open System.Threading.Tasks
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting.Server
open Microsoft.AspNetCore.Hosting.Server.Features
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging
open Orleans
open Orleans.Configuration
open Orleans.Hosting
open Orleans.Persistence
open Orleans.Runtime
open Orleans.Serialization
open FheNet.Deploy
open FheNet.Server

/// The command line could not be turned into cluster settings; the message names the option and the fix.
type ClusterOptionsException(problem: string) =
    inherit ArgumentException($"%s{problem}.{Environment.NewLine}%s{ClusterOptionsException.Usage}")

    /// The command line's syntax: the cluster's options, then the server's.
    static member Usage =
        "usage: FheNet.Cluster [--silo-port N] [--gateway-port N] [--primary HOST:PORT] [--redis CONFIGURATION] "
        + "[--address IP] [--cluster-id ID] [--evaluation-slots N] [--probe-timeout-ms N] "
        + ServerOptionsException.Usage.Substring("usage: FheNet.Server ".Length)

/// How one silo of the inference cluster runs: its HTTP front door (the server's options) and its place in the cluster.
type ClusterSettings =
    { /// The HTTP front door: the same options, limits and API as the single server.
      Server: ServerOptions
      /// Silos of one cluster share this id (and their Redis database, if any).
      ClusterId: string
      /// The address other silos reach this one at.
      Address: IPAddress
      /// The port silos talk to each other on.
      SiloPort: int
      /// The port Orleans clients connect to.
      GatewayPort: int
      /// Redis for membership and key storage (a StackExchange.Redis configuration such as "host:6379"); None: the
      /// embedded default, localhost clustering and in-memory key storage.
      Redis: string option
      /// Localhost clustering only: the silo endpoint of the cluster's first (primary) silo; None: this is the primary.
      Primary: IPEndPoint option
      /// Evaluations running at once on this silo, whichever front door they came through.
      EvaluationSlots: int
      /// How long a membership probe waits before it counts as missed: how fast a dead silo is noticed.
      ProbeTimeout: TimeSpan }

module ClusterSettings =

    /// The defaults around server options: a primary silo on loopback ports 11111 and 30000 with the embedded
    /// clustering and storage, one evaluation slot per core, Orleans' probe timeout.
    let defaults (server: ServerOptions) =
        { Server = server
          ClusterId = "fhenet"
          Address = IPAddress.Loopback
          SiloPort = 11111
          GatewayPort = 30000
          Redis = None
          Primary = None
          EvaluationSlots = Environment.ProcessorCount
          ProbeTimeout = TimeSpan.FromSeconds 5.0 }

    /// Parses the cluster's options and hands the rest to the server's parser; raises ClusterOptionsException or
    /// ServerOptionsException naming the bad option.
    let parse (argv: string[]) =
        let number (name: string) (text: string) (smallest: int) (largest: int) =
            match Int32.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture) with
            | true, n when n >= smallest && n <= largest -> n
            | _ -> raise (ClusterOptionsException $"%s{name} expects a whole number from %d{smallest} to %d{largest}, got '%s{text}'")
        let rec split (settings: ClusterSettings -> ClusterSettings) (server: string list) (args: string list) =
            match args with
            | [] -> settings, List.rev server
            | name :: value :: rest when name.StartsWith "--" ->
                let set (change: ClusterSettings -> ClusterSettings) = split (settings >> change) server rest
                match name with
                | "--silo-port" -> set (fun s -> { s with SiloPort = number name value 1 65535 })
                | "--gateway-port" -> set (fun s -> { s with GatewayPort = number name value 1 65535 })
                | "--redis" -> set (fun s -> { s with Redis = Some value })
                | "--cluster-id" -> set (fun s -> { s with ClusterId = value })
                | "--evaluation-slots" -> set (fun s -> { s with EvaluationSlots = number name value 1 65536 })
                | "--probe-timeout-ms" ->
                    set (fun s -> { s with ProbeTimeout = TimeSpan.FromMilliseconds(float (number name value 100 600_000)) })
                | "--address" ->
                    match IPAddress.TryParse value with
                    | true, address -> set (fun s -> { s with Address = nonNull address })
                    | _ -> raise (ClusterOptionsException $"--address expects an IP address, got '%s{value}'")
                | "--primary" ->
                    match IPEndPoint.TryParse value with
                    | true, endpoint when (nonNull endpoint).Port > 0 -> set (fun s -> { s with Primary = Some(nonNull endpoint) })
                    | _ -> raise (ClusterOptionsException $"--primary expects the primary silo's IP:PORT, got '%s{value}'")
                | _ -> split settings (value :: name :: server) rest
            | other :: rest -> split settings (other :: server) rest
        let change, serverArgs = split id [] (List.ofArray argv)
        let settings = change (defaults (ServerOptions.parse (Array.ofList serverArgs)))
        if settings.Redis.IsSome && settings.Primary.IsSome then
            raise (ClusterOptionsException "--primary is for localhost clustering: with --redis the silos find each other in Redis")
        if String.IsNullOrWhiteSpace settings.ClusterId then
            raise (ClusterOptionsException "--cluster-id must not be empty")
        settings

/// A silo of the inference cluster and its HTTP front door, running in this process.
[<Sealed>]
type RunningSilo(silo: IHost, frontDoor: WebApplication) =

    /// The silo's services (its grain factory, membership...).
    member _.Services = silo.Services

    /// The addresses the HTTP front door listens on (with the ports Kestrel picked for port 0).
    member _.Urls =
        let server = frontDoor.Services.GetRequiredService<IServer>()
        server.Features.Get<IServerAddressesFeature>()
        |> Option.ofObj
        |> Option.map (fun feature -> Array.ofSeq feature.Addresses)
        |> Option.defaultValue [||]

    /// Completes when the process is asked to stop (Ctrl+C, SIGTERM) and both hosts have stopped.
    member _.WaitForShutdownAsync() : Task =
        task {
            do! silo.WaitForShutdownAsync()
            do! frontDoor.StopAsync()
        }

    /// Stops the front door, then leaves the cluster gracefully.
    member _.StopAsync() : Task =
        task {
            do! frontDoor.StopAsync()
            do! silo.StopAsync()
        }

    interface IAsyncDisposable with
        member this.DisposeAsync() =
            ValueTask(
                task {
                    do! this.StopAsync()
                    do! frontDoor.DisposeAsync()
                    silo.Dispose()
                }
            )

/// Builds the silos of the inference cluster.
module ClusterHost =

    /// The Redis configuration of the key storage: a key is one value of tens to hundreds of MB, which takes longer to
    /// write than StackExchange.Redis' default timeouts (5 s) allow on a busy machine, so they are raised to 2 minutes
    /// unless the configuration sets them.
    let redisStorage (configuration: string) =
        let options = StackExchange.Redis.ConfigurationOptions.Parse configuration
        let mentions (name: string) = configuration.Contains(name, StringComparison.OrdinalIgnoreCase)
        if not (mentions "syncTimeout") then options.SyncTimeout <- 120_000
        if not (mentions "asyncTimeout") then options.AsyncTimeout <- 120_000
        options

    /// The grains, the key storage, the replica placement, the slots and the timeouts of a silo: everything but its
    /// membership, so that a test cluster can bring its own.
    let configureSilo (settings: ClusterSettings) (model: FheModelServer) (silo: ISiloBuilder) =
        match settings.Redis with
        | Some redis ->
            silo.AddRedisGrainStorage(ClusterNames.KeyStorage, fun (o: RedisStorageOptions) -> o.ConfigurationOptions <- redisStorage redis)
            |> ignore
        | None -> silo.AddMemoryGrainStorage ClusterNames.KeyStorage |> ignore
        // Orleans finds grains and serializers through attributes its C# source generator writes into the entry
        // assembly; this one is F#, so the assemblies with grains are named here: ours and the memory storage's.
        silo.Services.AddSerializer(fun serializer ->
            serializer.AddAssembly(typeof<IEvaluationKeyGrain>.Assembly).AddAssembly(typeof<Orleans.Storage.MemoryGrainStorage>.Assembly)
            |> ignore)
        |> ignore
        silo.AddPlacementDirector<KeyReplicaPlacement, KeyReplicaPlacementDirector>() |> ignore
        silo.Services.AddSingleton<IInferenceBackend>(FheBackend model) |> ignore
        silo.Services.AddSingleton(EvaluationSlots settings.EvaluationSlots) |> ignore
        silo.Configure<ClusterMembershipOptions>(fun (o: ClusterMembershipOptions) -> o.ProbeTimeout <- settings.ProbeTimeout)
        |> ignore
        silo.Configure<SiloMessagingOptions>(fun (o: SiloMessagingOptions) ->
            // An evaluation can wait for a slot behind others and then take seconds; keys can be hundreds of MB.
            o.ResponseTimeout <- TimeSpan.FromMinutes 10.0
            o.MaxMessageBodySize <- int (min settings.Server.MaxKeyRequestBytes (int64 Int32.MaxValue) + (1L <<< 20) |> min (int64 Int32.MaxValue)))
        |> ignore

    /// The silo's membership: Redis, or localhost clustering around the primary silo.
    let configureClustering (settings: ClusterSettings) (silo: ISiloBuilder) =
        match settings.Redis with
        | Some redis ->
            silo
                .UseRedisClustering(redis)
                .Configure<ClusterOptions>(fun (o: ClusterOptions) ->
                    o.ClusterId <- settings.ClusterId
                    o.ServiceId <- settings.ClusterId)
                .ConfigureEndpoints(settings.Address, settings.SiloPort, settings.GatewayPort, listenOnAnyHostAddress = false)
            |> ignore
        | None ->
            let primary = settings.Primary |> Option.defaultValue (IPEndPoint(settings.Address, settings.SiloPort))
            silo.UseLocalhostClustering(settings.SiloPort, settings.GatewayPort, primary, settings.ClusterId, settings.ClusterId)
            |> ignore

    /// The front door's backend over a running silo's services.
    let backendOf (model: FheModelServer) (services: IServiceProvider) : IInferenceBackend =
        ClusterBackend(
            services.GetRequiredService<IGrainFactory>(),
            model.ClientArtifact,
            ModelChecks.ofModel model,
            ClusterBackend.activeSilos (services.GetRequiredService<IClusterMembershipService>()),
            RetryPolicy.defaults,
            services.GetRequiredService<ILoggerFactory>().CreateLogger "FheNet.Cluster"
        )

    /// Starts a silo and, once it has joined the cluster, its HTTP front door: the server's own application over the
    /// cluster backend, in the same process.
    let start (settings: ClusterSettings) : Task<RunningSilo> =
        task {
            ModelDirectory.serverArtifact settings.Server.ModelDirectory |> ignore
            let model = FheModelServer settings.Server.ModelDirectory
            let builder = Host.CreateApplicationBuilder(HostApplicationBuilderSettings(Args = [||]))
            builder.Logging.SetMinimumLevel LogLevel.Warning |> ignore
            builder.UseOrleans(fun silo ->
                configureClustering settings silo
                configureSilo settings model silo)
            |> ignore
            let silo = builder.Build()
            do! silo.StartAsync()
            let frontDoor = Server.createApp settings.Server (backendOf model silo.Services)
            do! frontDoor.StartAsync()
            return RunningSilo(silo, frontDoor)
        }
