package auth

import (
	"context"
	"net/netip"
	"strings"
	"time"
)

// LoginVerdict is the outcome of one login attempt checked through the
// throttle, for a protocol to turn into its own reply.
type LoginVerdict int

// Verdicts of Throttle.Login.
const (
	// LoginOK: the password is right.
	LoginOK LoginVerdict = iota
	// LoginFailed: a failure, counted; answer after the failure delay.
	LoginFailed
	// LoginFailedOver: a failure that spent the address's (or the user's
	// at it) budget; answer and hang up.
	LoginFailedOver
	// LoginRefused: refused before any check; answer "try later" after
	// the failure delay.
	LoginRefused
	// LoginRefusedHangUp: refused before any check, the address is spent;
	// answer and hang up at once.
	LoginRefusedHangUp
	// LoginBusy: no check slot came free; a temporary failure.
	LoginBusy
	// LoginTempFail: a source could not answer; a temporary failure, not
	// counted against anyone.
	LoginTempFail
)

// Outcome is what Throttle.Login found, with what the log needs.
type Outcome struct {
	Verdict  LoginVerdict
	Identity Identity
	// Reason says why an attempt failed or was refused (never the password).
	Reason string
	// Checked: a source was asked about the password.
	Checked bool
	// Known: the address has good history for the user.
	Known bool
	// Source names the source that decided, "" when none did.
	Source string
	// Err is the source's error for LoginTempFail.
	Err error
}

// Login checks one set of credentials from ip against src the way every
// protocol must: a bad user name costs the address, the attempt is paid
// for in every budget before the check, the check runs in a slot and
// within timeout from the moment it has one (so a wait for a slot does not
// eat the source's time), and a success is remembered as good history.
// identity is a SASL authorization identity ("" for none); one that
// differs from user is refused (RFC 4616: the legacy server cannot check
// it). SMTP AUTH and the mailbox logins share one Throttle, so their
// failures count together.
func (l *Throttle) Login(ctx context.Context, timeout time.Duration, src Source, ip netip.Addr, identity, user, pass string) Outcome {
	addr := AddrKey(ip)
	if !ValidUserName(user) {
		return l.Malformed(ip, "bad user name")
	}
	// Budgets count a name case-insensitively (Dovecot lowercases by
	// default), so every spelling of a name shares one budget.
	who := strings.ToLower(user)
	known := l.Known(who, addr)
	res, ref := l.Reserve(who, addr, known)
	if ref != nil {
		o := refusal(ref)
		o.Known = known
		return o
	}
	if identity != "" && identity != user {
		o := failure(res.Fail(), false, "authorization identity differs from login")
		o.Known = known
		return o
	}
	release, ok := l.Acquire(known)
	if !ok {
		res.Refund()
		return Outcome{Verdict: LoginBusy, Reason: "no free check slot", Known: known}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	id, err := src.Authenticate(ctx, user, pass)
	cancel()
	release()
	source := id.Source
	if err != nil {
		source = SourceOf(err)
	}
	switch {
	case Temporary(err):
		res.Refund()
		return Outcome{Verdict: LoginTempFail, Reason: "source error", Checked: true, Known: known, Source: source, Err: err}
	case err != nil:
		o := failure(res.Fail(), true, "bad credentials")
		o.Known, o.Source = known, source
		return o
	}
	res.Refund()
	l.Remember(who, addr)
	return Outcome{Verdict: LoginOK, Identity: id, Checked: true, Known: known, Source: source}
}

// Malformed counts an exchange that names no user to charge (a malformed
// SASL response, a bad user name) as a failure of the address alone, or
// refuses it when the address's budget has none left; why is the reason
// to log.
func (l *Throttle) Malformed(ip netip.Addr, why string) Outcome {
	over, ref := l.FailAddr(AddrKey(ip))
	if ref != nil {
		return refusal(ref)
	}
	return failure(over, false, why)
}

func refusal(ref *Refusal) Outcome {
	if ref.HangUp {
		return Outcome{Verdict: LoginRefusedHangUp, Reason: ref.Why}
	}
	return Outcome{Verdict: LoginRefused, Reason: ref.Why}
}

func failure(over, checked bool, why string) Outcome {
	v := LoginFailed
	if over {
		v = LoginFailedOver
	}
	return Outcome{Verdict: v, Reason: why, Checked: checked}
}

// ValidUserName refuses empty, overlong and control-character names before
// they reach a log line or a credential store.
func ValidUserName(u string) bool {
	if u == "" || len(u) > 256 {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] < 0x20 || u[i] == 0x7f {
			return false
		}
	}
	return true
}
