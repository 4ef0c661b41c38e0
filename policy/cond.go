package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// cond is one condition of a rule or selector. ok is the fast path; why
// explains a false ok for "policy explain". Both read the same fields, so
// the explanation is the evaluation. A concrete type with a switch (rather
// than an interface) keeps the evaluation context on the stack.
type cond struct {
	kind  condKind
	want  bool                // tls, authenticated, trusted_network, local_recipient
	set   map[string]struct{} // listeners, users
	dirs  map[string]struct{} // users: directory groups, lower case
	names []string            // listeners
	desc  string              // users: "users [a] or groups [g]"
	nets  []netip.Prefix
	pats  *patternSet
	grant bool // pats grant something: tricky addresses never match
}

type condKind uint8

const (
	condListener condKind = iota + 1
	condTLS
	condAuth
	condUsers
	condNetworks
	condTrusted
	condSenders
	condRecipients
	condLocal
)

// evalCtx holds the facts one decision is made from, normalised once.
type evalCtx struct {
	p         *Policy
	s         Session
	ip        netip.Addr
	trusted   bool
	from      Address
	rcpt      Address
	fromLower string
	rcptLower string
	userLower string
	local     bool
}

func (p *Policy) newEval(s Session, from, rcpt Address) evalCtx {
	ip := s.ClientIP.Unmap().WithZone("")
	return evalCtx{
		p: p, s: s, ip: ip, trusted: p.IsTrusted(ip),
		from: from, rcpt: rcpt,
		fromLower: strings.ToLower(from.Local),
		rcptLower: strings.ToLower(rcpt.Local),
		userLower: strings.ToLower(s.User),
		local:     p.IsLocal(rcpt),
	}
}

func (c *cond) ok(ev *evalCtx) bool {
	switch c.kind {
	case condListener:
		_, ok := c.set[ev.s.Listener]
		return ok
	case condTLS:
		return ev.s.TLS == c.want
	case condAuth:
		return (ev.s.User != "") == c.want
	case condUsers:
		if ev.s.User == "" {
			return false
		}
		if _, ok := c.set[ev.s.User]; ok {
			return true
		}
		for _, g := range ev.s.Groups {
			if _, ok := c.dirs[strings.ToLower(g)]; ok {
				return true
			}
		}
		return false
	case condNetworks:
		if !ev.ip.IsValid() {
			return false
		}
		for _, n := range c.nets {
			if n.Contains(ev.ip) {
				return true
			}
		}
		return false
	case condTrusted:
		return ev.trusted == c.want
	case condSenders:
		return c.pats.match(ev.from, ev.fromLower, ev.userLower, c.grant)
	case condRecipients:
		return c.pats.match(ev.rcpt, ev.rcptLower, ev.userLower, c.grant)
	case condLocal:
		return ev.local == c.want
	}
	return false
}

func (c *cond) why(ev *evalCtx) string {
	switch c.kind {
	case condListener:
		return fmt.Sprintf("listener %q is not one of [%s]", ev.s.Listener, strings.Join(c.names, ", "))
	case condTLS:
		if c.want {
			return "needs tls: true; the session is not encrypted"
		}
		return "needs tls: false; the session is encrypted"
	case condAuth:
		if c.want {
			return "needs authenticated: true; the client has not logged in"
		}
		return fmt.Sprintf("needs authenticated: false; the client is logged in as %q", ev.s.User)
	case condUsers:
		if ev.s.User == "" {
			return fmt.Sprintf("needs a logged-in user in %s; the client has not logged in", c.desc)
		}
		return fmt.Sprintf("user %q is not in %s", ev.s.User, c.desc)
	case condNetworks:
		return fmt.Sprintf("client IP %s is not in networks [%s]", ipText(ev.ip), joinStringers(c.nets))
	case condTrusted:
		if c.want {
			return fmt.Sprintf("client IP %s is not in trusted_networks", ipText(ev.ip))
		}
		return fmt.Sprintf("needs trusted_network: false; client IP %s is in trusted_networks", ipText(ev.ip))
	case condSenders:
		return fmt.Sprintf("sender <%s> matches none of senders [%s]%s", ev.from, c.pats, trickNote(ev.from, c.grant))
	case condRecipients:
		return fmt.Sprintf("recipient <%s> matches none of recipients [%s]%s", ev.rcpt, c.pats, trickNote(ev.rcpt, c.grant))
	case condLocal:
		if c.want {
			if !ev.rcpt.IsNull() && ev.p.local.contains(ev.rcpt.Domain) {
				return fmt.Sprintf("recipient <%s> is in a local domain but has routing tricks in its local part, so it is never local", ev.rcpt)
			}
			return fmt.Sprintf("recipient <%s> is not in local_domains", ev.rcpt)
		}
		return fmt.Sprintf("needs local_recipient: false; recipient <%s> is in local_domains", ev.rcpt)
	}
	return "?"
}

func trickNote(a Address, grant bool) string {
	if grant && !a.IsNull() && (a.Ambiguous() || a.IsLiteral()) {
		return " (an address with routing tricks or an IP literal never matches a pattern that grants)"
	}
	return ""
}

func ipText(ip netip.Addr) string {
	if !ip.IsValid() {
		return "(unknown)"
	}
	return ip.String()
}

func joinStringers[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}

// tri is an optional boolean condition.
type tri int8

const (
	triAny tri = iota
	triTrue
	triFalse
)

func triOf(b *bool) tri {
	switch {
	case b == nil:
		return triAny
	case *b:
		return triTrue
	}
	return triFalse
}

// selector is the compiled, analysable form of the session conditions
// (listeners, tls, authenticated, users/groups, networks, trusted_network)
// shared by rules, sender_ownership, limits and rate_limits.
type selector struct {
	listeners map[string]struct{} // nil: any
	listNames []string
	tls       tri
	auth      tri                 // effective: users/groups imply true
	users     map[string]struct{} // nil: any; else users plus members of groups
	dirGroups map[string]struct{} // directory groups of the groups named, lower case
	userNames []string
	groups    []string
	networks  []netip.Prefix // nil: any
	trusted   tri
}

func (s *selector) conds() []cond {
	var cs []cond
	if s.listeners != nil {
		cs = append(cs, cond{kind: condListener, set: s.listeners, names: s.listNames})
	}
	if s.tls != triAny {
		cs = append(cs, cond{kind: condTLS, want: s.tls == triTrue})
	}
	if s.users != nil {
		cs = append(cs, cond{kind: condUsers, set: s.users, dirs: s.dirGroups, desc: s.whoDesc()})
	} else if s.auth != triAny {
		cs = append(cs, cond{kind: condAuth, want: s.auth == triTrue})
	}
	if s.networks != nil {
		cs = append(cs, cond{kind: condNetworks, nets: s.networks})
	}
	if s.trusted != triAny {
		cs = append(cs, cond{kind: condTrusted, want: s.trusted == triTrue})
	}
	return cs
}

func (s *selector) whoDesc() string {
	var parts []string
	if len(s.userNames) > 0 {
		parts = append(parts, "users ["+strings.Join(s.userNames, ", ")+"]")
	}
	if len(s.groups) > 0 {
		parts = append(parts, "groups ["+strings.Join(s.groups, ", ")+"]")
	}
	return strings.Join(parts, " or ")
}

// covers reports whether s matches every session t matches (when sure).
func (s *selector) covers(t *selector) bool {
	if s.listeners != nil {
		if t.listeners == nil {
			return false
		}
		for n := range t.listeners {
			if _, ok := s.listeners[n]; !ok {
				return false
			}
		}
	}
	if s.tls != triAny && s.tls != t.tls {
		return false
	}
	if s.auth != triAny && s.auth != t.auth {
		return false
	}
	if s.users != nil {
		if t.users == nil {
			return false
		}
		for u := range t.users {
			if _, ok := s.users[u]; !ok {
				return false
			}
		}
		for g := range t.dirGroups {
			if _, ok := s.dirGroups[g]; !ok {
				return false
			}
		}
	}
	if s.networks != nil {
		if t.networks == nil {
			return false
		}
		for _, tn := range t.networks {
			if !slices.ContainsFunc(s.networks, func(sn netip.Prefix) bool {
				return sn.Bits() <= tn.Bits() && sn.Contains(tn.Addr())
			}) {
				return false
			}
		}
	}
	if s.trusted != triAny && s.trusted != t.trusted {
		return false
	}
	return true
}

// restrictsClient reports whether the selector keeps out an anonymous
// client from an arbitrary address.
func (s *selector) restrictsClient() bool {
	if s.auth == triTrue || s.users != nil || s.trusted == triTrue {
		return true
	}
	for _, n := range s.networks {
		if n.Bits() > 0 {
			return true
		}
	}
	return false
}

// matchConds reports whether all conditions hold.
func matchConds(cs []cond, ev *evalCtx) bool {
	for i := range cs {
		if !cs[i].ok(ev) {
			return false
		}
	}
	return true
}

// whyConds returns the reason the first failing condition gives, or "".
func whyConds(cs []cond, ev *evalCtx) string {
	for i := range cs {
		if !cs[i].ok(ev) {
			return cs[i].why(ev)
		}
	}
	return ""
}
