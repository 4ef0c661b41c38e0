// Package policy is tlsguard's relay policy: the YAML policy model with strict
// loading, parsing and normalisation of envelope addresses, the decisions the
// proxy asks for at each SMTP step, and credential sources.
//
// A *Policy is immutable once built and safe for concurrent use; a reload
// builds a new one and swaps it in.
package policy

import (
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
	file    string
	local   domainSet
	domains []DomainPattern
	trusted []netip.Prefix
}

// File returns the name the policy was loaded from.
func (p *Policy) File() string { return p.file }

// LocalDomains returns the local_domains patterns in file order.
func (p *Policy) LocalDomains() []DomainPattern { return slices.Clone(p.domains) }

// TrustedNetworks returns the trusted_networks prefixes in file order, IPv4
// ones as IPv4 even when written IPv4-mapped.
func (p *Policy) TrustedNetworks() []netip.Prefix { return slices.Clone(p.trusted) }

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
// from being the reverse-path of the transaction. In order: a local
// recipient is accepted from anyone; an authenticated client may relay; a
// client in a trusted network may relay; anything else is refused with
// "550 5.7.1 Relaying denied. Authentication required.".
func (p *Policy) CheckRecipient(s Session, from, rcpt Address) Decision {
	_ = from // used by the sender and recipient rules of a later issue
	switch {
	case p.IsLocal(rcpt):
		return Decision{Action: Accept, Reply: replyRecipientOK, Rule: RuleLocalDomains}
	case s.User != "":
		return Decision{Action: Accept, Reply: replyRecipientOK, Rule: RuleAuthenticated}
	case p.IsTrusted(s.ClientIP):
		return Decision{Action: Accept, Reply: replyRecipientOK, Rule: RuleTrustedNetworks}
	}
	return Decision{Action: Reject, Reply: replyRelayDenied, Rule: RuleDefault}
}
