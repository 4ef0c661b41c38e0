# tlsguard as a container, e.g. a sidecar in front of a legacy mail server.
#   docker build -t tlsguard .
#   docker run --cap-drop ALL -v tlsguard-state:/var/lib/tlsguard \
#              -v ./my-tlsguard.yaml:/etc/tlsguard/tlsguard.yaml:ro \
#              -p 465:2465 -p 587:2587 tlsguard
# docker-compose.yml puts it in front of a Postfix container.
# Read README.md "Docker" first: behind Docker's NAT clients may appear to
# come from the bridge gateway, so never trust a private range in the policy;
# use host networking or the PROXY protocol instead.

# --- build: a static binary, no cgo
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
# go.mod replaces go-smtp with this patched copy (third_party/go-smtp/PATCHES.md)
COPY third_party/ third_party/
RUN go mod download
COPY . .
# /out/state becomes /var/lib/tlsguard, owned by nonroot: a new named volume
# takes the owner of the image's directory, so the service can write to it.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tlsguard ./cmd/tlsguard \
 && mkdir -p /out/state

# --- run: distroless static (CA certificates, tzdata, /etc/passwd with nonroot)
FROM gcr.io/distroless/static-debian12:nonroot
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
