package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/rfc2136"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"
)

// acmeDir is the folder under the state dir where certmagic keeps the ACME
// account, certificates, keys and locks.
const acmeDir = "acme"

// Interface guards: the DNS provider must satisfy what certmagic needs.
var _ certmagic.DNSProvider = (*rfc2136.Provider)(nil)

// acmeSource obtains and renews certificates through certmagic.
type acmeSource struct {
	cache *certmagic.Cache
	cfg   *certmagic.Config
	names []string
	log   *zap.Logger
}

// newACMESource sets up certmagic with storage under opts.StateDir and
// manages the names synchronously: it returns once every name has a
// certificate, from storage or freshly obtained, or fails with the reason.
func newACMESource(ctx context.Context, a *ACME, opts Options, log *zap.Logger) (*acmeSource, error) {
	log = log.Named("acme")
	if opts.StateDir == "" {
		return nil, errors.New("tls.acme: needs a state directory (state_dir) to keep the account and certificates in")
	}
	names := append([]string(nil), a.Names...)
	if len(names) == 0 {
		if opts.Hostname == "" {
			return nil, errors.New("tls.acme: no names and no hostname to get a certificate for")
		}
		names = []string{opts.Hostname}
	}
	for i, n := range names {
		names[i] = normName(n)
	}
	defaultName := names[0]
	for _, n := range names {
		if n == normName(opts.Hostname) {
			defaultName = n
		}
	}

	var roots *x509.CertPool
	if a.CARoot != "" {
		pemBytes, err := os.ReadFile(a.CARoot)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.CARoot, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("%s: no PEM certificate found", a.CARoot)
		}
	}

	var solver *certmagic.DNS01Solver
	if a.challenge() == ChallengeDNS01 {
		var err error
		if solver, err = newDNSSolver(a.DNS, log); err != nil {
			return nil, err
		}
	}

	var eab *acme.EAB
	if a.EAB != nil {
		eab = &acme.EAB{KeyID: a.EAB.KeyID, MACKey: a.EAB.MACKey}
	}

	storageDir := filepath.Join(opts.StateDir, acmeDir)
	// The folder holds private keys: certmagic writes its files 0644 and
	// relies on the folder's mode, so make sure it is 0700.
	if err := os.MkdirAll(storageDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", storageDir, err)
	}
	if err := os.Chmod(storageDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", storageDir, err)
	}

	var storage certmagic.Storage = &certmagic.FileStorage{Path: storageDir}
	storageName := storageDir
	if opts.Storage != nil {
		storage, storageName = opts.Storage, fmt.Sprint(opts.Storage)
	}
	s := &acmeSource{names: names, log: log}
	s.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			return s.cfg, nil
		},
		RenewCheckInterval: a.RenewCheckInterval,
		Logger:             log.Named("cache"),
	})
	s.cfg = certmagic.New(s.cache, certmagic.Config{
		Storage:           storage,
		DefaultServerName: defaultName,
		// Like the static source: an unknown SNI name (an alias, an IP)
		// gets the default certificate rather than a failed handshake, so
		// the client can say what is wrong.
		FallbackServerName: defaultName,
		Logger:             log,
		// KeySource: certmagic's default is ECDSA P-256, our policy.
	})
	httpPort, alpnPort := a.HTTPPort, a.TLSALPNPort
	if httpPort == 0 {
		httpPort = certmagic.HTTPChallengePort
	}
	if alpnPort == 0 {
		alpnPort = certmagic.TLSALPNChallengePort
	}
	issuer := certmagic.NewACMEIssuer(s.cfg, certmagic.ACMEIssuer{
		CA:                      a.caURL(),
		TestCA:                  "", // never a second CA behind the operator's back
		Email:                   a.Email,
		Agreed:                  a.AgreeTOS,
		ExternalAccount:         eab,
		Profile:                 a.Profile,
		DisableHTTPChallenge:    a.challenge() != ChallengeHTTP01,
		DisableTLSALPNChallenge: a.challenge() != ChallengeTLSALPN01,
		ListenHost:              a.ListenHost,
		AltHTTPPort:             httpPort,
		AltTLSALPNPort:          alpnPort,
		TrustedRoots:            roots,
		Logger:                  log.Named("issuer"),
	})
	if solver != nil {
		// Assigned only when set: a nil *DNS01Solver in the interface field
		// would look like a configured solver.
		issuer.DNS01Solver = solver
	}
	s.cfg.Issuers = []certmagic.Issuer{issuer}

	log.Info("managing certificates",
		zap.Strings("names", names),
		zap.String("ca", a.caURL()),
		zap.String("challenge", a.challenge()),
		zap.String("storage", storageName))
	if err := s.cfg.ManageSync(ctx, names); err != nil {
		s.close()
		return nil, fmt.Errorf("tls.acme: no certificate could be obtained and none is stored: %w", err)
	}
	for n, t := range s.expiry() {
		log.Info("certificate ready", zap.String("name", n), zap.Time("not_after", t))
	}
	return s, nil
}

// newDNSSolver builds the DNS-01 solver for the configured provider.
func newDNSSolver(d *DNS, log *zap.Logger) (*certmagic.DNS01Solver, error) {
	var provider certmagic.DNSProvider
	switch d.Provider {
	case "rfc2136":
		secret := d.Key
		if d.KeyFile != "" {
			b, err := os.ReadFile(d.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", d.KeyFile, err)
			}
			secret = strings.TrimSpace(string(b))
		}
		alg := d.KeyAlg
		if alg == "" {
			alg = "hmac-sha256"
		}
		server := d.Server
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
		}
		provider = &rfc2136.Provider{KeyName: d.KeyName, KeyAlg: alg, Key: secret, Server: server}
	default:
		return nil, fmt.Errorf("tls.acme.dns.provider: %q is not a known provider", d.Provider)
	}
	return &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider:        provider,
		PropagationTimeout: d.PropagationTimeout,
		Resolvers:          d.Resolvers,
		Logger:             log.Named("dns01"),
	}}, nil
}

// getCertificate serves from certmagic's cache: the certificate for the SNI
// name, the default name's for clients without SNI, and the TLS-ALPN-01
// challenge certificate when the CA asks for acme-tls/1.
func (s *acmeSource) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cfg.GetCertificate(hello)
}

// expiry is the latest NotAfter among the cached certificates of each name.
func (s *acmeSource) expiry() map[string]time.Time {
	out := map[string]time.Time{}
	for _, n := range s.names {
		for _, c := range s.cache.AllMatchingCertificates(n) {
			if c.Leaf == nil {
				continue
			}
			if t, ok := out[n]; !ok || c.Leaf.NotAfter.After(t) {
				out[n] = c.Leaf.NotAfter
			}
		}
	}
	return out
}

// close stops background renewal and releases storage locks this process
// holds, so another instance (or the next start) is not kept waiting.
func (s *acmeSource) close() {
	s.cache.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	certmagic.CleanUpOwnLocks(ctx, s.log)
}
