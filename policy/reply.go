package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// Reply is an SMTP reply: a three-digit code, an RFC 3463 enhanced status
// code and one line of text. The proxy sends it as "Code E.E.E Text".
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
}

// String formats the reply as it appears on the wire, without CRLF,
// e.g. "550 5.7.1 Relaying denied. Authentication required.".
func (r Reply) String() string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Text)
}

// ParseReply parses a reply as written in a policy file:
// "550 5.7.1 Text of the reply". The code is 4xx or 5xx, the enhanced code's
// class matches the code's first digit (RFC 3463 section 2), and the text is
// printable ASCII, at most 200 octets, so it is safe on the wire.
func ParseReply(s string) (Reply, error) {
	f := strings.SplitN(s, " ", 3)
	if len(f) < 3 || strings.TrimSpace(f[2]) == "" {
		return Reply{}, fmt.Errorf("%q is not a reply such as \"550 5.7.1 Text\" (code, enhanced code, text)", s)
	}
	code, err := strconv.Atoi(f[0])
	if err != nil || len(f[0]) != 3 || code < 400 || code > 599 {
		return Reply{}, fmt.Errorf("%q: the code must be 4xx (temporary) or 5xx (permanent)", s)
	}
	var r Reply
	r.Code = code
	parts := strings.Split(f[1], ".")
	if len(parts) != 3 {
		return Reply{}, fmt.Errorf("%q: %q is not an enhanced status code such as 5.7.1", s, f[1])
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || p == "" || len(p) > 3 || n < 0 || (i == 1 && n > 999) {
			return Reply{}, fmt.Errorf("%q: %q is not an enhanced status code such as 5.7.1", s, f[1])
		}
		r.Enhanced[i] = n
	}
	if r.Enhanced[0] != code/100 {
		return Reply{}, fmt.Errorf("%q: the enhanced code %s must start with %d like the reply code", s, f[1], code/100)
	}
	r.Text = strings.TrimSpace(f[2])
	if len(r.Text) > 200 {
		return Reply{}, fmt.Errorf("%q: the text is longer than 200 octets", s)
	}
	for i := 0; i < len(r.Text); i++ {
		if c := r.Text[i]; c < 0x20 || c > 0x7e {
			return Reply{}, fmt.Errorf("%q: the text may hold only printable ASCII", s)
		}
	}
	return r, nil
}

// Replies this package decides. Codes are fixed by the behaviour contract in
// docs/behaviour.md; rule replies in a policy file may set their own.
var (
	replyRecipientOK  = Reply{250, [3]int{2, 1, 5}, "Ok"}
	replySenderOK     = Reply{250, [3]int{2, 1, 0}, "Ok"}
	replyRelayDenied  = Reply{550, [3]int{5, 7, 1}, "Relaying denied. Authentication required."}
	replyRejected     = Reply{550, [3]int{5, 7, 1}, "Rejected by policy"}
	replyTempFail     = Reply{450, [3]int{4, 7, 1}, "Temporarily refused by policy, try again later"}
	replyNotOwner     = Reply{553, [3]int{5, 7, 1}, "Sender address rejected: not owned by user"}
	replyBadSyntax    = Reply{553, [3]int{5, 1, 3}, "Bad address syntax"}
	replyNeedUTF8     = Reply{553, [3]int{5, 6, 7}, "Non-ASCII address requires SMTPUTF8"}
	replyTooManyRcpts = Reply{452, [3]int{4, 5, 3}, "Too many recipients"}
	replyTooBig       = Reply{552, [3]int{5, 3, 4}, "Message size exceeds fixed limit"}
)

// Action is what a Decision tells the proxy to do. The zero value is not a
// valid action, so a Decision that was never filled in is never an Accept.
type Action int

// Actions. A rule's require_auth is not an Action: it decides Accept for an
// authenticated client and Reject otherwise.
const (
	// Accept lets the command proceed (RCPT is forwarded to the backend).
	Accept Action = iota + 1
	// Reject refuses the command permanently with the Decision's 5xx reply.
	Reject
	// TempFail refuses the command temporarily with the Decision's 4xx reply.
	TempFail
)

// String returns the lower-case name used in logs and policy files.
func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	case TempFail:
		return "tempfail"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the outcome of one check: the action, the exact SMTP reply to
// send, the name of the rule that decided and where it is written, so that
// logs, metrics and "tlsguard policy explain" tell the same story. For an
// Accept of a RCPT the proxy may send the backend's own reply instead of
// Reply, which is then only the default.
type Decision struct {
	Action Action
	Reply  Reply
	// Rule names what decided: a rule's name, or one of the Rule* constants.
	Rule string
	// Source is "file:line" of the rule (or of the section) that decided;
	// "file" alone for the default.
	Source string
	// Shadow lists the rules with mode: shadow that matched on the way and
	// would have decided otherwise (another action); nil when none.
	Shadow []Shadow
}

// Shadow is what a rule in mode: shadow would have decided.
type Shadow struct {
	Rule   string
	Source string
	Would  Action
	Reply  Reply
}

// String formats a decision for logs and explain: "reject 550 5.7.1 ...
// (rule no-tls at policy.yaml:12)".
func (d Decision) String() string {
	return fmt.Sprintf("%s %s (rule %s at %s)", d.Action, d.Reply, d.Rule, d.Source)
}

// Rule names reported in Decision.Rule when no named rule of the file
// decided. The first three are the built-in rules used when a policy has no
// rules section.
const (
	RuleLocalDomains    = "local_domains"
	RuleAuthenticated   = "authenticated"
	RuleTrustedNetworks = "trusted_networks"
	// RuleDefault: no rule matched the recipient.
	RuleDefault = "default"
	// RuleNoOwnership: sender_ownership says nothing about this session.
	RuleNoOwnership = "sender_ownership"
	// RuleNoLimit: no limits entry applies.
	RuleNoLimit = "limits"
	// RuleNoRateLimit: no rate_limits entry applies or all are under.
	RuleNoRateLimit = "rate_limits"
)
