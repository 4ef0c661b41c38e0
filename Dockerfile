# tlsguard as a container, e.g. a sidecar in front of a legacy mail server.
#   docker build -t tlsguard .
#   docker run -v ./config:/etc/tlsguard:ro -v tlsguard-state:/var/lib/tlsguard \
#              -p 465:465 -p 587:587 tlsguard
# Read README.md "Docker" first: with Docker's NAT every client appears to
# come from the bridge gateway, so never trust a private range in the policy;
# use host networking or the PROXY protocol instead.

# --- build: a static binary, no cgo
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tlsguard ./cmd/tlsguard

# --- run: distroless static (CA certificates, tzdata, /etc/passwd with nonroot)
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tlsguard /usr/local/bin/tlsguard
COPY deploy/container.yaml /etc/tlsguard/tlsguard.yaml
COPY policies/default.yaml /etc/tlsguard/policies/default.yaml
# uid 65532 (nonroot) cannot bind below 1024 by default: the container config
# listens on 465/587/25 through the ambient capability Docker grants with
# --cap-add NET_BIND_SERVICE, or maps high ports (see deploy/container.yaml).
USER nonroot:nonroot
VOLUME ["/etc/tlsguard", "/var/lib/tlsguard"]
EXPOSE 465 587 25 9587
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/tlsguard", "healthcheck", "--url", "http://127.0.0.1:9587/healthz"]
ENTRYPOINT ["/usr/local/bin/tlsguard"]
CMD ["serve", "--config", "/etc/tlsguard/tlsguard.yaml"]
