# tlsguard as a container, e.g. a sidecar in front of a legacy mail server.
#   docker build -t tlsguard \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg COMMIT="$(git rev-parse HEAD)" .
#   docker run --cap-drop ALL -v tlsguard-state:/var/lib/tlsguard \
#              -v "$PWD"/my-tlsguard.yaml:/etc/tlsguard/tlsguard.yaml:ro \
#              -p 465:2465 -p 587:2587 tlsguard
# (-v needs an absolute host path: older Docker takes ./file for the name of
# a volume.) Multi-arch: the build stage runs on the builder's platform and
# cross-compiles, so no emulation is needed:
#   docker buildx build --platform linux/amd64,linux/arm64 -t tlsguard .
# Podman: `podman build --format docker`; its default OCI format drops the
# HEALTHCHECK below.
# docker-compose.yml puts it in front of a Postfix container.
# Read README.md "Docker" first: behind Docker's NAT clients may appear to
# come from the bridge gateway, so never trust a private range in the policy;
# use host networking or the PROXY protocol instead.

# --- build: a static binary, no cgo, for TARGETOS/TARGETARCH
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
# go.mod replaces go-smtp with this patched copy (third_party/go-smtp/PATCHES.md)
COPY third_party/ third_party/
RUN go mod download
COPY . .
# .dockerignore keeps .git out of the context, so the version comes in as
# build arguments (tlsguard version, and the labels below).
ARG TARGETOS TARGETARCH VERSION=unknown COMMIT=unknown
# /out/state becomes /var/lib/tlsguard, owned by nonroot: a new named volume
# takes the owner of the image's directory, so the service can write to it.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w -X main.version=$VERSION -X main.commit=$COMMIT" -o /out/tlsguard ./cmd/tlsguard \
 && mkdir -p /out/state

# --- run: distroless static (CA certificates, tzdata, /etc/passwd with nonroot)
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=unknown COMMIT=unknown
LABEL org.opencontainers.image.title="tlsguard" \
      org.opencontainers.image.description="Policy-enforcing SMTP front proxy: TLS, safe AUTH and a relay policy for a legacy mail server" \
      org.opencontainers.image.source="https://github.com/tlsguard/tlsguard" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$COMMIT"
COPY --from=build /out/tlsguard /usr/local/bin/tlsguard
COPY --from=build --chown=65532:65532 /out/state /var/lib/tlsguard
COPY deploy/container.yaml /etc/tlsguard/tlsguard.yaml
COPY policies/default.yaml /etc/tlsguard/policies/default.yaml
# uid 65532 (nonroot) needs no capability: deploy/container.yaml listens on
# high ports (2465, 2587, 2025); publish them as 465, 587, 25.
USER nonroot:nonroot
VOLUME ["/etc/tlsguard", "/var/lib/tlsguard"]
EXPOSE 2465 2587 2025
# The admin endpoint (/healthz, /metrics) stays on the container's loopback.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/tlsguard", "healthcheck", "--url", "http://127.0.0.1:9587/healthz"]
ENTRYPOINT ["/usr/local/bin/tlsguard"]
CMD ["serve", "--config", "/etc/tlsguard/tlsguard.yaml"]
