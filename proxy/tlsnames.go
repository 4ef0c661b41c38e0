package proxy

import "crypto/tls"

// tlsVersionWord names a TLS version as Postfix writes it in Received
// headers ("TLSv1.3"), which mail tooling already parses.
func tlsVersionWord(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1"
	}
	return tls.VersionName(v)
}

func cipherName(id uint16) string { return tls.CipherSuiteName(id) }
