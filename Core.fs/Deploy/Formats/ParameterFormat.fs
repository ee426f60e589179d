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

/// The binary form and canonical description of a TFHE parameter set.
///
///     string name · i32 n, k, N · noise(LWE) · noise(GLWE) · i32 PBS base log, levels · i32 KS base log, levels
///     · i32 message modulus, carry modulus, ν · f64 published log2 p_fail · u8 order (1 KS-PBS, 2 PBS-KS)
///     · u8 modulus switch (1 standard, 2 centered mean) · u8 insecure
///     noise = u8 1 + i32 TUniform bound log2 | u8 2 + f64 Gaussian σ
module ParameterFormat =

    let private writeNoise (w: PayloadWriter) (noise: NoiseDistribution) =
        match noise with
        | NoiseDistribution.TUniform b ->
            w.WriteByte 1uy
            w.WriteInt32 b
        | NoiseDistribution.Gaussian s ->
            w.WriteByte 2uy
            w.WriteDouble s

    let private readNoise (r: PayloadReader) (name: string) =
        match r.ReadByte() with
        | 1uy -> NoiseDistribution.TUniform(r.ReadInt32())
        | 2uy -> NoiseDistribution.Gaussian(r.ReadDouble())
        | b -> Check.malformed $"%s{name} has noise tag %d{b}"

    let private noiseText (noise: NoiseDistribution) =
        match noise with
        | NoiseDistribution.TUniform b -> $"TUniform(%d{b})"
        | NoiseDistribution.Gaussian s -> "Gaussian(" + s.ToString("R", CultureInfo.InvariantCulture) + ")"

    /// Every field, in a fixed order and invariant formatting: equal strings exactly for equal parameter sets.
    let canonical (p: TfheParameters) =
        String.Join(
            "|",
            [| "FheNet TFHE parameters v1"
               p.Name
               $"n=%d{p.LweDimension}"
               $"k=%d{p.GlweDimension}"
               $"N=%d{p.PolynomialSize}"
               "lwe=" + noiseText p.LweNoise
               "glwe=" + noiseText p.GlweNoise
               $"pbs=%d{p.PbsBaseLog}x%d{p.PbsLevel}"
               $"ks=%d{p.KsBaseLog}x%d{p.KsLevel}"
               $"message=%d{p.MessageModulus}"
               $"carry=%d{p.CarryModulus}"
               $"nu=%d{p.MaxNoiseLevel}"
               "log2pfail=" + p.PublishedLog2PFail.ToString("R", CultureInfo.InvariantCulture)
               $"order=%A{p.Order}"
               $"modswitch=%A{p.ModulusSwitch}"
               $"insecure=%b{p.Insecure}" |]
        )

    /// Writes a parameter set.
    let write (w: PayloadWriter) (p: TfheParameters) =
        w.WriteString p.Name
        w.WriteInt32 p.LweDimension
        w.WriteInt32 p.GlweDimension
        w.WriteInt32 p.PolynomialSize
        writeNoise w p.LweNoise
        writeNoise w p.GlweNoise
        w.WriteInt32 p.PbsBaseLog
        w.WriteInt32 p.PbsLevel
        w.WriteInt32 p.KsBaseLog
        w.WriteInt32 p.KsLevel
        w.WriteInt32 p.MessageModulus
        w.WriteInt32 p.CarryModulus
        w.WriteInt32 p.MaxNoiseLevel
        w.WriteDouble p.PublishedLog2PFail
        w.WriteByte(
            match p.Order with
            | PbsOrder.KeyswitchBootstrap -> 1uy
            | PbsOrder.BootstrapKeyswitch -> 2uy
        )
        w.WriteByte(
            match p.ModulusSwitch with
            | ModulusSwitchKind.Standard -> 1uy
            | ModulusSwitchKind.CenteredMean -> 2uy
        )
        Fields.writeBool w p.Insecure

    /// Reads and validates a parameter set (every field the engine relies on).
    let read (r: PayloadReader) : TfheParameters =
        let name = r.ReadString()
        Check.range "parameters.Name length" 1L 256L (int64 name.Length)
        let n = r.ReadInt32()
        let k = r.ReadInt32()
        let bigN = r.ReadInt32()
        let lweNoise = readNoise r "parameters.LweNoise"
        let glweNoise = readNoise r "parameters.GlweNoise"
        let pbsBase = r.ReadInt32()
        let pbsLevel = r.ReadInt32()
        let ksBase = r.ReadInt32()
        let ksLevel = r.ReadInt32()
        let message = r.ReadInt32()
        let carry = r.ReadInt32()
        let nu = r.ReadInt32()
        let pfail = r.ReadDouble()
        let order =
            match r.ReadByte() with
            | 1uy -> PbsOrder.KeyswitchBootstrap
            | 2uy -> PbsOrder.BootstrapKeyswitch
            | b -> Check.malformed $"parameters.Order has tag %d{b}"
        let modulusSwitch =
            match r.ReadByte() with
            | 1uy -> ModulusSwitchKind.Standard
            | 2uy -> ModulusSwitchKind.CenteredMean
            | b -> Check.malformed $"parameters.ModulusSwitch has tag %d{b}"
        let insecure = Fields.readBool r "parameters.Insecure"
        Check.range "parameters.MessageModulus" 1L 65536L (int64 message)
        Check.range "parameters.CarryModulus" 1L 65536L (int64 carry)
        Check.range "parameters.MaxNoiseLevel" 1L 65536L (int64 nu)
        Check.finite "parameters.PublishedLog2PFail" pfail
        let p =
            { Name = name
              LweDimension = n
              GlweDimension = k
              PolynomialSize = bigN
              LweNoise = lweNoise
              GlweNoise = glweNoise
              PbsBaseLog = pbsBase
              PbsLevel = pbsLevel
              KsBaseLog = ksBase
              KsLevel = ksLevel
              MessageModulus = message
              CarryModulus = carry
              MaxNoiseLevel = nu
              PublishedLog2PFail = pfail
              Order = order
              ModulusSwitch = modulusSwitch
              Insecure = insecure }
        Parameters.validate p
        // Keys of k·N beyond 2^20 coefficients are not something this engine serves.
        Check.range "parameters.GlweDimension * PolynomialSize" 1L (1L <<< 20) (int64 k * int64 bigN)
        p
