package upstream

import (
	"bufio"
	"bytes"
	"io"
	"sync"

	"github.com/emersion/go-smtp"
)

// Refusals of a message whose bytes cannot reach the backend safely.
var (
	ErrNUL            = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message contains NUL characters"}
	ErrBareLineEnding = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Message contains bare CR or LF line endings"}
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
				return done, ErrBareLineEnding
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
			return done + i, ErrNUL
		case '\r':
			n.cr = true
		case '\n':
			// A bare LF (a CRLF's LF is consumed above).
			if n.reject {
				return done + i, ErrBareLineEnding
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
		return ErrBareLineEnding
	}
	_, err := n.w.Write(crlf)
	return err
}

// stuffer dot-stuffs the normalizer's CRLF-only output a chunk at a time (RFC
// 5321 4.5.2: a line that starts with "." gets one more) into a buffered
// writer on the backend connection. go-smtp's DATA writer does the same one
// byte at a time. A trailing CRLF is held back: Tx.Data sends the message's
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

// dataBufs are the buffers and writers of one DATA transfer, pooled: a
// message costs no allocation for them.
type dataBufs struct {
	bw   *bufio.Writer // to the backend
	copy []byte        // from the client
	st   stuffer
	nw   normalizer
}

const dataBufSize = 16 << 10 // one TLS record; with the spool, 96 KB per DATA in progress

var dataBufPool = sync.Pool{New: func() any {
	return &dataBufs{bw: bufio.NewWriterSize(nil, dataBufSize), copy: make([]byte, dataBufSize)}
}}
