namespace FheNet.Deploy

open System
open System.Collections.Generic
open System.Security.Cryptography

/// An evaluation key cannot be held within the store's memory budget even after evicting every other key.
type KeyTooLargeException(keyBytes: int64, budgetBytes: int64) =
    inherit
        InvalidOperationException(
            $"An evaluation key of %d{keyBytes} bytes in memory exceeds the key store's budget of %d{budgetBytes} bytes; "
            + "raise the budget or use a model with smaller keys."
        )

    member _.KeyBytes = keyBytes
    member _.BudgetBytes = budgetBytes

/// The memory of several key stores together is full: a key that fits its own store's budget cannot be held without
/// evicting another store's keys, which a store never does.
type KeyMemoryFullException(keyBytes: int64, usedBytes: int64, budgetBytes: int64) =
    inherit
        InvalidOperationException(
            $"The server's key memory is full (%d{usedBytes} of %d{budgetBytes} bytes held by other clients' keys); "
            + $"an evaluation key of %d{keyBytes} bytes does not fit. Retry later, or raise the server's key budget."
        )

    member _.KeyBytes = keyBytes
    member _.UsedBytes = usedBytes
    member _.BudgetBytes = budgetBytes

/// A memory budget shared by several key stores (one per client of a server): each store reserves its keys here
/// and, when the shared budget is spent, refuses a key instead of evicting another store's. Thread-safe.
[<Sealed>]
type SharedKeyMemory(budgetBytes: int64) =
    do
        if budgetBytes <= 0L then
            raise (FheNet.ParameterOutOfRangeException("budgetBytes", budgetBytes, "a positive number of bytes"))

    let mutable used = 0L

    /// The budget.
    member _.BudgetBytes = budgetBytes

    /// Bytes reserved now.
    member _.UsedBytes = Threading.Volatile.Read &used

    /// Reserves bytes when they fit the budget; false (nothing reserved) otherwise.
    member _.TryReserve(bytes: int64) =
        let mutable reserved = false
        let mutable settled = false
        while not settled do
            let current = Threading.Volatile.Read &used
            if current + bytes > budgetBytes then
                settled <- true
            elif Threading.Interlocked.CompareExchange(&used, current + bytes, current) = current then
                reserved <- true
                settled <- true
        reserved

    /// Returns reserved bytes.
    member _.Release(bytes: int64) = Threading.Interlocked.Add(&used, -bytes) |> ignore

/// Occupancy of a key store.
[<Struct>]
type KeyStoreStats =
    { Keys: int
      Bytes: int64
      BudgetBytes: int64
      Evictions: int64 }

/// A thread-safe store of loaded evaluation keys under a memory budget, for a server that serves many clients.
/// A key is identified by the SHA-256 of its serialized bytes, so registering the same keys twice returns the same
/// id without loading them again. When a new key does not fit, the least recently used keys are evicted; a client
/// whose key was evicted gets "unknown key" and registers it again. A store given a SharedKeyMemory also reserves
/// its keys there and evicts only its own keys to make room (KeyMemoryFullException when that is not enough).
[<Sealed>]
type KeyStore<'Key>(budgetBytes: int64, shared: SharedKeyMemory | null) =
    do
        if budgetBytes <= 0L then
            raise (FheNet.ParameterOutOfRangeException("budgetBytes", budgetBytes, "a positive number of bytes"))

    let gate = obj ()
    // Most recently used at the end; each id maps to its node for O(1) touch and removal.
    let order = LinkedList<string>()
    let entries = Dictionary<string, struct ('Key * int64 * LinkedListNode<string>)>()
    let mutable used = 0L
    let mutable evictions = 0L

    let evictOldest () =
        let oldest = nonNull order.First
        let struct (_, oldSize, _) = entries[oldest.Value]
        entries.Remove oldest.Value |> ignore
        order.RemoveFirst()
        used <- used - oldSize
        evictions <- evictions + 1L
        match shared with
        | null -> ()
        | memory -> memory.Release oldSize

    /// Holds a loaded key under the gate: evicts this store's least recently used keys to fit its budget and, with
    /// shared memory, until the shared budget has room.
    let insert (id: string) (key: 'Key) (size: int64) =
        if size > budgetBytes then
            raise (KeyTooLargeException(size, budgetBytes))
        lock gate (fun () ->
            if not (entries.ContainsKey id) then
                while used + size > budgetBytes do
                    // Not empty: used > 0 here, since size alone fits the budget.
                    evictOldest ()
                match shared with
                | null -> ()
                | memory ->
                    while not (memory.TryReserve size) do
                        if entries.Count = 0 then
                            raise (KeyMemoryFullException(size, memory.UsedBytes, memory.BudgetBytes))
                        evictOldest ()
                entries[id] <- struct (key, size, order.AddLast id)
                used <- used + size)

    /// A store with its own budget only.
    new(budgetBytes: int64) = KeyStore<'Key>(budgetBytes, null)

    /// The id of serialized evaluation keys: lowercase hex SHA-256.
    static member IdOf(serialized: byte[]) = Convert.ToHexStringLower(SHA256.HashData serialized)

    /// Loads (once) and stores serialized keys; <c>load</c> returns the key and its size in memory. Returns the id.
    /// Raises <see cref="T:FheNet.Deploy.KeyTooLargeException"/> when the key alone exceeds the budget; exceptions of
    /// <c>load</c> (for example <see cref="T:FheNet.Deploy.InvalidFheDataException"/>) pass through and store nothing.
    member this.Register(serialized: byte[], load: Func<byte[], struct ('Key * int64)>) : string =
        let id = KeyStore<'Key>.IdOf serialized
        let known =
            lock gate (fun () ->
                match entries.TryGetValue id with
                | true, struct (_, _, node) ->
                    order.Remove node
                    order.AddLast node
                    true
                | _ -> false)
        if not known then
            // Loading is slow (hundreds of MB): done outside the lock so lookups are never blocked by it.
            let struct (key, size) = load.Invoke serialized
            insert id key size
        id

    /// Stores a key loaded by the caller (for example from a stream, hashing it on the way) under its id: the
    /// lowercase hex SHA-256 of its serialized bytes. Same budget rules as <c>Register</c>.
    member _.Add(id: string, key: 'Key, size: int64) =
        if String.IsNullOrEmpty id then
            raise (ArgumentException("pass the key's id", "id"))
        if size <= 0L then
            raise (FheNet.ParameterOutOfRangeException("size", size, "a positive number of bytes"))
        insert id key size

    /// The key with this id, marking it most recently used; false when unknown or evicted.
    member _.TryGet(id: string, [<Runtime.InteropServices.Out>] key: byref<'Key>) : bool =
        // Monitor rather than `lock`: a byref cannot be captured by the closure `lock` takes.
        Threading.Monitor.Enter gate
        try
            match entries.TryGetValue id with
            | true, struct (k, _, node) ->
                order.Remove node
                order.AddLast node
                key <- k
                true
            | _ -> false
        finally
            Threading.Monitor.Exit gate

    /// Removes a key; false when it was not there.
    member _.Remove(id: string) : bool =
        lock gate (fun () ->
            match entries.TryGetValue id with
            | true, struct (_, size, node) ->
                entries.Remove id |> ignore
                order.Remove node
                used <- used - size
                match shared with
                | null -> ()
                | memory -> memory.Release size
                true
            | _ -> false)

    /// Current occupancy.
    member _.Stats =
        lock gate (fun () ->
            { Keys = entries.Count
              Bytes = used
              BudgetBytes = budgetBytes
              Evictions = evictions })
