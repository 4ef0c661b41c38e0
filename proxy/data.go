package proxy

import (
	"fmt"
	"strings"
	"time"
)

// receivedHeader is the trace header for the backend (RFC 5321 4.4), with
// the RFC 3848 protocol word and the TLS version and cipher.
func receivedHeader(s *session, tx *transaction) string {
	proto := "ESMTP"
	switch {
	case s.tls != nil && s.user != "":
		proto = "ESMTPSA"
	case s.tls != nil:
		proto = "ESMTPS"
	case s.user != "":
		proto = "ESMTPA"
	}
	var b strings.Builder
	b.Grow(256)
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (tlsguard) with %s",
		safeHeloName(s.helo), s.conn.ip, s.srv.cfg.Hostname, proto)
	if s.tls != nil {
		fmt.Fprintf(&b, "\r\n\t(using %s with cipher %s)", tlsVersionWord(s.tls.Version), cipherName(s.tls.CipherSuite))
	}
	fmt.Fprintf(&b, "\r\n\tid %s", s.conn.id)
	if len(tx.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", tx.rcpts[0].String())
	}
	fmt.Fprintf(&b, "; %s\r\n", time.Now().Format(time.RFC1123Z))
	return b.String()
}

// safeHeloName keeps the client's HELO name printable and short: it is the
// client's text and ends up in a header other software parses.
func safeHeloName(h string) string {
	if len(h) > 255 {
		h = h[:255]
	}
	ok := func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_:[]", r)
	}
	var b strings.Builder
	for _, r := range h {
		if ok(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}
