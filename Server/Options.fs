namespace FheNet.Server

open System
open System.Globalization

/// The command line could not be turned into server options; the message names the option and the fix.
type ServerOptionsException(problem: string) =
    inherit ArgumentException($"%s{problem}.{Environment.NewLine}%s{ServerOptionsException.Usage}")

    /// The command line's syntax.
    static member Usage =
        "usage: fhenet-server --model DIR [--urls http://127.0.0.1:PORT] [--max-concurrent N] [--key-budget-mb N] "
        + "[--max-key-mb N] [--max-request-mb N] [--queue-timeout-ms N]"

/// How the inference server runs. Sizes are in bytes here; the command line gives them in MiB.
type ServerOptions =
    { /// The directory written by FheModelDev(...).Save(DIR).
      ModelDirectory: string
      /// The addresses Kestrel listens on, separated by ';' (port 0 picks a free port).
      Urls: string
      /// Evaluations running at once; further predictions wait for a slot.
      MaxConcurrentEvaluations: int
      /// Memory budget of the loaded evaluation keys; the least recently used are evicted beyond it.
      KeyBudgetBytes: int64
      /// Largest accepted body of <c>POST /keys</c>.
      MaxKeyRequestBytes: int64
      /// Largest accepted body of <c>POST /predict</c>.
      MaxPredictRequestBytes: int64
      /// How long a prediction waits for a free evaluation slot before the server answers 503.
      QueueTimeout: TimeSpan }

/// Defaults and command-line parsing of <see cref="T:FheNet.Server.ServerOptions"/>.
module ServerOptions =

    let private mib = 1L <<< 20

    /// Request bodies are read into one array, so no body may exceed the largest .NET array.
    let MaxBodyBytes = int64 Array.MaxLength

    /// The defaults for a model directory: loopback port 5000, one evaluation per core, 4 GiB of keys, key uploads up
    /// to 1 GiB, predictions up to 64 MiB, 2 s in the queue.
    let defaults (modelDirectory: string) =
        { ModelDirectory = modelDirectory
          Urls = "http://127.0.0.1:5000"
          MaxConcurrentEvaluations = Environment.ProcessorCount
          KeyBudgetBytes = 4096L * mib
          MaxKeyRequestBytes = 1024L * mib
          MaxPredictRequestBytes = 64L * mib
          QueueTimeout = TimeSpan.FromSeconds 2.0 }

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
        require
            (options.MaxKeyRequestBytes >= 1L && options.MaxKeyRequestBytes <= MaxBodyBytes)
            $"--max-key-mb must be between 1 and %d{MaxBodyBytes / mib} (a body is read into one array)"
        require
            (options.MaxPredictRequestBytes >= 1L && options.MaxPredictRequestBytes <= MaxBodyBytes)
            $"--max-request-mb must be between 1 and %d{MaxBodyBytes / mib} (a body is read into one array)"
        require (options.QueueTimeout >= TimeSpan.Zero) "--queue-timeout-ms must be 0 or more"
        options

    /// Parses <c>--model DIR [--urls URLS] [--max-concurrent N] [--key-budget-mb N] [--max-key-mb N]
    /// [--max-request-mb N] [--queue-timeout-ms N]</c>; raises <see cref="T:FheNet.Server.ServerOptionsException"/>.
    let parse (argv: string[]) : ServerOptions =
        let number (name: string) (text: string) (largest: int64) =
            match Int64.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture) with
            | true, n when n <= largest -> n
            | _ -> raise (ServerOptionsException $"%s{name} expects a whole number from 0 to %d{largest}, got '%s{text}'")
        let mebibytes name text = number name text (Int64.MaxValue / mib) * mib
        let rec apply (options: ServerOptions) (args: string list) =
            match args with
            | [] -> options
            | [ name ] -> raise (ServerOptionsException $"%s{name} expects a value")
            | name :: value :: rest ->
                let next =
                    match name with
                    | "--model" -> { options with ModelDirectory = value }
                    | "--urls" -> { options with Urls = value }
                    | "--max-concurrent" -> { options with MaxConcurrentEvaluations = int (number name value 65_536L) }
                    | "--key-budget-mb" -> { options with KeyBudgetBytes = mebibytes name value }
                    | "--max-key-mb" -> { options with MaxKeyRequestBytes = mebibytes name value }
                    | "--max-request-mb" -> { options with MaxPredictRequestBytes = mebibytes name value }
                    | "--queue-timeout-ms" ->
                        { options with QueueTimeout = TimeSpan.FromMilliseconds(float (number name value 86_400_000L)) }
                    | unknown -> raise (ServerOptionsException $"unknown option '%s{unknown}'")
                apply next rest
        apply (defaults "") (List.ofArray argv) |> validate
