package app

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tlsguard/tlsguard/internal/cluster"
	"github.com/tlsguard/tlsguard/internal/config"
)

// openCluster connects to the fleet's Redis and loads the key that seals
// values in it; nil, nil without a cluster section.
func (a *App) openCluster() (*cluster.Client, *cluster.Sealer, error) {
	cl := a.cfg.Cluster
	if !cl.On() {
		return nil, nil, nil
	}
	r := cl.Redis
	o := cluster.Options{Address: r.Address, Username: r.Username, KeyPrefix: r.KeyPrefix, Timeout: r.Timeout,
		Logger: a.log.Named("cluster"), Degraded: a.metrics.clusterDegraded}
	if s := r.Sentinel; s != nil {
		o.SentinelMaster, o.SentinelAddresses = s.Master, s.Addresses
	}
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster.redis.password_file: %w", err)
		}
		o.Password = strings.TrimRight(string(b), "\r\n")
	}
	if r.TLS {
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if r.CAFile != "" {
			pem, err := os.ReadFile(r.CAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("cluster.redis.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("cluster.redis.ca_file: %s: no PEM certificate found", r.CAFile)
			}
			o.TLS.RootCAs = pool
		}
	}
	var seal *cluster.Sealer
	if cl.KeyFile != "" {
		var err error
		if seal, err = cluster.LoadSealer(cl.KeyFile); err != nil {
			return nil, nil, fmt.Errorf("cluster.key_file: %w", err)
		}
	}
	c, err := cluster.New(o)
	if err != nil {
		return nil, nil, err
	}
	return c, seal, nil
}

// clusterStorage is the shared ACME storage, or nil when certificates are
// not shared (or not from ACME).
func (a *App) clusterStorage(c *cluster.Client, seal *cluster.Sealer) *cluster.Storage {
	if c == nil || a.cfg.TLS.ACME == nil || !a.cfg.Cluster.Shares(config.ShareCertificates) {
		return nil
	}
	return c.Storage(seal, filepath.Join(a.cfg.StateDir, "acme"))
}
