package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// certSet is an immutable set of certificates with SNI selection. A reload
// builds a new set and swaps it in whole.
type certSet struct {
	certs  []*tls.Certificate            // in config order; Leaf is set
	byName map[string][]*tls.Certificate // lower-case DNS name or "*.suffix"
	def    *tls.Certificate              // for clients without SNI or with an unknown name
}

// newCertSet indexes certs and picks as default the first that covers
// hostname, else the first.
func newCertSet(certs []*tls.Certificate, hostname string) *certSet {
	s := &certSet{certs: certs, byName: map[string][]*tls.Certificate{}}
	for _, c := range certs {
		for _, n := range c.Leaf.DNSNames {
			n = normName(n)
			s.byName[n] = append(s.byName[n], c)
		}
		for _, ip := range c.Leaf.IPAddresses {
			s.byName[ip.String()] = append(s.byName[ip.String()], c)
		}
	}
	if len(certs) > 0 {
		s.def = certs[0]
	}
	if hostname != "" {
		for _, c := range certs {
			if c.Leaf.VerifyHostname(hostname) == nil {
				s.def = c
				break
			}
		}
	}
	return s
}

// get selects by SNI: an exact name, then a wildcard for the first label,
// then the default. Among several candidates it prefers one the client
// supports (an RSA and an ECDSA pair for the same name).
func (s *certSet) get(hello *tls.ClientHelloInfo) *tls.Certificate {
	name := normName(hello.ServerName)
	if name != "" {
		if c := pick(hello, s.byName[name]); c != nil {
			return c
		}
		if _, rest, ok := strings.Cut(name, "."); ok && rest != "" {
			if c := pick(hello, s.byName["*."+rest]); c != nil {
				return c
			}
		}
	}
	return s.def
}

func pick(hello *tls.ClientHelloInfo, cands []*tls.Certificate) *tls.Certificate {
	for _, c := range cands {
		if hello.SupportsCertificate(c) == nil {
			return c
		}
	}
	if len(cands) > 0 {
		return cands[0]
	}
	return nil
}

func normName(n string) string {
	return strings.ToLower(strings.TrimSuffix(n, "."))
}

// expiry returns NotAfter per DNS name (and IP); for a name served by several
// certificates the latest, since the best one is the one that matters.
func (s *certSet) expiry() map[string]time.Time {
	out := map[string]time.Time{}
	for _, c := range s.certs {
		names := c.Leaf.DNSNames
		if len(names) == 0 {
			names = []string{IPOnly}
		}
		for _, n := range names {
			n = normName(n)
			if t, ok := out[n]; !ok || c.Leaf.NotAfter.After(t) {
				out[n] = c.Leaf.NotAfter
			}
		}
	}
	return out
}

// loadPair reads one PEM pair. Errors name the file at fault.
func loadPair(p Pair, now time.Time) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(p.Cert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Cert, err)
	}
	keyPEM, err := os.ReadFile(p.Key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Key, err)
	}
	return parsePair(certPEM, keyPEM, p.Cert, p.Key, now)
}

// parsePair parses and checks a PEM pair; certName and keyName name the
// sources in errors.
func parsePair(certPEM, keyPEM []byte, certName, keyName string, now time.Time) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's messages say which side failed ("failed to find
		// any PEM data in key input", "private key does not match public
		// key"): name both files, cert first.
		return nil, fmt.Errorf("%s (key %s): %w", certName, keyName, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", certName, err)
		}
	}
	if now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("%s: certificate expired at %s", certName, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(c.Leaf.DNSNames) == 0 && len(c.Leaf.IPAddresses) == 0 {
		return nil, fmt.Errorf("%s: certificate has no DNS names or IP addresses (subjectAltName); clients will refuse it", certName)
	}
	return &c, nil
}

// loadPairs loads every pair; the first error wins and nothing is returned,
// so a reload is all or nothing.
func loadPairs(pairs []Pair, now time.Time) ([]*tls.Certificate, error) {
	out := make([]*tls.Certificate, 0, len(pairs))
	var errs []error
	for _, p := range pairs {
		c, err := loadPair(p, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// covers reports whether any certificate in s is valid for name.
func (s *certSet) covers(name string) bool {
	if ip := net.ParseIP(name); ip != nil {
		_, ok := s.byName[ip.String()]
		return ok
	}
	for _, c := range s.certs {
		if c.Leaf.VerifyHostname(name) == nil {
			return true
		}
	}
	return false
}

// CheckPair loads one pair as serving would, without serving it: for
// `tlsguard check`. The error names the file at fault.
func CheckPair(p Pair) error {
	_, err := loadPair(p, time.Now())
	return err
}
