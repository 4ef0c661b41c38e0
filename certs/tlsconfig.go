package certs

import "crypto/tls"

// ALPN protocol names.
const (
	// ALPNSMTP is offered on every listener. A client that offers ALPN
	// without "smtp" (an HTTPS client sent to a mail port by an attacker:
	// the ALPACA class) fails the handshake with no_application_protocol.
	// A client that offers no ALPN at all is served normally.
	ALPNSMTP = "smtp"
	// ALPNACMETLS1 is offered only while the TLS-ALPN-01 challenge is
	// configured (RFC 8737).
	ALPNACMETLS1 = "acme-tls/1"
)

// cipherSuites are the TLS 1.2 suites offered: ECDHE key exchange with an
// AEAD cipher only (no CBC, no RSA key exchange). TLS 1.3 suites are not
// configurable in Go and are all AEAD.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func minVersion(s string) uint16 {
	if s == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// newServerConfig builds the one *tls.Config shared by all listeners. The
// certificate is chosen per handshake by getCert, so a reload or a renewal
// takes effect on the next handshake without touching open sessions.
func newServerConfig(min uint16, alpn []string, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     min,
		CipherSuites:   cipherSuites,
		NextProtos:     alpn,
		GetCertificate: getCert,
		// Session tickets stay on (Go's default, keys rotated
		// automatically): resumption saves a full handshake for clients
		// that reconnect often.
		SessionTicketsDisabled: false,
	}
}
