package app

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/config"
	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/proxy"
)

// Check loads what Start loads at start (the policy with its open-relay
// self-test, the credential sources, the certificate files, the backend's
// TLS settings) and returns every problem found, for `tlsguard check`. It
// listens nowhere, asks no ACME CA and creates no file; with a cluster
// section it does not connect to Redis. backend is the backend leg as
// Start would build it, or nil when that failed (its error is among
// problems). log gets the warnings Start would log.
func Check(cfg *config.Config, log *zap.Logger) (problems []error, backend *proxy.BackendConfig) {
	a := &App{cfg: cfg, log: log, registry: prometheus.NewRegistry(), checkOnly: true}
	fail := func(err error) { problems = append(problems, err) }
	if _, err := a.loadPolicy(); err != nil {
		fail(fmt.Errorf("policy: %w", err))
	}
	if src, err := a.authenticator(); err != nil {
		fail(err)
	} else if c, ok := src.(interface{ Close() }); ok {
		c.Close()
	}
	if cfg.NeedsTLS() {
		for _, p := range cfg.TLS.Certificates {
			if err := certs.CheckPair(p); err != nil {
				fail(yamlx.Errorf(p.Pos, "", "%v", err))
			}
		}
	}
	bc, err := a.backendConfig()
	if err != nil {
		fail(err)
		return problems, nil
	}
	return problems, &bc
}

// Authenticator builds the credential sources of cfg's auth section as
// Start does, or nil when none is configured; for `tlsguard auth test`.
// Nothing is counted and log gets what building them logs.
func Authenticator(cfg *config.Config, log *zap.Logger) (auth.Source, error) {
	a := &App{cfg: cfg, log: log}
	return a.authenticator()
}
