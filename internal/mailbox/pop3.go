package mailbox

import (
	"context"
	"errors"
	"strings"

	"github.com/tlsguard/tlsguard/internal/mailwire"
)

// pop3Caps is the CAPA list (RFC 2449) before login: before TLS only STLS
// (RFC 2595 4), inside TLS the logins tlsguard checks. RESP-CODES: the
// replies carry [AUTH] and [SYS/TEMP] (RFC 3206).
func (ss *session) pop3Caps() string {
	if ss.tls == "" {
		return "+OK Capability list follows\r\nSTLS\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"
	}
	return "+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"
}

// pop3 runs a POP3 session up to login, then splices it to the backend.
func (ss *session) pop3() {
	if ss.reply("+OK "+ss.srv.cfg.Hostname+" POP3 ready\r\n") != nil {
		return
	}
	var user string // from USER, for the PASS that follows
	for {
		line, err := ss.readLine()
		switch {
		case errors.Is(err, errLineTooLong):
			ss.setEnd("protocol_error")
			ss.reply("-ERR Line too long\r\n")
			return
		case err != nil:
			ss.endFromError(err)
			if isTimeout(err) {
				ss.reply("-ERR Autologout; idle for too long\r\n")
			}
			return
		}
		word, arg, _ := strings.Cut(string(line), " ")
		if !isAlpha(word) || len(word) > 4 || httpRequest(line) {
			ss.setEnd("protocol_error")
			ss.reply("-ERR Protocol error\r\n")
			return
		}
		word = strings.ToUpper(word)
		if ss.tls == "" {
			switch word {
			case "USER", "PASS", "APOP", "AUTH":
				// RFC 2595 4: a server may refuse logins before STLS.
				ss.reply("-ERR Use STLS first\r\n")
				if ss.badCommand() {
					return
				}
				continue
			}
		}
		switch word {
		case "CAPA":
			ss.reply(ss.pop3Caps())
		case "QUIT":
			ss.setEnd("client_quit")
			ss.reply("+OK Bye\r\n")
			return
		case "STLS":
			if ss.tls != "" || ss.c.Implicit {
				ss.reply("-ERR TLS is already active\r\n")
				continue
			}
			if ss.reply("+OK Begin TLS negotiation\r\n") != nil || !ss.handshake(ss.c.Conn) {
				return
			}
			user = ""
		case "USER":
			if arg == "" {
				ss.reply("-ERR USER takes a user name\r\n")
				continue
			}
			user = arg
			ss.reply("+OK\r\n")
		case "PASS":
			if user == "" {
				ss.reply("-ERR USER first\r\n")
				if ss.badCommand() {
					return
				}
				continue
			}
			u := user
			user = ""
			if ss.pop3Login("USER", "", u, arg) {
				return
			}
		case "AUTH":
			if done := ss.pop3Auth(arg); done {
				return
			}
		default:
			ss.reply("-ERR Command unknown or not permitted before login\r\n")
			if ss.badCommand() {
				return
			}
		}
	}
}

// pop3Auth handles AUTH (RFC 5034) inside TLS; done means the session is
// over.
func (ss *session) pop3Auth(arg string) (done bool) {
	if arg == "" {
		return ss.reply("+OK\r\nPLAIN\r\n.\r\n") != nil
	}
	mech, resp, hasIR := strings.Cut(arg, " ")
	if strings.ToUpper(mech) != "PLAIN" {
		ss.reply("-ERR Unsupported authentication mechanism\r\n")
		return ss.badCommand()
	}
	if !hasIR {
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
	if resp == "*" {
		return ss.reply("-ERR Authentication cancelled\r\n") != nil
	}
	identity, user, pass, ok := decodePlain(resp)
	if !ok {
		user = ""
	}
	return ss.pop3Login("PLAIN", identity, user, pass)
}

// pop3Login checks the credentials, logs in to the backend and splices;
// done means the session is over.
func (ss *session) pop3Login(mech, identity, user, pass string) (done bool) {
	switch ss.check(mech, identity, user, pass) {
	case loginFailed:
		return ss.reply("-ERR [AUTH] Authentication failed\r\n") != nil
	case loginHangUp:
		ss.reply("-ERR [AUTH] Authentication failed; too many failed logins, try again later\r\n")
		return true
	case loginTryLater:
		return ss.reply("-ERR [SYS/TEMP] Temporary authentication failure, try again later\r\n") != nil
	}
	b, login, err := mailwire.LoginPOP3(context.Background(), ss.srv.cfg.Backend.wire(ss.srv.cfg.Backend.POP3), user, pass)
	if err != nil {
		ss.backendFailed(mech, err)
		return ss.reply("-ERR [SYS/TEMP] Mailbox server unavailable, try again later\r\n") != nil
	}
	backend, br := b.Detach()
	ss.mu.Lock()
	ss.backend = backend
	ss.mu.Unlock()
	if ss.reply(login.OK+"\r\n") != nil {
		return true
	}
	ss.splice(backend, br, pop3Idle)
	return true
}
