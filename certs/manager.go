package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Manager owns the certificates of one tlsguard process and builds the TLS
// config every listener shares. It is safe for concurrent use.
type Manager struct {
	cfg  Config
	opts Options
	log  *zap.Logger
	now  func() time.Time

	tlsConfig *tls.Config

	// static holds the static or self-signed set; nil with ACME.
	static   atomic.Pointer[certSet]
	reloadMu sync.Mutex // one Reload at a time

	acme *acmeSource // nil unless the ACME source is configured

	stop      chan struct{} // closed by Close: ends background work
	done      sync.WaitGroup
	closeOnce sync.Once
}

// New loads or obtains the certificates of the configured source and
// returns a Manager serving them. cfg must have passed Validate. ctx bounds
// the start-up work (an ACME order); background work (file watching, ACME
// renewal) lasts until Close.
//
// New fails when no certificate can be served: a static file that does not
// load (the error names the file), an ACME order that fails with nothing in
// storage, or a state folder that cannot be written.
func New(ctx context.Context, cfg Config, opts Options) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	m := &Manager{
		cfg:  cfg,
		opts: opts,
		log:  log.Named("certs"),
		now:  time.Now,
		stop: make(chan struct{}),
	}
	alpn := []string{ALPNSMTP}
	switch {
	case len(cfg.Certificates) > 0:
		certs, err := loadPairs(cfg.Certificates, m.now())
		if err != nil {
			return nil, err
		}
		m.setStatic(newCertSet(certs, opts.Hostname), "loaded")
		m.startWatch()
	case cfg.SelfSigned:
		c, created, err := loadOrCreateSelfSigned(opts.StateDir, opts.Hostname, m.now())
		if err != nil {
			return nil, err
		}
		m.static.Store(newCertSet([]*tls.Certificate{c}, opts.Hostname))
		m.log.Warn("SELF-SIGNED CERTIFICATE: for trying only; mail clients will warn or refuse to connect. Configure tls.acme or tls.certificates for real use.",
			zap.Strings("names", certNames(c)),
			zap.Time("not_after", c.Leaf.NotAfter),
			zap.Bool("generated", created),
			zap.String("dir", selfSignedPath(opts.StateDir)))
	case cfg.ACME != nil:
		a, err := newACMESource(ctx, cfg.ACME, opts, m.log)
		if err != nil {
			return nil, err
		}
		m.acme = a
		if cfg.ACME.challenge() == ChallengeTLSALPN01 {
			alpn = append(alpn, ALPNACMETLS1)
		}
	default:
		return nil, errors.New("tls: no certificate source configured")
	}
	m.tlsConfig = newServerConfig(minVersion(cfg.MinVersion), alpn, m.getCertificate)
	return m, nil
}

// ServerConfig returns the one TLS config shared by every listener. Do not
// modify it; Clone it to change anything. The certificate is chosen per
// handshake, so a reload or renewal takes effect on new handshakes only.
func (m *Manager) ServerConfig() *tls.Config {
	return m.tlsConfig
}

// SetSessionTicketKeys makes every listener encrypt TLS session tickets with
// keys[0] and accept tickets under any of keys, so that a ticket minted by
// one instance of a fleet resumes on another (RFC 8446 4.6.1); Go's own
// per-process rotation stops. It is safe during handshakes.
func (m *Manager) SetSessionTicketKeys(keys [][32]byte) {
	if len(keys) > 0 {
		m.tlsConfig.SetSessionTicketKeys(keys)
	}
}

// Reload re-reads the static certificate files. If any pair fails to load,
// the error names the file, nothing changes and the old certificates stay
// in use; the caller logs it. With the ACME or self-signed source it does nothing (certmagic
// renews by itself) and returns nil.
func (m *Manager) Reload() error {
	if len(m.cfg.Certificates) == 0 {
		return nil
	}
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	certs, err := loadPairs(m.cfg.Certificates, m.now())
	if err != nil {
		// Not logged here: the caller (SIGHUP handler, file watcher)
		// logs it once, in its own words.
		return fmt.Errorf("reloading certificates: %w", err)
	}
	m.setStatic(newCertSet(certs, m.opts.Hostname), "reloaded")
	return nil
}

// Expiry returns when each served name's certificate expires (NotAfter), by
// lower-case DNS name or IP address, for monitoring.
func (m *Manager) Expiry() map[string]time.Time {
	if m.acme != nil {
		return m.acme.expiry()
	}
	if s := m.static.Load(); s != nil {
		return s.expiry()
	}
	return map[string]time.Time{}
}

// Close stops background work (file watching, ACME renewal). The TLS config
// keeps serving the certificates it has. Close is idempotent.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		m.done.Wait()
		if m.acme != nil {
			m.acme.close()
		}
	})
	return nil
}

func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m.acme != nil {
		return m.acme.getCertificate(hello)
	}
	if s := m.static.Load(); s != nil {
		if c := s.get(hello); c != nil {
			return c, nil
		}
	}
	return nil, errors.New("no certificate available")
}

// setStatic swaps in a new static set and logs what it serves.
func (m *Manager) setStatic(s *certSet, verb string) {
	m.static.Store(s)
	for _, c := range s.certs {
		m.log.Info("certificate "+verb,
			zap.Strings("names", certNames(c)),
			zap.String("issuer", c.Leaf.Issuer.String()),
			zap.Time("not_after", c.Leaf.NotAfter))
	}
	if h := m.opts.Hostname; h != "" && !s.covers(h) {
		m.log.Warn("no certificate covers the hostname; clients that check names will refuse it",
			zap.String("hostname", h))
	}
}

func certNames(c *tls.Certificate) []string {
	names := append([]string(nil), c.Leaf.DNSNames...)
	for _, ip := range c.Leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

func selfSignedPath(stateDir string) string {
	return filepath.Join(stateDir, selfSignedDir)
}
