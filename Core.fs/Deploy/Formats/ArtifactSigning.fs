namespace FheNet.Deploy

open System
open System.Globalization
open System.IO
open System.Security.Cryptography
open FheNet
open FheNet.Autodiff
open FheNet.Quantization
open FheNet.Integer
open FheNet.Tfhe
open FheNet.Fhe
open FheNet.Preprocessing

/// Signatures of client artifacts by their model owner (ECDSA P-256 over SHA-256), so that a client which knows the
/// owner's public key detects an artifact altered in transit or by the server that serves it.
///
///     signed artifact = "FheNetS1" · i32 artifact length · artifact bytes · i32 signature length · signature
///     signature = ECDSA P-256, IEEE P1363 (r ‖ s, 64 bytes), over SHA-256("FheNet client artifact signature v1" ‖ artifact)
module ArtifactSigning =

    let private magic = "FheNetS1"B
    let private domain = "FheNet client artifact signature v1"B
    let private signatureBytes = 64

    let private signed (artifact: ReadOnlySpan<byte>) =
        let data = Array.zeroCreate<byte> (domain.Length + artifact.Length)
        domain.CopyTo(data, 0)
        artifact.CopyTo(Span(data, domain.Length, artifact.Length))
        data

    let private requireP256 (key: ECDsa) (name: string) =
        if isNull (box key) then
            raise (ArgumentNullException name)
        if key.KeySize <> 256 || key.ExportParameters(false).Curve.Oid.Value <> ECCurve.NamedCurves.nistP256.Oid.Value then
            raise (ArgumentException("the model owner's key must be an ECDSA key on the NIST P-256 curve (ECDsa.Create(ECCurve.NamedCurves.nistP256))", name))

    /// True when the bytes are a signed artifact (they start with the signature frame's magic).
    let isSigned (bytes: byte[]) =
        not (isNull (box bytes)) && ReadOnlySpan(bytes).StartsWith(ReadOnlySpan magic)

    /// Signs serialized client artifact bytes with the model owner's private P-256 key; returns the signed artifact.
    let sign (owner: ECDsa) (artifact: byte[]) : byte[] =
        requireP256 owner "owner"
        if isNull (box artifact) then
            raise (ArgumentNullException "artifact")
        let signature = owner.SignData(signed (ReadOnlySpan artifact), HashAlgorithmName.SHA256)
        let result = Array.zeroCreate<byte> (magic.Length + 4 + artifact.Length + 4 + signature.Length)
        let mutable at = 0
        let put (bytes: byte[]) =
            bytes.CopyTo(result, at)
            at <- at + bytes.Length
        let putLength (n: int) =
            Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(Span(result, at, 4), n)
            at <- at + 4
        put magic
        putLength artifact.Length
        put artifact
        putLength signature.Length
        put signature
        result

    /// The artifact and signature of signed bytes; a malformed frame is an InvalidFheDataException.
    let private split (bytes: byte[]) =
        let malformed detail = raise (InvalidFheDataException(FormatError.Malformed $"signed artifact: %s{detail}"))
        let lengthAt at =
            if at + 4 > bytes.Length then malformed "ends early"
            Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(ReadOnlySpan(bytes, at, 4))
        let artifactLength = lengthAt magic.Length
        if artifactLength < 0 || artifactLength > bytes.Length - magic.Length - 8 then
            malformed $"declares %d{artifactLength} artifact bytes"
        let signatureAt = magic.Length + 4 + artifactLength
        let length = lengthAt signatureAt
        if length <> signatureBytes || signatureAt + 4 + length <> bytes.Length then
            malformed $"declares a signature of %d{length} bytes; a P-256 signature has %d{signatureBytes} and ends the data"
        ReadOnlyMemory(bytes, magic.Length + 4, artifactLength), ReadOnlyMemory(bytes, signatureAt + 4, length)

    /// The artifact inside signed bytes after its signature verifies under the owner's public key; raises
    /// UntrustedArtifactException (Unsigned, BadSignature) otherwise.
    let verify (ownerPublicKey: ECDsa) (bytes: byte[]) : byte[] =
        requireP256 ownerPublicKey "ownerPublicKey"
        if not (isSigned bytes) then
            raise (UntrustedArtifactException ArtifactRefusal.Unsigned)
        let artifact, signature = split bytes
        if not (ownerPublicKey.VerifyData(signed artifact.Span, signature.Span, HashAlgorithmName.SHA256)) then
            raise (UntrustedArtifactException ArtifactRefusal.BadSignature)
        artifact.ToArray()

    /// The artifact inside signed bytes without checking the signature (unsigned bytes are returned as they are).
    let unwrap (bytes: byte[]) : byte[] =
        if isSigned bytes then (fst (split bytes)).ToArray() else bytes

    /// The owner's public key as SubjectPublicKeyInfo DER bytes, to hand to clients.
    let exportPublicKey (owner: ECDsa) : byte[] =
        requireP256 owner "owner"
        owner.ExportSubjectPublicKeyInfo()

    /// A public key exported by <c>exportPublicKey</c>; the caller disposes it.
    let importPublicKey (subjectPublicKeyInfo: byte[]) : ECDsa =
        let key = ECDsa.Create()
        try
            key.ImportSubjectPublicKeyInfo(ReadOnlySpan subjectPublicKeyInfo, ref 0) |> ignore
            requireP256 key "subjectPublicKeyInfo"
            key
        with
        | :? CryptographicException as e ->
            key.Dispose()
            raise (ArgumentException($"not a P-256 public key in SubjectPublicKeyInfo form: %s{e.Message}", "subjectPublicKeyInfo"))
        | _ ->
            key.Dispose()
            reraise ()

/// What a client requires of a client artifact it did not build itself (downloaded from <c>GET /client</c>, read
/// from a directory someone else wrote).
type ArtifactTrust =
    { /// The model owner's P-256 public key: when given, only artifacts signed with its private key are accepted.
      OwnerPublicKey: ECDsa option
      /// The model context (the manifest's modelId) the client expects: when given, any other model is refused.
      ExpectedModelContext: byte[] option
      /// Whether a parameter set below 128-bit security is accepted (tests only).
      InsecureParameters: InsecureParameters }

/// Checking received client artifacts.
module ArtifactTrust =

    /// No signature or model required; insecure parameter sets refused.
    let defaults =
        { OwnerPublicKey = None
          ExpectedModelContext = None
          InsecureParameters = InsecureParameters.Refuse }

    /// Verifies the signature (when the trust names an owner), decodes the artifact with the security check, and
    /// checks the pinned model context. Raises UntrustedArtifactException or InvalidFheDataException.
    let accept (trust: ArtifactTrust) (received: byte[]) : ClientArtifact =
        if isNull (box received) then
            raise (ArgumentNullException "received")
        let bytes =
            match trust.OwnerPublicKey with
            | Some owner -> ArtifactSigning.verify owner received
            | None -> ArtifactSigning.unwrap received
        let artifact =
            Container.ofBytes bytes ObjectKind.ClientArtifact ModelContext.artifacts (ClientArtifactFormat.readWith trust.InsecureParameters)
        match trust.ExpectedModelContext with
        | Some expected when not (CryptographicOperations.FixedTimeEquals(ReadOnlySpan expected, ReadOnlySpan artifact.ModelContext)) ->
            raise (UntrustedArtifactException(ArtifactRefusal.UnexpectedModel(Array.copy expected, Array.copy artifact.ModelContext)))
        | _ -> artifact
