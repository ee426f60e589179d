namespace FheNet.Fhe

open System
open System.Threading.Tasks
open FheNet
open FheNet.Integer
open FheNet.Numerics
open FheNet.Tfhe

/// The keys of a compiled circuit: the client keeps the client key; the server gets only the evaluation key.
type CircuitKeys =
    { ClientKey: ClientKey
      /// The evaluation key as seeds and bodies, for transfer to a server.
      CompressedServerKey: CompressedServerKey }

/// Checks of a circuit's estimated memory against a budget, before the keys are made or expanded.
module ResourceCheck =

    let private ensure (budgetBytes: int64) (stage: string) (circuit: Circuit) (required: MemoryEstimate -> int64) =
        let memory = circuit.Memory Environment.ProcessorCount
        MemoryEstimate.ensureWithin budgetBytes stage circuit.Parameters (MemoryEstimate.describe memory) (required memory)

    /// Key generation: the client key and the compressed evaluation key.
    let keygen (budgetBytes: int64) (circuit: Circuit) =
        ensure budgetBytes "Generating the keys" circuit (fun m -> m.ClientKeyBytes + m.CompressedEvaluationKeyBytes)

    /// Expanding a compressed evaluation key and preparing the circuit's tables, the compressed key still held.
    let prepare (budgetBytes: int64) (circuit: Circuit) =
        ensure budgetBytes "Preparing the evaluation key" circuit (fun m -> m.CompressedEvaluationKeyBytes + m.PreparedBytes)

    /// Key generation and preparation in one process (development, tests): the peak of both.
    let keygenAndPrepare (budgetBytes: int64) (circuit: Circuit) =
        ensure budgetBytes "Generating and preparing the keys" circuit _.PeakBytes

/// The client half of encrypted inference: key generation, quantization + encryption of rows, decryption.
module FheClient =

    /// Fresh keys for a circuit's parameter set (refused if the set fails the 128-bit security check), once the
    /// client key and the compressed evaluation key are known to fit `budgetBytes` (FheResourceException).
    let keygenWithin (budgetBytes: int64) (circuit: Circuit) : CircuitKeys =
        ResourceCheck.keygen budgetBytes circuit
        let clientKey = ClientKey.generate circuit.Parameters
        { ClientKey = clientKey
          CompressedServerKey = CompressedServerKey.generate clientKey }

    /// keygenWithin the process's default memory budget (MemoryBudget.defaultBytes).
    let keygen (circuit: Circuit) : CircuitKeys = keygenWithin (MemoryBudget.defaultBytes ()) circuit

    let private inputEncoding (circuit: Circuit) = Encoding.WithPadding(1 <<< circuit.InputAccumulatorBits)

    let private checkRow (circuit: Circuit) (row: float32[]) =
        let features = circuit.Model.Layers[0].Weights[0].Length
        if row.Length <> features then
            raise (InvalidShapeException("row", $"has %d{row.Length} features; the model takes %d{features}"))
        Guard.allFinite "row" (ReadOnlySpan row)

    /// Quantizes one row of features and encrypts each code (seeded: a seed and a body per feature) at the
    /// precision of the first layer's accumulators.
    let encryptRow (keys: CircuitKeys) (circuit: Circuit) (row: float32[]) : SeededLweCiphertext[] =
        checkRow circuit row
        let encoding = inputEncoding circuit
        IntegerModel.quantizeRow circuit.Model row
        |> Array.map (fun code -> Lwe.encryptSeededWith keys.ClientKey encoding (int64 code))

    /// The output accumulators of the last layer, from the server's result ciphertexts.
    let decrypt (keys: CircuitKeys) (circuit: Circuit) (outputs: LweCiphertext[]) : int64[] =
        let last = Array.last circuit.Layers
        if outputs.Length <> last.Neurons then
            raise (InvalidShapeException("outputs", $"has %d{outputs.Length} ciphertexts; the model has %d{last.Neurons} outputs"))
        let encoding = Encoding.WithPadding(1 <<< last.AccumulatorBits)
        outputs |> Array.mapi (fun j c -> Lwe.decryptWith keys.ClientKey encoding c - last.Offsets[j])
