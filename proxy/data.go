package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

var (
	errNUL     = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message contains NUL characters"}
	errBareEOL = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Message contains bare CR or LF line endings"}
)

// normalizer sits between the client's DATA and the stuffer. A
// bare LF or bare CR becomes CRLF (or, in reject mode, fails the message);
// a NUL fails the message. So the backend only ever sees CRLF line endings
// and no byte it might read as one: no end-of-data sequence a client hides
// from us can end the message early at the backend (SMTP smuggling, 2023).
type normalizer struct {
	w      io.Writer
	reject bool
	cr     bool // the last byte seen was a CR not yet followed by LF
}

var crlf = []byte("\r\n")

func (n *normalizer) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		if n.cr {
			// The CR seen last ends a line either way.
			if p[0] == '\n' {
				p = p[1:]
				done++
			} else if n.reject {
				return done, errBareEOL
			}
			n.cr = false
			if _, err := n.w.Write(crlf); err != nil {
				return done, err
			}
			continue
		}
		i := bytes.IndexAny(p, "\r\n\x00")
		if i < 0 {
			if _, err := n.w.Write(p); err != nil {
				return done, err
			}
			return done + len(p), nil
		}
		if i > 0 {
			if _, err := n.w.Write(p[:i]); err != nil {
				return done, err
			}
		}
		switch p[i] {
		case 0:
			return done + i, errNUL
		case '\r':
			n.cr = true
		case '\n':
			// A bare LF (a CRLF's LF is consumed above).
			if n.reject {
				return done + i, errBareEOL
			}
			if _, err := n.w.Write(crlf); err != nil {
				return done + i, err
			}
		}
		p = p[i+1:]
		done += i + 1
	}
	return done, nil
}

// flush ends a message whose last byte was a bare CR.
func (n *normalizer) flush() error {
	if !n.cr {
		return nil
	}
	n.cr = false
	if n.reject {
		return errBareEOL
	}
	_, err := n.w.Write(crlf)
	return err
}

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

// stuffer dot-stuffs the normalizer's CRLF-only output a chunk at a time (RFC
// 5321 4.5.2: a line that starts with "." gets one more) into a buffered
// writer on the backend connection. go-smtp's DATA writer does the same one
// byte at a time. A trailing CRLF is held back: forward sends the message's
// last CRLF together with the end-of-data dot.
type stuffer struct {
	w    *bufio.Writer
	mid  bool // inside a line: the next byte does not start one
	held int  // bytes of a trailing CRLF held back: 0, 1 ("\r") or 2
}

func (s *stuffer) Write(p []byte) (int, error) {
	n := len(p)
	if n == 0 {
		return 0, nil
	}
	if s.held == 1 && p[0] == '\n' {
		s.held, s.mid, p = 2, false, p[1:]
		if len(p) == 0 {
			return n, nil
		}
	}
	if s.held > 0 {
		// More follows: the held bytes were not the end.
		if _, err := s.w.Write(crlf[:s.held]); err != nil {
			return 0, err
		}
		s.held = 0
	}
	hold := 0
	if bytes.HasSuffix(p, crlf) {
		hold = 2
	} else if p[len(p)-1] == '\r' {
		hold = 1
	}
	p = p[:len(p)-hold]
	for len(p) > 0 {
		if !s.mid && p[0] == '.' {
			if err := s.w.WriteByte('.'); err != nil {
				return 0, err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := s.w.Write(p); err != nil {
				return 0, err
			}
			s.mid = true
			break
		}
		if _, err := s.w.Write(p[:i+1]); err != nil {
			return 0, err
		}
		s.mid = false
		p = p[i+1:]
	}
	if hold > 0 {
		s.held, s.mid = hold, hold == 1
	}
	return n, nil
}

// dataEnd ends the data (RFC 5321 4.1.1.4): the last line's CRLF, ".", CRLF.
var dataEnd = []byte("\r\n.\r\n")

// end writes the end of data in place of the held-back CRLF (or CR), so
// that the message's tail and the dot leave in one write. A last line
// without CRLF gets one, and so does an empty message, as with go-smtp's
// DATA writer.
func (s *stuffer) end() error {
	s.held, s.mid = 0, false
	_, err := s.w.Write(dataEnd)
	return err
}

// dataBufs are the buffers of one DATA transfer, pooled: a message costs no
// allocation for them.
type dataBufs struct {
	bw   *bufio.Writer // to the backend
	copy []byte        // from the client
}

const dataBufSize = 16 << 10 // one TLS record; with the spool, 96 KB per DATA in progress

var dataBufPool = sync.Pool{New: func() any {
	return &dataBufs{bw: bufio.NewWriterSize(nil, dataBufSize), copy: make([]byte, dataBufSize)}
}}
