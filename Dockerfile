# registryd and registryctl as static binaries on a distroless base.
#
#   docker build -t registryd .
#   docker run --rm -p 127.0.0.1:7600:7600 registryd
#
# docker-compose.yaml builds this image and runs it beside an OpenTelemetry
# Collector, Jaeger and Prometheus; see deploy/README.md.

# Build stage: the project's Go release (go.mod asks for go 1.26.0 or newer).
FROM golang:1.27.3-bookworm AS build
WORKDIR /src

# Modules first, in a layer of their own, so that editing a source file does
# not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
# CGO_ENABLED=0: a static binary, needing no libc in the final image.
# -trimpath: no build machine paths in the binaries. -s -w: no symbol table
# or DWARF, a smaller image. -buildvcs=false: .git is not in the build
# context (see .dockerignore), so there is nothing to stamp.
# TARGETOS/TARGETARCH are set by BuildKit, for docker buildx --platform.
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ \
        ./cmd/registryd ./cmd/registryctl

# Final stage: no shell, no package manager, CA certificates and tzdata only.
# Distroless publishes no version tags: static-debian12 pins the Debian
# release, :nonroot the variant whose default user is nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/registryd /out/registryctl /usr/local/bin/
USER nonroot:nonroot
# Inside a container the loopback default (127.0.0.1:7600) reaches nothing.
ENV REGISTRYD_ADDR=0.0.0.0:7600
# 7600: gRPC API. 9464: /metrics and /healthz, when REGISTRYD_METRICS_ADDR
# is set (docker-compose.yaml sets it).
EXPOSE 7600 9464
ENTRYPOINT ["/usr/local/bin/registryd"]
