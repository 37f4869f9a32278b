# The agent's image: ghcr.io/sluice-lb/sluice:<internal/version.Version>,
# which deploy/daemonset.yaml runs. `make image` builds it.
#
# The binary is what `make build` makes (static, -trimpath, stamped with the
# version), so the image and a local build agree; the bpf2go outputs are
# committed, so no clang is needed. deploy/deploy_test.go checks this file.

# The Go of go.mod.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first, so that a change of the sources reuses their layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build

# No shell, no libc: the binary is static and runs as root, for the
# capabilities the DaemonSet grants it.
FROM gcr.io/distroless/static-debian12
COPY --from=build /src/bin/sluice /sluice
ENTRYPOINT ["/sluice"]
