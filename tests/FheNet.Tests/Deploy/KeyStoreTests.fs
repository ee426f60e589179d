module FheNet.Tests.Deploy.KeyStoreTests

open System
open System.Threading.Tasks
open Expecto
open FsCheck.FSharp
open FheNet.Deploy
open FheNet.Tests.Generators

/// Serialized "keys" are distinct byte strings; their in-memory size is stated by the loader.
let private keyBytes (i: int) = BitConverter.GetBytes i

let private loaderWith (sizes: Map<int, int64>) (loads: int ref) =
    Func<byte[], struct (int * int64)>(fun bytes ->
        loads.Value <- loads.Value + 1
        let i = BitConverter.ToInt32(bytes, 0)
        struct (i, sizes[i]))

let private present (store: KeyStore<int>) (i: int) =
    let mutable key = 0
    store.TryGet(KeyStore<int>.IdOf(keyBytes i), &key) && key = i

[<Tests>]
let tests =
    testList
        "Deploy.KeyStore"
        [ testProperty "the budget is never exceeded and the newest key is always kept"
          <| forAll
              (gen {
                  let! sizes = Gen.arrayOfLength 8 (Gen.choose (1, 100))
                  let! ops = Gen.listOf (Gen.choose (0, 7))
                  return sizes, ops
              })
              (fun (sizes, ops) ->
                  let budget = 150L
                  let sizes = sizes |> Array.mapi (fun i s -> i, int64 s) |> Map.ofArray
                  let store = KeyStore<int>(budget)
                  let loads = ref 0
                  ops
                  |> List.forall (fun i ->
                      store.Register(keyBytes i, loaderWith sizes loads) |> ignore
                      let stats = store.Stats
                      let held = [ 0..7 ] |> List.filter (present store)
                      stats.Bytes <= budget
                      && stats.Bytes = (held |> List.sumBy (fun k -> sizes[k]))
                      && stats.Keys = held.Length
                      && List.contains i held))

          test "registering the same keys twice loads them once and returns the same id" {
              let store = KeyStore<int>(1000L)
              let loads = ref 0
              let load = loaderWith (Map [ 1, 10L ]) loads
              let a = store.Register(keyBytes 1, load)
              let b = store.Register(keyBytes 1, load)
              Expect.equal a b "same id"
              Expect.equal loads.Value 1 "loaded once"
              Expect.equal a.Length 64 "a SHA-256 hex id"
          }

          test "the least recently used key is evicted first" {
              let store = KeyStore<int>(30L)
              let load = loaderWith (Map [ 1, 10L; 2, 10L; 3, 10L; 4, 10L ]) (ref 0)
              for i in 1..3 do
                  store.Register(keyBytes i, load) |> ignore
              Expect.isTrue (present store 1) "touch key 1: key 2 is now the oldest"
              store.Register(keyBytes 4, load) |> ignore
              Expect.isFalse (present store 2) "2 evicted"
              Expect.isTrue (present store 1 && present store 3 && present store 4) "the others kept"
              Expect.equal store.Stats.Evictions 1L "one eviction"
          }

          test "a key over the budget and a failing load store nothing" {
              let store = KeyStore<int>(50L)
              Expect.throwsT<KeyTooLargeException>
                  (fun () -> store.Register(keyBytes 1, loaderWith (Map [ 1, 51L ]) (ref 0)) |> ignore)
                  "too large"
              Expect.throwsT<InvalidFheDataException>
                  (fun () ->
                      store.Register(keyBytes 2, Func<_, _>(fun _ -> raise (InvalidFheDataException FormatError.Truncated)))
                      |> ignore)
                  "corrupt keys"
              Expect.equal store.Stats.Keys 0 "nothing stored"
              Expect.equal store.Stats.Bytes 0L "nothing counted"
          }

          test "concurrent registrations and lookups keep the accounting exact" {
              let store = KeyStore<int>(200L)
              let sizes = Map [ for i in 0..31 -> i, int64 (10 + i % 7) ]
              let load = loaderWith sizes (ref 0)
              Parallel.For(0, 2000, fun n ->
                  let i = (n * 7919) % 32
                  store.Register(keyBytes i, load) |> ignore
                  present store ((i + 5) % 32) |> ignore)
              |> ignore
              let held = [ 0..31 ] |> List.filter (present store)
              Expect.equal store.Stats.Bytes (held |> List.sumBy (fun k -> sizes[k])) "bytes match the keys held"
              Expect.isLessThanOrEqual store.Stats.Bytes 200L "within budget"
          }

          test "a non-positive budget is refused" {
              Expect.throwsT<FheNet.ParameterOutOfRangeException> (fun () -> KeyStore<int>(0L) |> ignore) "zero budget"
          } ]
