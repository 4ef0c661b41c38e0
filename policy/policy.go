// Package policy is tlsguard's relay policy: the YAML policy model with strict
// loading, parsing and normalisation of envelope addresses, the decisions the
// proxy asks for at each SMTP step, rate-limit counters, and credential
// sources.
//
// A *Policy is immutable once built and safe for concurrent use; a reload
// builds a new one and swaps it in. Every decision is a pure function of the
// policy, the envelope so far and the session's facts; only Counters hold
// state, and they outlive a Policy.
package policy

import (
	"fmt"
	"net/netip"
	"slices"
)

// Session holds the facts about the client that decisions depend on.
type Session struct {
	// Listener is the name of the listener the client connected to.
	Listener string
	// TLS is true once the connection is encrypted (implicit TLS or STARTTLS).
	TLS bool
	// User is the authenticated user name; "" when not authenticated.
	User string
	// ClientIP is the client's address (after the PROXY protocol, if any).
	// IPv4-mapped IPv6 addresses are treated as IPv4.
	ClientIP netip.Addr
}

// Policy is a loaded policy file. Build it with Load or Parse.
type Policy struct {
	file          string
	local         domainSet
	domains       []DomainPattern
	trusted       []netip.Prefix
	localSource   string
	trustedSource string

	groups     map[string][]string
	groupNames []string
	rules      []*rule
	builtin    bool // no rules section: the three built-in rules apply
	owners     []*owner
	limits     []*limitEntry
	rates      []*rateLimit
	listeners  []string // listener names the file refers to
	warnings   []string

	allowOpenRelay bool
}

// File returns the name the policy was loaded from.
func (p *Policy) File() string { return p.file }

// LocalDomains returns the local_domains patterns in file order.
func (p *Policy) LocalDomains() []DomainPattern { return slices.Clone(p.domains) }

// TrustedNetworks returns the trusted_networks prefixes in file order, IPv4
// ones as IPv4 even when written IPv4-mapped.
func (p *Policy) TrustedNetworks() []netip.Prefix { return slices.Clone(p.trusted) }

// Rules returns the names of the rules in evaluation order; for a policy
// without a rules section, the built-in ones.
func (p *Policy) Rules() []string {
	names := make([]string, len(p.rules))
	for i, r := range p.rules {
		names[i] = r.name
	}
	return names
}

// Listeners returns the listener names the policy refers to, sorted, so a
// caller that knows the configured listeners can warn about a typo.
func (p *Policy) Listeners() []string { return slices.Clone(p.listeners) }

// AllowOpenRelay reports whether the file says allow_open_relay: true, the
// explicit opt-out of the open-relay refusals, for test labs. Start-up
// checks that refuse an open relay should honour it.
func (p *Policy) AllowOpenRelay() bool { return p.allowOpenRelay }

// IsLocal reports whether a is a mailbox in one of the local domains, that
// is, mail to it may be accepted from anyone. The null address, address
// literals and addresses whose local part is Ambiguous are never local: a
// legacy backend may route "user%foreign@local", "foreign!user@local" or
// "\"user@foreign\"@local" to a foreign host.
func (p *Policy) IsLocal(a Address) bool {
	if a.IsNull() || a.IsLiteral() || a.Ambiguous() {
		return false
	}
	return p.local.contains(a.Domain)
}

// IsTrusted reports whether ip is in one of the trusted networks.
func (p *Policy) IsTrusted(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() {
		return false
	}
	for _, n := range p.trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// CheckRecipient decides whether the client may send to rcpt (RCPT TO),
// from being the reverse-path of the transaction: the rules in order, first
// match wins; when none matches, "550 5.7.1 Relaying denied. Authentication
// required.". A policy without a rules section has three built-in rules: a
// local recipient is accepted from anyone, then an authenticated client may
// relay, then a client in trusted_networks may relay.
//
// Limits and rate limits are separate checks (CheckRecipientCount,
// Counters.Recipient), made only after this one accepts.
//
// A rule with mode: shadow that matches does not decide: the rules after it
// do, and when it would have decided otherwise the Decision's Shadow says
// so, so a restriction can be watched on real traffic before it bites.
func (p *Policy) CheckRecipient(s Session, from, rcpt Address) Decision {
	ev := p.newEval(s, from, rcpt)
	var would []Shadow
	for _, r := range p.rules {
		if !matchConds(r.conds, &ev) {
			continue
		}
		d := r.decide(&ev)
		if r.shadow {
			would = append(would, Shadow{Rule: r.name, Source: r.source, Would: d.Action, Reply: d.Reply})
			continue
		}
		d.Shadow = differing(would, d)
		return d
	}
	d := p.defaultDecision()
	d.Shadow = differing(would, d)
	return d
}

// differing keeps the shadow outcomes whose action differs from d's.
func differing(would []Shadow, d Decision) []Shadow {
	if len(would) == 0 {
		return nil
	}
	out := would[:0]
	for _, w := range would {
		if w.Would != d.Action {
			out = append(out, w)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (p *Policy) defaultDecision() Decision {
	return Decision{Action: Reject, Reply: replyRelayDenied, Rule: RuleDefault, Source: p.file}
}

// owner is one entry of sender_ownership.
type owner struct {
	name, source string
	sel          selector
	conds        []cond
	may          *patternSet
}

// CheckSender decides whether the client may use from as the reverse-path
// (MAIL FROM). Only authenticated clients are checked, and only when some
// sender_ownership entry applies to the user: then from must match a
// may_send_as pattern of one of the entries that apply (they add up), or
// the reply is "553 5.7.1 Sender address rejected: not owned by user".
//
// The null sender <> is owned by nobody unless an entry lists "<>": a user
// to whom ownership applies cannot send bounces unless allowed to. Clients
// that are not logged in (mail from the internet to a local domain, trusted
// networks) may use any sender, including <>; rules can refuse senders.
func (p *Policy) CheckSender(s Session, from Address) Decision {
	ok := Decision{Action: Accept, Reply: replySenderOK, Rule: RuleNoOwnership, Source: p.file}
	if s.User == "" || len(p.owners) == 0 {
		return ok
	}
	ev := p.newEval(s, from, Address{})
	var first *owner
	for _, o := range p.owners {
		if !matchConds(o.conds, &ev) {
			continue
		}
		if first == nil {
			first = o
		}
		if o.may.match(from, ev.fromLower, ev.userLower, true) {
			return Decision{Action: Accept, Reply: replySenderOK, Rule: o.name, Source: o.source}
		}
	}
	if first == nil {
		return ok
	}
	return Decision{Action: Reject, Reply: replyNotOwner, Rule: first.name, Source: first.source}
}

// CheckMail makes the checks due at MAIL FROM: CheckSender, then the
// message size the client declared with SIZE= (0 when none; RFC 1870
// section 6.1 lets a server refuse early).
func (p *Policy) CheckMail(s Session, from Address, size int64) Decision {
	d := p.CheckSender(s, from)
	if d.Action != Accept {
		return d
	}
	if sd := p.CheckMessageSize(s, size); sd.Action != Accept {
		return sd
	}
	return d
}

// Envelope is what the client has said so far in a transaction.
type Envelope struct {
	From Address
	// Size is the SIZE= the client declared at MAIL; 0 when none.
	Size int64
	// Recipients is the number of recipients already accepted.
	Recipients int
}

// Evaluate decides one more recipient of env the way the proxy does, in the
// proxy's order: CheckMail, then CheckRecipient, then CheckRecipientCount.
// Rate limits are left out: they depend on traffic, not on the envelope.
func (p *Policy) Evaluate(s Session, env Envelope, rcpt Address) Decision {
	if d := p.CheckMail(s, env.From, env.Size); d.Action != Accept {
		return d
	}
	d := p.CheckRecipient(s, env.From, rcpt)
	if d.Action != Accept {
		return d
	}
	if ld := p.CheckRecipientCount(s, env.Recipients); ld.Action != Accept {
		ld.Shadow = differing(d.Shadow, ld)
		return ld
	}
	return d
}

func (p *Policy) String() string {
	return fmt.Sprintf("%s (%d rules)", p.file, len(p.rules))
}
