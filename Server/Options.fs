namespace FheNet.Server

open System
open System.Globalization
open System.IO
open System.Security.Cryptography
open System.Security.Cryptography.X509Certificates

/// The command line could not be turned into server options; the message names the option and the fix.
type ServerOptionsException(problem: string) =
    inherit ArgumentException($"%s{problem}.{Environment.NewLine}%s{ServerOptionsException.Usage}")

    /// The command line's syntax.
    static member Usage =
        "usage: fhenet-server --model DIR [--urls http://127.0.0.1:PORT] [--max-concurrent N] [--key-budget-mb N] "
        + "[--client-key-budget-mb N] [--max-key-mb N] [--max-request-mb N] [--queue-timeout-ms N] "
        + "[--api-keys FILE] [--allow-anonymous] [--https-certificate FILE.pfx] [--max-connections N] "
        + "[--min-upload-kbps N] [--headers-timeout-ms N] [--requests-per-minute N]"
        + Environment.NewLine
        + "       fhenet-server --new-api-key CLIENT   (prints a fresh API key and its line for the --api-keys file)"

/// A client allowed to use the server: its name and the SHA-256 of its API key (the key itself is never stored).
type ApiClient =
    { /// The client's name: its keys are stored, counted and rate-limited under it.
      Name: string
      /// SHA-256 of the UTF-8 API key.
      KeySha256: byte[] }

/// API keys: generating, hashing, and the --api-keys file (one <c>NAME:HEX-SHA-256</c> per line, # comments).
module ApiKeys =

    /// The SHA-256 of an API key, as the server stores it.
    let hash (apiKey: string) = SHA256.HashData(Text.Encoding.UTF8.GetBytes apiKey)

    /// A fresh API key: 32 bytes from the CSPRNG, base64url (43 characters).
    let generate () =
        Convert.ToBase64String(RandomNumberGenerator.GetBytes 32).TrimEnd('=').Replace('+', '-').Replace('/', '_')

    /// The line of the --api-keys file that lets a client in with this key.
    let line (client: string) (apiKey: string) = $"%s{client}:%s{Convert.ToHexStringLower(hash apiKey)}"

    /// Parses the --api-keys file's text; raises ServerOptionsException naming the bad line.
    let parse (text: string) : ApiClient list =
        let clients =
            text.Split('\n')
            |> Array.mapi (fun i raw -> i + 1, raw.Trim())
            |> Array.filter (fun (_, l) -> l.Length > 0 && not (l.StartsWith '#'))
            |> Array.map (fun (number, l) ->
                match l.Split(':') with
                | [| name; hex |] when name.Trim().Length > 0 && hex.Trim().Length = 64 && hex.Trim() |> Seq.forall Uri.IsHexDigit ->
                    { Name = name.Trim(); KeySha256 = Convert.FromHexString(hex.Trim()) }
                | _ ->
                    raise (ServerOptionsException $"--api-keys line %d{number} is not NAME:SHA256-HEX (make one with --new-api-key NAME)"))
            |> List.ofArray
        let names = clients |> List.map _.Name
        if List.length (List.distinct names) <> List.length names then
            raise (ServerOptionsException "--api-keys names a client twice; give each client one line")
        clients

/// How the inference server runs. Sizes are in bytes here; the command line gives them in MiB.
type ServerOptions =
    { /// The directory written by FheModelDev(...).Save(DIR).
      ModelDirectory: string
      /// The addresses Kestrel listens on, separated by ';' (port 0 picks a free port).
      Urls: string
      /// Evaluations (and key loads) running at once; further requests wait for a slot.
      MaxConcurrentEvaluations: int
      /// Memory budget of all loaded evaluation keys together.
      KeyBudgetBytes: int64
      /// Memory budget of one client's keys (at most KeyBudgetBytes): beyond it the client's own least recently used
      /// keys are evicted, never another client's.
      ClientKeyBudgetBytes: int64
      /// Largest accepted body of <c>POST /keys</c> (a backend that knows its exact key size expects exactly that).
      MaxKeyRequestBytes: int64
      /// Largest accepted body of <c>POST /predict</c>.
      MaxPredictRequestBytes: int64
      /// How long a request waits for a free evaluation slot before the server answers 503.
      QueueTimeout: TimeSpan
      /// The clients allowed in, by hashed API key; empty: no authentication (development on loopback).
      ApiClients: ApiClient list
      /// Serve without authentication on an address that is not loopback (a trusted private network only).
      AllowAnonymousRemote: bool
      /// The TLS certificate (with its private key) of https:// addresses; null when serving plain HTTP.
      HttpsCertificate: X509Certificate2 | null
      /// Open connections at most.
      MaxConnections: int64
      /// A request body slower than this (after a grace period) is cut off with 408.
      MinUploadBytesPerSecond: float
      /// How long a body may stay below MinUploadBytesPerSecond from its start (over 1 s).
      SlowUploadGrace: TimeSpan
      /// How long a client may take to send its request headers.
      HeadersTimeout: TimeSpan
      /// Requests per minute of one client (API key, or remote address without authentication); 0: unlimited.
      RequestsPerMinute: int }

/// Defaults and command-line parsing of <see cref="T:FheNet.Server.ServerOptions"/>.
module ServerOptions =

    let private mib = 1L <<< 20

    /// Request bodies of a backend that takes bytes are held in one array, so no body may exceed the largest array.
    let MaxBodyBytes = int64 Array.MaxLength

    /// The defaults for a model directory: loopback port 5000 without authentication, one evaluation per core, 4 GiB
    /// of keys (one client may hold all of it), key uploads up to 1 GiB, predictions up to 64 MiB, 2 s in the
    /// queue, 1024 connections, uploads cut below 64 KiB/s after 10 s, 10 s for the headers, 600 requests a minute.
    let defaults (modelDirectory: string) =
        { ModelDirectory = modelDirectory
          Urls = "http://127.0.0.1:5000"
          MaxConcurrentEvaluations = Environment.ProcessorCount
          KeyBudgetBytes = 4096L * mib
          ClientKeyBudgetBytes = 4096L * mib
          MaxKeyRequestBytes = 1024L * mib
          MaxPredictRequestBytes = 64L * mib
          QueueTimeout = TimeSpan.FromSeconds 2.0
          ApiClients = []
          AllowAnonymousRemote = false
          HttpsCertificate = null
          MaxConnections = 1024L
          MinUploadBytesPerSecond = 65536.0
          SlowUploadGrace = TimeSpan.FromSeconds 10.0
          HeadersTimeout = TimeSpan.FromSeconds 10.0
          RequestsPerMinute = 600 }

    /// The addresses of a --urls value.
    let addresses (options: ServerOptions) =
        options.Urls.Split(';', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)

    /// True when every address is a loopback one (localhost, 127.0.0.0/8, ::1).
    let loopbackOnly (options: ServerOptions) =
        addresses options
        |> Array.forall (fun a ->
            match Uri.TryCreate(a.Replace("://+", "://0.0.0.0").Replace("://*", "://0.0.0.0"), UriKind.Absolute) with
            | true, NonNull uri -> uri.IsLoopback
            | _ -> false)

    /// Checks every field; raises <see cref="T:FheNet.Server.ServerOptionsException"/> naming the first bad one.
    let validate (options: ServerOptions) =
        let require condition (problem: string) =
            if not condition then
                raise (ServerOptionsException problem)
        require (not (String.IsNullOrWhiteSpace options.ModelDirectory)) "--model: pass the model directory"
        require
            (not (String.IsNullOrWhiteSpace options.Urls))
            "--urls: pass at least one address, e.g. http://127.0.0.1:5000"
        require (options.MaxConcurrentEvaluations >= 1) "--max-concurrent must be at least 1"
        require (options.KeyBudgetBytes >= 1L) "--key-budget-mb must be at least 1"
        require (options.ClientKeyBudgetBytes >= 1L) "--client-key-budget-mb must be at least 1"
        require
            (options.MaxKeyRequestBytes >= 1L && options.MaxKeyRequestBytes <= MaxBodyBytes)
            $"--max-key-mb must be between 1 and %d{MaxBodyBytes / mib} (a body is read into one array)"
        require
            (options.MaxPredictRequestBytes >= 1L && options.MaxPredictRequestBytes <= MaxBodyBytes)
            $"--max-request-mb must be between 1 and %d{MaxBodyBytes / mib} (a body is read into one array)"
        require (options.QueueTimeout >= TimeSpan.Zero) "--queue-timeout-ms must be 0 or more"
        require (options.MaxConnections >= 1L) "--max-connections must be at least 1"
        require (options.MinUploadBytesPerSecond >= 1.0) "--min-upload-kbps must be at least 1"
        require (options.SlowUploadGrace > TimeSpan.FromSeconds 1.0) "the slow-upload grace period must be over 1 s (Kestrel measures rates each second)"
        require (options.HeadersTimeout > TimeSpan.Zero) "--headers-timeout-ms must be at least 1"
        require (options.RequestsPerMinute >= 0) "--requests-per-minute must be 0 (unlimited) or more"
        let https = addresses options |> Array.exists (fun a -> a.StartsWith("https:", StringComparison.OrdinalIgnoreCase))
        require
            (not https || not (isNull options.HttpsCertificate))
            "--urls has an https:// address: pass its certificate with --https-certificate FILE.pfx"
        require
            (match options.HttpsCertificate with
             | null -> true
             | certificate -> certificate.HasPrivateKey)
            "--https-certificate must hold the certificate's private key (a .pfx/.p12 file)"
        require
            (not options.ApiClients.IsEmpty || options.AllowAnonymousRemote || loopbackOnly options)
            "--urls listens beyond loopback without authentication: pass --api-keys FILE (or --allow-anonymous on a trusted private network)"
        options

    /// Loads a PKCS#12 certificate with its private key; the password comes from FHENET_CERTIFICATE_PASSWORD.
    let private loadCertificate (path: string) =
        if not (File.Exists path) then
            raise (ServerOptionsException $"--https-certificate: no file %s{path}")
        try
            X509CertificateLoader.LoadPkcs12FromFile(path, Environment.GetEnvironmentVariable "FHENET_CERTIFICATE_PASSWORD")
        with :? CryptographicException as e ->
            raise (ServerOptionsException $"--https-certificate: %s{path} is not a PKCS#12 file this password opens (%s{e.Message}); set FHENET_CERTIFICATE_PASSWORD")

    /// Parses the command line (see <see cref="P:FheNet.Server.ServerOptionsException.Usage"/>); raises
    /// <see cref="T:FheNet.Server.ServerOptionsException"/>.
    let parse (argv: string[]) : ServerOptions =
        let number (name: string) (text: string) (largest: int64) =
            match Int64.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture) with
            | true, n when n <= largest -> n
            | _ -> raise (ServerOptionsException $"%s{name} expects a whole number from 0 to %d{largest}, got '%s{text}'")
        let mebibytes name text = number name text (Int64.MaxValue / mib) * mib
        let milliseconds name text = TimeSpan.FromMilliseconds(float (number name text 86_400_000L))
        let rec apply (options: ServerOptions) (clientBudgetGiven: bool) (args: string list) =
            match args with
            | [] -> if clientBudgetGiven then options else { options with ClientKeyBudgetBytes = options.KeyBudgetBytes }
            | "--allow-anonymous" :: rest -> apply { options with AllowAnonymousRemote = true } clientBudgetGiven rest
            | [ name ] -> raise (ServerOptionsException $"%s{name} expects a value")
            | name :: value :: rest ->
                let next =
                    match name with
                    | "--model" -> { options with ModelDirectory = value }
                    | "--urls" -> { options with Urls = value }
                    | "--max-concurrent" -> { options with MaxConcurrentEvaluations = int (number name value 65_536L) }
                    | "--key-budget-mb" -> { options with KeyBudgetBytes = mebibytes name value }
                    | "--client-key-budget-mb" -> { options with ClientKeyBudgetBytes = mebibytes name value }
                    | "--max-key-mb" -> { options with MaxKeyRequestBytes = mebibytes name value }
                    | "--max-request-mb" -> { options with MaxPredictRequestBytes = mebibytes name value }
                    | "--queue-timeout-ms" -> { options with QueueTimeout = milliseconds name value }
                    | "--api-keys" ->
                        if not (File.Exists value) then
                            raise (ServerOptionsException $"--api-keys: no file %s{value}")
                        { options with ApiClients = ApiKeys.parse (File.ReadAllText value) }
                    | "--https-certificate" -> { options with HttpsCertificate = loadCertificate value }
                    | "--max-connections" -> { options with MaxConnections = number name value 1_000_000L }
                    | "--min-upload-kbps" -> { options with MinUploadBytesPerSecond = 1024.0 * float (number name value 10_000_000L) }
                    | "--headers-timeout-ms" -> { options with HeadersTimeout = milliseconds name value }
                    | "--requests-per-minute" -> { options with RequestsPerMinute = int (number name value 10_000_000L) }
                    | unknown -> raise (ServerOptionsException $"unknown option '%s{unknown}'")
                apply next (clientBudgetGiven || name = "--client-key-budget-mb") rest
        apply (defaults "") false (List.ofArray argv) |> validate
