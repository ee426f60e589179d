using System.Security.Cryptography;
using Orleans;
using FheNet.Server;
using Orleans.Concurrency;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace FheNet.Cluster;

/// <summary>The names the silos and their clients agree on.</summary>
public static class ClusterNames
{
    /// <summary>The grain storage provider that holds evaluation keys.</summary>
    public const string KeyStorage = "fhenet-keys";

    /// <summary>The grain key of one replica of a key: its content id, '/', the replica index.</summary>
    public static string ReplicaKey(string keyId, int replica) => $"{keyId}/{replica}";

    /// <summary>The content id of serialized evaluation keys: lowercase hex SHA-256 (the server's key id).</summary>
    public static string ContentId(byte[] serialized) => Convert.ToHexStringLower(SHA256.HashData(serialized));
}

/// <summary>What a key grain persists: the evaluation keys exactly as the client uploaded them (compressed).</summary>
[GenerateSerializer]
public sealed class EvaluationKeyState
{
    /// <summary>The serialized compressed evaluation keys; empty until stored.</summary>
    [Id(0)] public byte[] Compressed { get; set; } = [];
}

/// <summary>No evaluation keys are stored under this id (never stored, or lost with a non-durable storage).</summary>
[GenerateSerializer]
public sealed class EvaluationKeyNotStoredException(string keyId)
    : Exception($"the cluster stores no evaluation keys with id {keyId}; store them again")
{
    /// <summary>The content id that was asked for.</summary>
    [Id(0)] public string KeyId { get; } = keyId;
}

/// <summary>One client's evaluation keys, keyed by their content id and persisted through the key storage, so they
/// outlive the silo that held them.</summary>
public interface IEvaluationKeyGrain : IGrainWithStringKey
{
    /// <summary>Stores the keys (idempotent: the id is their hash, so the same id always means the same bytes).</summary>
    Task Store(byte[] compressed);

    /// <summary>The stored keys; raises <see cref="EvaluationKeyNotStoredException"/> when there are none.</summary>
    Task<byte[]> Compressed();
}

/// <summary>A copy of a key prepared for evaluation on one silo. Replica <c>i</c> of a key is placed on the
/// <c>i</c>-th active silo, so the replicas of a key spread over the cluster and each silo prepares a key once.</summary>
public interface IKeyReplicaGrain : IGrainWithStringKey
{
    /// <summary>Runs the encrypted model on one request's serialized ciphertexts with this replica's key.</summary>
    Task<byte[]> Evaluate(byte[] ciphertexts, CancellationToken cancellation);
}

/// <summary>Bounds the evaluations running at once on one silo, whatever replicas they go through.</summary>
public sealed class EvaluationSlots(int count)
{
    /// <summary>The bound.</summary>
    public int Count { get; } = count > 0 ? count : throw new ArgumentOutOfRangeException(nameof(count), count, "at least one evaluation slot");

    /// <summary>The semaphore evaluations enter.</summary>
    public SemaphoreSlim Semaphore { get; } = new(count, count);
}

internal sealed class EvaluationKeyGrain(
    [PersistentState("keys", ClusterNames.KeyStorage)] IPersistentState<EvaluationKeyState> state)
    : Grain, IEvaluationKeyGrain
{
    public async Task Store(byte[] compressed)
    {
        var id = this.GetPrimaryKeyString();
        // Hashing tens of MB takes a while: off the grain's scheduler.
        var contentId = await Task.Run(() => ClusterNames.ContentId(compressed));
        if (contentId != id)
            throw new ArgumentException($"the keys' content id is {contentId}, not {id}", nameof(compressed));
        if (state.State.Compressed.Length == 0)
        {
            state.State.Compressed = compressed;
            await state.WriteStateAsync();
        }
    }

    public Task<byte[]> Compressed() =>
        state.State.Compressed.Length > 0
            ? Task.FromResult(state.State.Compressed)
            : throw new EvaluationKeyNotStoredException(this.GetPrimaryKeyString());
}

[KeyReplicaPlacement]
[Reentrant]
internal sealed class KeyReplicaGrain(IInferenceBackend backend, EvaluationSlots slots, IGrainFactory grains)
    : Grain, IKeyReplicaGrain
{
    private object? prepared;

    public override async Task OnActivateAsync(CancellationToken cancellation)
    {
        var key = this.GetPrimaryKeyString();
        var keyId = key[..key.LastIndexOf('/')];
        var compressed = await grains.GetGrain<IEvaluationKeyGrain>(keyId).Compressed();
        // Preparing keys is seconds of CPU: off the grain's scheduler.
        prepared = await Task.Run(() => backend.LoadEvaluationKeys(compressed).Item1, cancellation);
    }

    public async Task<byte[]> Evaluate(byte[] ciphertexts, CancellationToken cancellation)
    {
        var keys = prepared ?? throw new InvalidOperationException("the replica was not activated");
        await slots.Semaphore.WaitAsync(cancellation);
        try
        {
            // A dedicated thread: a multi-second evaluation must not hold the grain scheduler or a pool thread.
            return await Task.Factory.StartNew(
                () => backend.Evaluate(keys, ciphertexts, cancellation),
                cancellation, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
        finally
        {
            slots.Semaphore.Release();
        }
    }
}

/// <summary>Places replica <c>i</c> of a key (grain key "id/i") on the <c>i</c>-th compatible silo, in address
/// order, modulo their number.</summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
public sealed class KeyReplicaPlacement : PlacementStrategy;

/// <summary>Marks a grain class placed by <see cref="KeyReplicaPlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class KeyReplicaPlacementAttribute() : PlacementAttribute(new KeyReplicaPlacement());

/// <summary>The director of <see cref="KeyReplicaPlacement"/>.</summary>
public sealed class KeyReplicaPlacementDirector : IPlacementDirector
{
    /// <summary>The replica index of a grain key "id/i" (0 when it has none).</summary>
    public static int ReplicaOf(string grainKey)
    {
        var slash = grainKey.LastIndexOf('/');
        return slash >= 0 && int.TryParse(grainKey.AsSpan(slash + 1), out var replica) && replica >= 0 ? replica : 0;
    }

    /// <inheritdoc />
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var silos = context.GetCompatibleSilos(target).OrderBy(s => s.ToParsableString(), StringComparer.Ordinal).ToArray();
        var replica = ReplicaOf(target.GrainIdentity.Key.ToString());
        return Task.FromResult(silos[replica % silos.Length]);
    }
}
