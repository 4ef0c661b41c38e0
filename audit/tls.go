package audit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// tlsVersions are the versions probed one by one, oldest first. Go's TLS
// client cannot speak SSLv3 (removed in Go 1.14), so SSLv3 is reported as
// not tested rather than as refused.
var tlsVersions = []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13}

// sslv3Note is said in every versions finding, so nobody reads "refuses
// SSLv3" into a check the auditor cannot make.
const sslv3Note = "SSLv3 not tested (Go's TLS client cannot speak it)"

// clientTLSConfig is what a modern client would offer: Go's defaults. The
// chain is verified separately (verifyChain) so that a bad certificate is a
// finding, not the end of the check.
func (a *auditor) clientTLSConfig() *tls.Config {
	return &tls.Config{
		ServerName:         a.cfg.ServerName,
		InsecureSkipVerify: true, //nolint:gosec // verified by verifyChain, reported as a finding
	}
}

// probeTLSConfig offers exactly one version and every cipher suite Go
// knows, so that a server's acceptance of an old version is not hidden by
// Go's conservative default suites.
func (a *auditor) probeTLSConfig(version uint16) *tls.Config {
	cfg := a.clientTLSConfig()
	cfg.MinVersion, cfg.MaxVersion = version, version
	for _, s := range tls.CipherSuites() {
		cfg.CipherSuites = append(cfg.CipherSuites, s.ID)
	}
	for _, s := range tls.InsecureCipherSuites() {
		cfg.CipherSuites = append(cfg.CipherSuites, s.ID)
	}
	return cfg
}

// errNoTLS means the server does not offer STARTTLS/STLS at all.
var errNoTLS = errors.New("TLS not offered")

// errPreamble marks a failure before the TLS handshake started (the
// server's greeting or its answer to STARTTLS), as opposed to the handshake.
var errPreamble = errors.New("before the TLS handshake")

// openTLS connects to svc and brings the connection to the point just after
// a TLS handshake with cfg: at once for implicit TLS, else after the
// protocol's STARTTLS command. For SMTP the caller must EHLO again; for
// SMTPS, IMAPS and POP3S the greeting is still unread.
func (a *auditor) openTLS(ctx context.Context, svc Service, cfg *tls.Config) (*conn, tls.ConnectionState, error) {
	c, err := dial(ctx, a.dialAddr(svc.Port), a.cfg.Timeout)
	if err != nil {
		return nil, tls.ConnectionState{}, fmt.Errorf("%w: %w", errPreamble, err)
	}
	if !svc.Kind.implicitTLS() {
		if err := a.startTLSPreamble(c, svc); err != nil {
			c.Close()
			return nil, tls.ConnectionState{}, err
		}
	}
	st, err := c.startTLS(ctx, cfg)
	if err != nil {
		c.Close()
		return nil, st, err
	}
	return c, st, nil
}

// startTLSPreamble reads the greeting and asks for TLS in the protocol of
// svc (RFC 3207 for SMTP, RFC 3501 6.2.1 for IMAP, RFC 2595 4 for POP3).
func (a *auditor) startTLSPreamble(c *conn, svc Service) error {
	var err error
	switch svc.Kind {
	case SMTP:
		err = smtpStartTLS(c, a.ehloName(c))
	case IMAP:
		err = imapStartTLS(c)
	case POP3:
		err = pop3StartTLS(c)
	}
	if err != nil && !errors.Is(err, errNoTLS) {
		return fmt.Errorf("%w: %w", errPreamble, err)
	}
	return err
}

// checkTLSEndpoint reports on the handshake a modern client made (st, or
// the error it got), the certificate, and every TLS version's acceptance.
func (a *auditor) checkTLSEndpoint(ctx context.Context, svc Service, st tls.ConnectionState, hsErr error) []Finding {
	pre := svc.String()
	if hsErr != nil {
		return []Finding{{
			Grade: Fail, Check: pre + " tls", Detail: hsErr.Error(),
			Advice: "fix the server's TLS setup: a modern client cannot complete the handshake",
		}, a.checkVersions(ctx, svc)}
	}
	fs := []Finding{{
		Grade: OK, Check: pre + " tls",
		Detail: fmt.Sprintf("%s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)),
	}}
	fs = append(fs, a.checkCertificate(svc, st)...)
	fs = append(fs, a.checkVersions(ctx, svc))
	if f, ok := a.checkCiphers(ctx, svc); ok {
		fs = append(fs, f)
	}
	return fs
}

// isModernSuite: ECDHE key exchange with an AEAD cipher, what tlsguard's
// own TLS 1.2 policy allows.
func isModernSuite(id uint16) bool {
	name := tls.CipherSuiteName(id)
	return strings.HasPrefix(name, "TLS_ECDHE_") && (strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20"))
}

// isBrokenSuite: RC4 and 3DES (Sweet32), broken outright.
func isBrokenSuite(id uint16) bool {
	name := tls.CipherSuiteName(id)
	return strings.Contains(name, "RC4") || strings.Contains(name, "3DES")
}

// checkCiphers probes TLS 1.2 twice: once offering only RC4 and 3DES, once
// offering only the other legacy suites (CBC, static RSA key exchange). It
// reports nothing when TLS 1.2 itself is refused (a TLS 1.3-only server).
func (a *auditor) checkCiphers(ctx context.Context, svc Service) (Finding, bool) {
	var broken, legacy []uint16
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if !slices.Contains(s.SupportedVersions, tls.VersionTLS12) || isModernSuite(s.ID) {
			continue
		}
		if isBrokenSuite(s.ID) {
			broken = append(broken, s.ID)
		} else {
			legacy = append(legacy, s.ID)
		}
	}
	probe := func(suites []uint16) (string, error) {
		cfg := a.clientTLSConfig()
		cfg.MinVersion, cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, tls.VersionTLS12, suites
		c, st, err := a.openTLS(ctx, svc, cfg)
		if err != nil {
			return "", err
		}
		c.Close()
		return tls.CipherSuiteName(st.CipherSuite), nil
	}
	// Is TLS 1.2 on at all? (A modern-suite handshake.)
	modern := a.probeTLSConfig(tls.VersionTLS12)
	modern.CipherSuites = slices.DeleteFunc(modern.CipherSuites, func(id uint16) bool { return !isModernSuite(id) })
	c, _, err := a.openTLS(ctx, svc, modern)
	if err != nil {
		if _, lerr := probe(legacy); lerr != nil {
			return Finding{}, false
		}
	} else {
		c.Close()
	}

	f := Finding{Check: svc.String() + " tls 1.2 ciphers", Grade: OK, Detail: "only ECDHE with AEAD (GCM, ChaCha20)"}
	if name, err := probe(broken); err == nil {
		f.Grade = Fail
		f.Detail = "accepts " + name + " (RC4 and 3DES are broken)"
		f.Advice = "remove RC4 and 3DES suites"
		return f, true
	}
	if name, err := probe(legacy); err == nil {
		f.Detail = "accepts legacy " + name + " (CBC or RSA key exchange: no forward secrecy or padding-oracle prone)"
		f.Advice = "for TLS 1.2 allow only ECDHE with AES-GCM or ChaCha20-Poly1305"
		f.Grade = Warning
		if !svc.client() {
			f.Grade, f.Advice = Info, ""
			f.Detail += "; tolerable on port 25 for old senders"
		}
	}
	return f, true
}

// checkCertificate verifies the chain for the server name and reports the
// days left before the leaf expires.
func (a *auditor) checkCertificate(svc Service, st tls.ConnectionState) []Finding {
	pre := svc.String()
	if len(st.PeerCertificates) == 0 {
		return []Finding{{Grade: Fail, Check: pre + " certificate", Detail: "the server sent no certificate"}}
	}
	leaf := st.PeerCertificates[0]
	now := a.cfg.Now()
	var fs []Finding
	if err := verifyChain(st.PeerCertificates, a.cfg.RootCAs, a.cfg.ServerName, now); err != nil {
		fs = append(fs, Finding{
			Grade: Fail, Check: pre + " certificate", Detail: err.Error(),
			Advice: "serve a certificate for " + a.cfg.ServerName + " from a public CA (or ACME), with its intermediates",
		})
	} else {
		fs = append(fs, Finding{
			Grade: OK, Check: pre + " certificate",
			Detail: fmt.Sprintf("valid for %s, issued by %s", a.cfg.ServerName, issuerName(leaf)),
		})
	}
	days := int(leaf.NotAfter.Sub(now).Hours() / 24)
	f := Finding{Check: pre + " certificate expiry", Grade: OK,
		Detail: fmt.Sprintf("expires in %d days (%s)", days, leaf.NotAfter.UTC().Format(time.DateOnly))}
	switch {
	case now.After(leaf.NotAfter):
		f.Grade, f.Detail = Fail, fmt.Sprintf("expired %d days ago (%s)", -days, leaf.NotAfter.UTC().Format(time.DateOnly))
		f.Advice = "renew the certificate now, and automate renewal (ACME)"
	case days < 7:
		f.Grade, f.Advice = Fail, "renew the certificate now, and automate renewal (ACME)"
	case days < 30:
		f.Grade, f.Advice = Warning, "renew soon; automated renewal (ACME) renews 30 days ahead"
	}
	return append(fs, f)
}

// verifyChain checks certs (leaf first, then what the server sent as
// intermediates) against roots (nil: the system's) for name, at now.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, name string, now time.Time) error {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, DNSName: name, CurrentTime: now,
	})
	if err != nil {
		return fmt.Errorf("certificate chain: %w", err)
	}
	return nil
}

func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}

// checkVersions probes each TLS version on its own connection and grades
// what is accepted. TLS 1.0 and 1.1 are deprecated (RFC 8996): a fail on
// ports mail clients use, a warning on port 25, where old TLS still beats
// the plaintext an old sending MTA would otherwise fall back to.
func (a *auditor) checkVersions(ctx context.Context, svc Service) Finding {
	type result struct {
		accepted bool
		err      error
	}
	// One probe at a time: gentler on the server than a burst, and still
	// quick (a handshake each).
	results := make([]result, len(tlsVersions))
	for i, v := range tlsVersions {
		c, _, err := a.openTLS(ctx, svc, a.probeTLSConfig(v))
		if err == nil {
			c.Close()
			results[i].accepted = true
			continue
		}
		if errors.Is(err, errPreamble) || errors.Is(err, errNoTLS) {
			results[i].err = err
		}
	}

	var acc, ref, unk []string
	old, modern := false, false
	for i, v := range tlsVersions {
		name := tls.VersionName(v)
		switch r := results[i]; {
		case r.accepted:
			acc = append(acc, name)
			if v < tls.VersionTLS12 {
				old = true
			} else {
				modern = true
			}
		case r.err != nil:
			unk = append(unk, name+" ("+r.err.Error()+")")
		default:
			ref = append(ref, name)
		}
	}
	var parts []string
	if len(acc) > 0 {
		parts = append(parts, "accepts "+strings.Join(acc, ", "))
	}
	if len(ref) > 0 {
		parts = append(parts, "refuses "+strings.Join(ref, ", "))
	}
	if len(unk) > 0 {
		parts = append(parts, "could not test "+strings.Join(unk, ", "))
	}
	parts = append(parts, sslv3Note)
	f := Finding{Grade: OK, Check: svc.String() + " tls versions", Detail: strings.Join(parts, "; ")}
	switch {
	case len(acc) == 0 && len(unk) > 0:
		f.Grade = Warning
		f.Advice = "the version probes could not reach the handshake; rerun, or raise --timeout"
	case !modern:
		f.Grade = Fail
		f.Advice = "enable TLS 1.2 and 1.3; modern clients refuse anything older"
	case old && svc.client():
		f.Grade = Fail
		f.Advice = "disable TLS 1.0 and 1.1 (RFC 8996); require TLS 1.2 or newer on client ports"
	case old:
		f.Grade = Warning
		f.Advice = "disable TLS 1.0 and 1.1 (RFC 8996) once no sending MTA you care about needs them"
	}
	return f
}
