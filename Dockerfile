# The FheNet inference server (fhenet-server) in a container. Build from the repository root:
#   docker build -t fhenet-server .
#   docker run --rm -p 5000:5000 -v "$PWD/model:/model:ro" fhenet-server
# The model directory is the one FheModelDev.Save wrote (server.fhe, client.fhe: nothing secret).

# Build: the SDK image restores with Paket (a local tool) and publishes the server.
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
ENV DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
COPY . .
RUN dotnet tool restore \
    && dotnet restore Server/FheNet.Server.fsproj \
    && dotnet publish Server/FheNet.Server.fsproj -c Release --no-restore -o /app

# Run: the ASP.NET Core runtime image, as its unprivileged user.
FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS runtime
WORKDIR /app
COPY --from=build /app .
USER $APP_UID
EXPOSE 5000
ENTRYPOINT ["dotnet", "FheNet.Server.dll", "--urls", "http://0.0.0.0:5000", "--model", "/model"]
