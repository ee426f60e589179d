namespace FheNet.Tfhe

open System

/// One row of input ciphertexts sharing one mask seed (compressed, as sent by a client): ciphertext i's mask is the
/// i-th run of Dimension values of the AES-CTR stream started at Seed; only the bodies are stored.
type SeededLweRow =
    { Seed: Seed
      Dimension: int
      Bodies: uint64[] }

/// Encryption and expansion of seeded rows.
module SeededLweRow =

    /// Encrypts integers (wrapping modulo 2p of the encoding) under the client key's ciphertext key, every mask drawn
    /// from one fresh public seed and the noise from the secret CSPRNG.
    let encrypt (clientKey: ClientKey) (encoding: Encoding) (messages: int64[]) : SeededLweRow =
        let key, noise = clientKey.CiphertextKey
        let seed = Seed.Fresh()
        let masks = AesCtrGenerator seed
        let secretNoise = AesCtrGenerator.Secret()
        let buffer = Array.zeroCreate<uint64> (key.Dimension + 1)
        let bodies =
            messages
            |> Array.map (fun m ->
                LweEncryption.encryptInto key masks secretNoise noise (encoding.EncodeWrapping m) (Span buffer)
                buffer[key.Dimension])
        { Seed = seed; Dimension = key.Dimension; Bodies = bodies }

    /// The full ciphertexts: masks replayed from the seed in order.
    let expand (row: SeededLweRow) : LweCiphertext[] =
        let masks = AesCtrGenerator row.Seed
        row.Bodies
        |> Array.map (fun body ->
            let data = Array.zeroCreate<uint64> (row.Dimension + 1)
            masks.Fill(Span(data, 0, row.Dimension))
            data[row.Dimension] <- body
            { Data = data })
