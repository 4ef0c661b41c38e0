package audit

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// injectionWait is how long the injection probe waits, after the
// handshake, for a reply it did not ask for.
const injectionWait = 1500 * time.Millisecond

// checkSTARTTLSInjection sends the protocol's STARTTLS command and a NOOP in
// one packet. A server that keeps the plaintext NOOP buffered and runs it
// inside the TLS session lets a man in the middle inject commands into the
// encrypted session (CVE-2011-0411 and its IMAP/POP3 siblings). RFC 3207
// 4.2 and RFC 2595 3.1: the server discards what it knew before TLS; a
// correct server answers the NOOP before the handshake or not at all.
func (a *auditor) checkSTARTTLSInjection(ctx context.Context, svc Service) Finding {
	f := Finding{Check: svc.String() + " starttls injection"}
	untested := func(err error) Finding {
		f.Grade, f.Detail = Warning, "not tested: "+err.Error()
		f.Advice = "rerun; if it persists, check the server's STARTTLS by hand"
		return f
	}
	c, err := dial(ctx, a.dialAddr(svc.Port), a.cfg.Timeout)
	if err != nil {
		return untested(err)
	}
	defer c.Close()

	var pair string
	var upgraded func() error // reads the answer to the STARTTLS command
	switch svc.Kind {
	case SMTP:
		if err := smtpGreeting(c); err != nil {
			return untested(err)
		}
		if _, err := smtpHello(c, a.ehloName(c)); err != nil {
			return untested(err)
		}
		pair = "STARTTLS\r\nNOOP\r\n"
		upgraded = func() error {
			code, msg, err := c.smtpReply()
			if err == nil && code != 220 {
				err = fmt.Errorf("STARTTLS answered %d %s", code, oneLine(msg))
			}
			return err
		}
	case IMAP:
		if _, err := imapGreeting(c); err != nil {
			return untested(err)
		}
		pair = "a0 STARTTLS\r\na1 NOOP\r\n"
		upgraded = func() error {
			_, status, text, err := imapTagged(c, "a0")
			if err == nil && status != "OK" {
				err = fmt.Errorf("STARTTLS answered %s %s", status, text)
			}
			return err
		}
	case POP3:
		if err := pop3Greeting(c); err != nil {
			return untested(err)
		}
		pair = "STLS\r\nNOOP\r\n"
		upgraded = func() error {
			ok, text, err := pop3Reply(c)
			if err == nil && !ok {
				err = fmt.Errorf("STLS answered -ERR %s", text)
			}
			return err
		}
	default:
		return untested(fmt.Errorf("%s has no STARTTLS", svc.Name))
	}

	if _, err := c.w.Write([]byte(pair)); err != nil {
		return untested(err)
	}
	if err := upgraded(); err != nil {
		return untested(err)
	}
	if c.buffered() > 0 {
		f.Grade, f.Detail = OK, "the pipelined NOOP was answered before TLS"
		return f
	}
	if _, err := c.startTLS(ctx, a.clientTLSConfig()); err != nil {
		if strings.Contains(err.Error(), "does not look like a TLS handshake") {
			f.Grade, f.Detail = OK, "the pipelined NOOP was answered before TLS"
			return f
		}
		// This runs only after a clean handshake on a fresh connection
		// worked, so the pipelined bytes broke this one: the server fed
		// them to TLS (as Dovecot does) or hung up. Either way nothing can
		// be injected.
		f.Grade, f.Detail = OK, "the handshake failed when plaintext followed STARTTLS, so nothing can be injected ("+err.Error()+")"
		return f
	}
	c.w.SetTimeout(min(injectionWait, a.cfg.Timeout))
	line, err := c.w.ReadLine()
	switch {
	case err == nil:
		f.Grade = Fail
		f.Detail = fmt.Sprintf("a NOOP sent in clear with STARTTLS was answered inside TLS (%q): commands can be injected into the encrypted session (CVE-2011-0411 class)", line)
		f.Advice = "upgrade the server: it must discard buffered plaintext at STARTTLS"
	case isTimeout(err):
		f.Grade, f.Detail = OK, "plaintext pipelined after STARTTLS was discarded"
	default:
		f.Grade, f.Detail = OK, "the session ended after the pipelined NOOP ("+err.Error()+")"
	}
	return f
}
