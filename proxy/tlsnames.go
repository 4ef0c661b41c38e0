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

// cipherNames is built once: tls.CipherSuiteName builds the whole suite list
// on every call, and cipherName runs three times per message.
var cipherNames = func() map[uint16]string {
	m := map[uint16]string{}
	for _, list := range [][]*tls.CipherSuite{tls.CipherSuites(), tls.InsecureCipherSuites()} {
		for _, cs := range list {
			m[cs.ID] = cs.Name
		}
	}
	return m
}()

// cipherName names a cipher suite as crypto/tls does ("TLS_AES_128_GCM_SHA256").
func cipherName(id uint16) string {
	if n, ok := cipherNames[id]; ok {
		return n
	}
	return tls.CipherSuiteName(id) // "0x1234"
}
