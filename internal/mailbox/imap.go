package mailbox

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/mailwire"
)

// Errors that end an IMAP session before login with "* BYE".
var (
	errLiteralTooLarge = errors.New("literal too large")
	errSyntax          = errors.New("not an IMAP command")
	// errSyncLiteral: a synchronising literal before TLS, which would need
	// a "+" that invites a password in clear.
	errSyncLiteral = errors.New("literal before TLS")
)

// imapCaps are the capabilities before login (RFC 9051 7.2.2): before TLS
// only STARTTLS, with LOGINDISABLED (RFC 9051 6.2.3) and no AUTH=; inside
// TLS, the logins tlsguard checks.
func (ss *session) imapCaps() string {
	if ss.tls == "" {
		return "IMAP4rev1 STARTTLS LOGINDISABLED"
	}
	return "IMAP4rev1 SASL-IR AUTH=PLAIN ID"
}

// imap runs an IMAP session up to login, then splices it to the backend.
func (ss *session) imap() {
	if ss.reply("* OK [CAPABILITY "+ss.imapCaps()+"] "+ss.srv.cfg.Hostname+" IMAP ready\r\n") != nil {
		return
	}
	for {
		tag, name, args, err := ss.readIMAP()
		switch {
		case errors.Is(err, errSyncLiteral):
			ss.reply(tag + " NO [PRIVACYREQUIRED] Use STARTTLS first\r\n")
			if ss.badCommand() {
				return
			}
			continue
		case errors.Is(err, errLineTooLong):
			ss.bye("Line too long", "protocol_error")
			return
		case errors.Is(err, errLiteralTooLarge):
			ss.bye("Literal too large", "protocol_error")
			return
		case errors.Is(err, errSyntax):
			ss.bye("Protocol error", "protocol_error")
			return
		case err != nil:
			ss.endFromError(err)
			if isTimeout(err) {
				ss.reply("* BYE Autologout; idle for too long\r\n")
			}
			return
		}
		switch name {
		case "CAPABILITY":
			ss.reply("* CAPABILITY " + ss.imapCaps() + "\r\n" + tag + " OK CAPABILITY completed\r\n")
		case "NOOP":
			ss.reply(tag + " OK NOOP completed\r\n")
		case "ID": // RFC 2971: the server may answer NIL
			ss.reply("* ID NIL\r\n" + tag + " OK ID completed\r\n")
		case "LOGOUT":
			ss.setEnd("client_quit")
			ss.reply("* BYE Logging out\r\n" + tag + " OK LOGOUT completed\r\n")
			return
		case "STARTTLS":
			if ss.tls != "" || ss.c.Implicit {
				ss.reply(tag + " BAD TLS is already active\r\n")
				continue
			}
			if ss.reply(tag+" OK Begin TLS negotiation now\r\n") != nil || !ss.handshake(ss.c.Conn) {
				return
			}
		case "LOGIN", "AUTHENTICATE":
			if ss.tls == "" {
				// RFC 9051 6.2.3: with LOGINDISABLED, LOGIN is refused;
				// RFC 5530 names the reason.
				ss.reply(tag + " NO [PRIVACYREQUIRED] Use STARTTLS first\r\n")
				continue
			}
			if done := ss.imapLogin(tag, name, args); done {
				return
			}
		default:
			ss.reply(tag + " BAD Command unknown or not permitted before login\r\n")
			if ss.badCommand() {
				return
			}
		}
	}
}

// badCommand counts an unknown or refused command; past maxBad the
// session ends.
func (ss *session) badCommand() bool {
	ss.bad++
	if ss.bad < maxBad {
		return false
	}
	if ss.c.Protocol == IMAP {
		ss.bye("Too many bad commands", "protocol_error")
	} else {
		ss.setEnd("protocol_error")
		ss.reply("-ERR Too many bad commands\r\n")
	}
	return true
}

// bye ends an IMAP session with an untagged BYE.
func (ss *session) bye(text, end string) {
	ss.setEnd(end)
	ss.reply("* BYE " + text + "\r\n")
}

// imapLogin handles LOGIN and AUTHENTICATE inside TLS; done means the
// session is over (spliced, or hung up).
func (ss *session) imapLogin(tag, name string, args []string) (done bool) {
	var identity, user, pass, mech string
	switch name {
	case "LOGIN":
		mech = "LOGIN"
		if len(args) != 2 {
			ss.reply(tag + " BAD LOGIN takes a user name and a password\r\n")
			return ss.badCommand()
		}
		user, pass = args[0], args[1]
	case "AUTHENTICATE":
		if len(args) == 0 || len(args) > 2 {
			ss.reply(tag + " BAD AUTHENTICATE takes a mechanism and an optional initial response\r\n")
			return ss.badCommand()
		}
		mech = strings.ToUpper(args[0])
		if mech != "PLAIN" {
			ss.reply(tag + " NO Unsupported authentication mechanism\r\n")
			return ss.badCommand()
		}
		var resp string
		if len(args) == 2 {
			resp = args[1] // SASL-IR (RFC 4959)
		} else {
			if ss.reply("+ \r\n") != nil {
				return true
			}
			line, err := ss.readLine()
			if err != nil {
				ss.endFromError(err)
				return true
			}
			resp = string(line)
		}
		if resp == "*" { // RFC 9051 6.2.2: the client cancels
			ss.reply(tag + " BAD Authentication cancelled\r\n")
			return false
		}
		var ok bool
		identity, user, pass, ok = decodePlain(resp)
		if !ok {
			user = "" // a malformed exchange costs the address, as a bad name does
		}
	}
	switch ss.check(mech, identity, user, pass) {
	case loginFailed:
		return ss.reply(tag+" NO [AUTHENTICATIONFAILED] Authentication failed\r\n") != nil
	case loginHangUp:
		ss.reply(tag + " NO [AUTHENTICATIONFAILED] Authentication failed\r\n* BYE Too many failed logins, try again later\r\n")
		return true
	case loginTryLater:
		return ss.reply(tag+" NO [UNAVAILABLE] Temporary authentication failure, try again later\r\n") != nil
	}
	b, login, err := mailwire.LoginIMAP(context.Background(), ss.srv.cfg.Backend.wire(ss.srv.cfg.Backend.IMAP), user, pass)
	if err != nil {
		ss.backendFailed(mech, err)
		return ss.reply(tag+" NO [UNAVAILABLE] Mailbox server unavailable, try again later\r\n") != nil
	}
	backend, br := b.Detach()
	ss.mu.Lock()
	ss.backend = backend
	ss.mu.Unlock()
	var out strings.Builder
	for _, l := range login.Untagged {
		out.WriteString(filterCaps(l) + "\r\n")
	}
	out.WriteString(tag + " " + filterCaps(login.OK) + "\r\n")
	if ss.reply(out.String()) != nil {
		return true
	}
	ss.splice(backend, br, imapIdle)
	return true
}

// backendFailed logs and counts a backend that could not be logged in to
// after the sources accepted the credentials.
func (ss *session) backendFailed(mech string, err error) {
	ss.srv.cfg.Metrics.logins.WithLabelValues(ss.c.Listener, string(ss.c.Protocol), mech, "backend_error").Inc()
	msg := "mailbox backend unavailable"
	if errors.Is(err, mailwire.ErrRefused) {
		msg = "mailbox backend refused a login the auth sources accepted"
	}
	ss.srv.log.Error(msg, zap.String("session", ss.c.ID), zap.String("listener", ss.c.Listener),
		zap.String("protocol", string(ss.c.Protocol)), zap.Error(err))
}

// decodePlain splits a SASL PLAIN response (RFC 4616): base64 of
// authzid NUL authcid NUL password.
func decodePlain(resp string) (identity, user, pass string, ok bool) {
	if resp == "=" { // RFC 4959: an empty initial response
		return "", "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		return "", "", "", false
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// filterCaps removes from a CAPABILITY response (untagged, or a response
// code) what tlsguard has already done for the client: STARTTLS and
// LOGINDISABLED mean nothing once it is logged in over TLS.
func filterCaps(line string) string {
	if !strings.Contains(strings.ToUpper(line), "CAPABILITY") {
		return line
	}
	words := strings.Split(line, " ")
	out := words[:0]
	for _, w := range words {
		core, bracket := strings.CutSuffix(w, "]")
		switch strings.ToUpper(core) {
		case "STARTTLS", "LOGINDISABLED":
			if bracket && len(out) > 0 {
				out[len(out)-1] += "]"
			}
			continue
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

// maxArgs bounds the arguments of a command before login (ID sends a list
// of field-value pairs, RFC 2971 3.1: at most 30 of them).
const maxArgs = 64

// readIMAP reads one command before login: its tag, its name (upper case)
// and its arguments, atoms, quoted strings and literals alike, as strings.
// Literals are bounded by maxLiteral; a synchronising one is invited with
// "+" only inside TLS.
func (ss *session) readIMAP() (tag, name string, args []string, err error) {
	line, err := ss.readLine()
	if err != nil {
		return "", "", nil, err
	}
	rest := string(line)
	tag, rest, _ = strings.Cut(rest, " ")
	name, rest, _ = strings.Cut(rest, " ")
	if !validTag(tag) || !isAlpha(name) || httpRequest(line) {
		return "", "", nil, errSyntax
	}
	name = strings.ToUpper(name)
	for rest != "" {
		if len(args) > maxArgs {
			return tag, name, nil, errSyntax
		}
		switch rest[0] {
		case ' ':
			rest = rest[1:]
		case '"':
			s, n, ok := unquote(rest)
			if !ok {
				return tag, name, nil, errSyntax
			}
			args = append(args, s)
			rest = rest[n:]
		case '{':
			if !strings.HasSuffix(rest, "}") {
				return tag, name, nil, errSyntax
			}
			spec := rest[1 : len(rest)-1]
			spec, nonSync := strings.CutSuffix(spec, "+")
			n, err := strconv.Atoi(spec)
			if err != nil || n < 0 {
				return tag, name, nil, errSyntax
			}
			if n > maxLiteral {
				return tag, name, nil, errLiteralTooLarge
			}
			if !nonSync {
				if ss.tls == "" {
					return tag, name, nil, errSyncLiteral
				}
				if err := ss.reply("+ Ready for literal data\r\n"); err != nil {
					return tag, name, nil, err
				}
			}
			b, err := ss.readFull(n)
			if err != nil {
				return tag, name, nil, err
			}
			args = append(args, string(b))
			line, err := ss.readLine()
			if err != nil {
				return tag, name, nil, err
			}
			rest = string(line)
		default:
			atom, after, _ := strings.Cut(rest, " ")
			args = append(args, atom)
			rest = after
		}
	}
	return tag, name, args, nil
}

// unquote reads an IMAP quoted string at the start of s; n is its length
// in s.
func unquote(s string) (out string, n int, ok bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 >= len(s) || (s[i+1] != '\\' && s[i+1] != '"') {
				return "", 0, false
			}
			b.WriteByte(s[i+1])
			i++
		case '"':
			return b.String(), i + 1, true
		case 0:
			return "", 0, false
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, false
}

// validTag: a tag is printable ASCII without the characters RFC 9051 9
// excludes (tag = 1*<any ASTRING-CHAR except "+">).
func validTag(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\+`, c) >= 0 {
			return false
		}
	}
	return true
}

// httpRequest reports whether line looks like an HTTP request line (a
// browser made to talk to a mail port, the cross-protocol attacks).
func httpRequest(line []byte) bool {
	i := strings.LastIndexByte(string(line), ' ')
	return i > 0 && strings.HasPrefix(string(line[i+1:]), "HTTP/")
}

func isAlpha(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}
