using Xunit;

namespace FheNet.CSharp.Tests;

/// <summary>Model owner, data owner and server as three parties, through the façade's deployment API.</summary>
public class DeploymentTests(CompiledMoonsFixture moons) : IClassFixture<CompiledMoonsFixture>
{
    [Fact]
    public async Task DevClientServerRoundTripEqualsTheClearModel()
    {
        var root = Directory.CreateTempSubdirectory("fhenet-deploy-");
        try
        {
            var modelDir = Path.Combine(root.FullName, "model");
            FheModelDev.Save(moons.Model, modelDir);

            var server = new FheModelServer(modelDir);
            // The client starts from the artifact a server hands out, as it would over HTTP.
            var client = new FheModelClient(server.ClientArtifact, Path.Combine(root.FullName, "keys"));
            client.GenerateKeys();
            var keyId = server.RegisterKeys(client.EvaluationKeys());

            var rows = DataSets.Head(moons.Data.XTest, 2);
            var expected = moons.Model.PredictProba(rows);
            for (var i = 0; i < 2; i++)
            {
                var row = new[] { rows[i, 0], rows[i, 1] };
                var answer = await server.RunAsync(keyId, client.QuantizeEncryptSerialize(row));
                Assert.Equal(expected[i], client.DeserializeDecryptDequantize(answer));
            }
            Assert.Equal(new[] { "0", "1" }, client.Classes);

            var batch = client.QuantizeEncryptSerializeBatch(new[] { new[] { rows[0, 0], rows[0, 1] }, new[] { rows[1, 0], rows[1, 1] } });
            var answers = client.DeserializeDecryptDequantizeBatch(await server.RunAsync(keyId, batch));
            Assert.Equal(new[] { expected[0], expected[1] }, answers);
            Assert.ThrowsAny<ArgumentException>(() => client.QuantizeEncryptSerializeBatch(Array.Empty<double[]>()));
            Assert.ThrowsAny<ArgumentException>(() => client.QuantizeEncryptSerializeBatch(new[] { new[] { 1.0 } }));
            server.MaxBatchRows = 1;
            Assert.Throws<FheNet.Deploy.InvalidFheDataException>(() => server.Run(keyId, batch));
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }

    [Fact]
    public void ACorruptedAnswerIsRefusedWithTheTypedError()
    {
        var root = Directory.CreateTempSubdirectory("fhenet-deploy-");
        try
        {
            var modelDir = Path.Combine(root.FullName, "model");
            FheModelDev.Save(moons.Model, modelDir);
            var client = new FheModelClient(modelDir, Path.Combine(root.FullName, "keys"));

            Assert.Throws<FheNet.Deploy.InvalidFheDataException>(() => client.DeserializeDecryptDequantize(new byte[] { 1, 2, 3 }));
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }
}
