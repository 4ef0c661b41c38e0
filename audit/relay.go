package audit

import (
	"context"
	"fmt"
	"strings"
)

// relayProbe is one unauthenticated relay attempt: MAIL FROM:<From>,
// RCPT TO:<To>, then RSET. DATA is never sent.
type relayProbe struct {
	Name string
	From string
	To   string
	// Trick marks the address tricks, reported apart from the plain relay.
	Trick bool
}

// relayProbes builds the probes for a host whose local domain is local
// (a domain, or an address literal) and whose own address literal is ipLit.
// to is the external recipient, from the external sender.
//
// The tricks are the classic ways to make a relay look local to a parser
// that judges one form of the address and routes another: the percent hack
// (user%ext@local), bang paths (ext!user@local), a quoted local part that
// holds an @ ("user@ext"@local), source routes (@local:user@ext, RFC 5321
// appendix C), two @ signs, and the percent hack against the host's IP
// literal.
func relayProbes(from, to, local, ipLit string) []relayProbe {
	user, ext, ok := strings.Cut(to, "@")
	if !ok {
		user, ext = to, "example.net"
	}
	ps := []relayProbe{
		{Name: "external sender", From: from, To: to},
		{Name: "local sender", From: "postmaster@" + local, To: to},
		{Name: "percent hack", From: from, To: user + "%" + ext + "@" + local, Trick: true},
		{Name: "bang path", From: from, To: ext + "!" + user + "@" + local, Trick: true},
		{Name: "quoted local part", From: from, To: `"` + user + "@" + ext + `"@` + local, Trick: true},
		{Name: "source route", From: from, To: "@" + local + ":" + user + "@" + ext, Trick: true},
		{Name: "two @", From: from, To: user + "@" + ext + "@" + local, Trick: true},
	}
	if ipLit != local {
		ps = append(ps, relayProbe{Name: "IP literal", From: from, To: user + "%" + ext + "@" + ipLit, Trick: true})
	}
	return ps
}

// relayResult is what one probe got.
type relayResult struct {
	probe    relayProbe
	accepted bool
	reply    string // the deciding reply, "MAIL: ..." when MAIL was refused
	mailOK   bool
	err      error
}

// checkRelay runs every relay probe on svc, starting on first (a session
// after EHLO) and opening a new session with open when the server drops
// the connection. Findings: one for the plain relay attempts and one for
// the address tricks.
func (a *auditor) checkRelay(ctx context.Context, svc Service, first *conn, open func() (*conn, error)) []Finding {
	probes := relayProbes(a.cfg.MailFrom, a.cfg.RelayTo, a.localDomain(), addrLiteral(a.addr))
	c := first
	var results []relayResult
	for _, p := range probes {
		if ctx.Err() != nil {
			break
		}
		r := runRelayProbe(c, p)
		if r.err != nil {
			// The server may have hung up on us (too many errors): one new
			// session, then give up on the rest.
			if c != first {
				c.Close()
			}
			nc, err := open()
			if err != nil {
				results = append(results, r)
				break
			}
			c = nc
			r = runRelayProbe(c, p)
		}
		results = append(results, r)
	}
	if c != first {
		c.writeLine("QUIT")
		c.Close()
	}

	plain, tricks := summarizeRelay(svc, results, false), summarizeRelay(svc, results, true)
	return []Finding{plain, tricks}
}

// runRelayProbe sends MAIL and RCPT, then RSET. A 2xx to RCPT means the
// server took responsibility for an address it should not relay to.
func runRelayProbe(c *conn, p relayProbe) relayResult {
	r := relayResult{probe: p}
	code, msg, err := c.smtpCmd("MAIL FROM:<%s>", p.From)
	if err != nil {
		r.err = err
		return r
	}
	if code/100 != 2 {
		r.reply = fmt.Sprintf("MAIL %d %s", code, oneLine(msg))
		c.smtpCmd("RSET")
		return r
	}
	r.mailOK = true
	code, msg, err = c.smtpCmd("RCPT TO:<%s>", p.To)
	if err != nil {
		r.err = err
		return r
	}
	r.reply = fmt.Sprintf("%d %s", code, oneLine(msg))
	r.accepted = code/100 == 2
	if _, _, err := c.smtpCmd("RSET"); err != nil {
		r.err = err
	}
	return r
}

// summarizeRelay grades the plain probes (tricks false) or the address
// tricks (tricks true) of one port.
func summarizeRelay(svc Service, results []relayResult, tricks bool) Finding {
	f := Finding{Check: svc.String() + " open relay", Service: svc.Name, Port: svc.Port}
	if tricks {
		f.Check = svc.String() + " relay address tricks"
	}
	var acc, ref, untested []string
	refusal := "" // the first refusal, quoted once
	for _, r := range results {
		if r.probe.Trick != tricks {
			continue
		}
		item := fmt.Sprintf("%s <%s> → <%s> (%s)", r.probe.Name, r.probe.From, r.probe.To, r.reply)
		switch {
		case r.accepted:
			acc = append(acc, item)
		case r.mailOK && r.err == nil:
			ref = append(ref, r.probe.Name)
			if refusal == "" {
				refusal = r.reply
			}
		default:
			if r.err != nil {
				item = fmt.Sprintf("%s (%v)", r.probe.Name, r.err)
			}
			untested = append(untested, item)
		}
	}
	switch {
	case len(acc) > 0:
		f.Grade = Fail
		f.Detail = "RCPT accepted without authentication: " + strings.Join(acc, "; ")
		f.Advice = "relay only for authenticated users or trusted networks, and reject every address form you do not parse as local (tlsguard does both)"
		if tricks {
			f.Advice = "reject %, !, quoted @, source routes and IP literals unless they are provably local; parse once, judge the parsed form"
		}
	case len(ref) == 0:
		f.Grade = Warning
		f.Detail = "not tested: " + strings.Join(untested, "; ")
		f.Advice = "MAIL was refused, so relaying could not be tried; rerun with --mail-from set to a sender the server accepts"
	default:
		f.Grade = OK
		f.Detail = "refused: " + strings.Join(ref, ", ") + " (first reply: " + refusal + ")"
		if len(untested) > 0 {
			f.Detail += "; not tested: " + strings.Join(untested, "; ")
		}
	}
	return f
}
