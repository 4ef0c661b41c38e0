package mailbox

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// errBackendRefused: the backend said no to credentials the sources took.
var errBackendRefused = errors.New("backend refused the login")

// backendConn is the connection to the legacy mailbox server while
// tlsguard logs in; every step is bounded by the backend timeout.
type backendConn struct {
	conn    net.Conn
	r       *bufio.Reader
	addr    string
	timeout time.Duration
}

// dialBackend connects to addr, with TLS as configured, and returns once the
// connection is ready for the greeting (implicit TLS) or the plaintext
// greeting (none, starttls: the caller upgrades).
func dialBackend(ctx context.Context, cfg BackendConfig, addr string) (*backendConn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mailbox backend %s: %w", addr, err)
	}
	if cfg.TLS == "implicit" {
		tc := tls.Client(c, cfg.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("mailbox backend %s: TLS: %w", addr, err)
		}
		c = tc
	}
	return &backendConn{conn: c, r: bufio.NewReaderSize(c, maxLine), addr: addr, timeout: cfg.Timeout}, nil
}

// startTLS upgrades the connection after the backend agreed to STARTTLS/STLS.
func (b *backendConn) startTLS(cfg *tls.Config) error {
	tc := tls.Client(b.conn, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return b.errorf("TLS: %w", err)
	}
	b.conn, b.r = tc, bufio.NewReaderSize(tc, maxLine)
	return nil
}

func (b *backendConn) errorf(format string, args ...any) error {
	return fmt.Errorf("mailbox backend %s: "+format, append([]any{b.addr}, args...)...)
}

// line reads one line from the backend, without CRLF.
func (b *backendConn) line() (string, error) {
	b.conn.SetReadDeadline(time.Now().Add(b.timeout))
	l, err := b.r.ReadSlice('\n')
	if err != nil {
		return "", b.errorf("reading: %w", err)
	}
	return strings.TrimRight(string(l), "\r\n"), nil
}

func (b *backendConn) send(s string) error {
	b.conn.SetWriteDeadline(time.Now().Add(b.timeout))
	if _, err := b.conn.Write([]byte(s)); err != nil {
		return b.errorf("writing: %w", err)
	}
	return nil
}

// ready clears the deadlines the login set, for the copy to set its own.
func (b *backendConn) ready() {
	b.conn.SetReadDeadline(time.Time{})
	b.conn.SetWriteDeadline(time.Time{})
}

// imapTag tags tlsguard's own commands to the backend.
const imapTag = "tg1"

// imapLogin dials the IMAP backend and logs in as user. It returns the
// lines to pass on to the client (untagged responses) and the text of the
// backend's tagged OK (with its CAPABILITY response code, if any).
func imapLogin(ctx context.Context, cfg BackendConfig, user, pass string) (b *backendConn, untagged []string, ok string, err error) {
	b, err = dialBackend(ctx, cfg, cfg.IMAP)
	if err != nil {
		return nil, nil, "", err
	}
	defer func() {
		if err != nil {
			b.conn.Close()
		}
	}()
	greeting, err := b.line()
	if err != nil {
		return nil, nil, "", err
	}
	if !strings.HasPrefix(greeting, "* OK") {
		return nil, nil, "", b.errorf("greeting %q", trimLine(greeting))
	}
	literalPlus := strings.Contains(strings.ToUpper(greeting), "LITERAL+")
	if cfg.TLS == "starttls" {
		if _, _, err := b.imapCommand("STARTTLS"); err != nil {
			return nil, nil, "", err
		}
		if err := b.startTLS(cfg.TLSConfig); err != nil {
			return nil, nil, "", err
		}
		literalPlus = false // capabilities may differ inside TLS; stay safe
	}
	// LOGIN's arguments: quoted strings where they allow it, else literals
	// (RFC 9051 4.3); a synchronising literal waits for "+".
	var sb strings.Builder
	sb.WriteString(imapTag + " LOGIN ")
	args := []string{user, pass}
	for i, a := range args {
		if quotable(a) {
			sb.WriteString(quote(a))
		} else {
			if literalPlus {
				sb.WriteString("{" + strconv.Itoa(len(a)) + "+}\r\n" + a)
			} else {
				sb.WriteString("{" + strconv.Itoa(len(a)) + "}\r\n")
				if err := b.send(sb.String()); err != nil {
					return nil, nil, "", err
				}
				sb.Reset()
				l, err := b.line()
				if err != nil {
					return nil, nil, "", err
				}
				if !strings.HasPrefix(l, "+") {
					return nil, nil, "", errBackendRefused
				}
				sb.WriteString(a)
			}
		}
		if i == 0 {
			sb.WriteString(" ")
		}
	}
	sb.WriteString("\r\n")
	if err := b.send(sb.String()); err != nil {
		return nil, nil, "", err
	}
	for {
		l, err := b.line()
		if err != nil {
			return nil, nil, "", err
		}
		if strings.HasPrefix(l, "* ") {
			untagged = append(untagged, l)
			continue
		}
		if rest, found := strings.CutPrefix(l, imapTag+" "); found {
			if strings.HasPrefix(strings.ToUpper(rest), "OK") {
				b.ready()
				return b, untagged, rest, nil
			}
			return nil, nil, "", fmt.Errorf("%w: %s", errBackendRefused, trimLine(rest))
		}
	}
}

// imapCommand sends one command without arguments and waits for its OK.
func (b *backendConn) imapCommand(cmd string) ([]string, string, error) {
	if err := b.send(imapTag + " " + cmd + "\r\n"); err != nil {
		return nil, "", err
	}
	var untagged []string
	for {
		l, err := b.line()
		if err != nil {
			return nil, "", err
		}
		if rest, found := strings.CutPrefix(l, imapTag+" "); found {
			if strings.HasPrefix(strings.ToUpper(rest), "OK") {
				return untagged, rest, nil
			}
			return nil, "", b.errorf("%s: %q", cmd, trimLine(rest))
		}
		untagged = append(untagged, l)
	}
}

// quotable: s fits an IMAP quoted string (7-bit, no CR, LF or NUL).
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' || c >= 0x80 {
			return false
		}
	}
	return true
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// pop3Login dials the POP3 backend and logs in as user with USER and PASS
// (RFC 1939 7). It returns the backend's +OK line to PASS.
func pop3Login(ctx context.Context, cfg BackendConfig, user, pass string) (b *backendConn, ok string, err error) {
	b, err = dialBackend(ctx, cfg, cfg.POP3)
	if err != nil {
		return nil, "", err
	}
	defer func() {
		if err != nil {
			b.conn.Close()
		}
	}()
	greeting, err := b.line()
	if err != nil {
		return nil, "", err
	}
	if !strings.HasPrefix(greeting, "+OK") {
		return nil, "", b.errorf("greeting %q", trimLine(greeting))
	}
	if cfg.TLS == "starttls" {
		if _, err := b.pop3Command("STLS", false); err != nil {
			return nil, "", err
		}
		if err := b.startTLS(cfg.TLSConfig); err != nil {
			return nil, "", err
		}
	}
	if strings.ContainsAny(user+pass, "\r\n\x00") {
		return nil, "", errBackendRefused
	}
	if _, err := b.pop3Command("USER "+user, true); err != nil {
		return nil, "", err
	}
	ok, err = b.pop3Command("PASS "+pass, true)
	if err != nil {
		return nil, "", err
	}
	b.ready()
	return b, ok, nil
}

// pop3Command sends a command and reads its one-line reply; refused says
// a -ERR means the login was refused rather than a broken backend.
func (b *backendConn) pop3Command(cmd string, login bool) (string, error) {
	if err := b.send(cmd + "\r\n"); err != nil {
		return "", err
	}
	l, err := b.line()
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(l, "+OK") {
		return l, nil
	}
	if login {
		return "", fmt.Errorf("%w: %s", errBackendRefused, trimLine(l))
	}
	word, _, _ := strings.Cut(cmd, " ")
	return "", b.errorf("%s: %q", word, trimLine(l))
}

// trimLine shortens a backend line for a log.
func trimLine(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}
