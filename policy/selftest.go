package policy

import (
	"fmt"
	"net/netip"
)

// Addresses from the documentation ranges (RFC 5737, RFC 3849): never a
// real client, never in a sane trusted network.
var (
	selfTestIPs  = []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")}
	selfTestFrom = Address{Local: "selftest", Domain: "tlsguard-selftest.invalid"}
	selfTestRcpt = Address{Local: "postmaster", Domain: "tlsguard-selftest.invalid"}
)

// OpenRelayCheck asks the policy whether an unauthenticated client from an
// untrusted address may send to a foreign domain, on each of the listeners,
// with and without TLS. If so the proxy would be an open relay: it returns
// an error naming the rule that allowed it. With no listeners it checks
// every listener the policy names plus one it does not, which is what
// `policy check` can know without a config. A policy that says
// allow_open_relay is still reported; the caller decides.
func (p *Policy) OpenRelayCheck(listeners []string) error {
	if len(listeners) == 0 {
		listeners = append(p.Listeners(), "")
	}
	for _, l := range listeners {
		for _, ip := range selfTestIPs {
			for _, tls := range []bool{false, true} {
				s := Session{Listener: l, TLS: tls, ClientIP: ip}
				d := p.CheckRecipient(s, selfTestFrom, selfTestRcpt)
				if d.Action != Accept {
					continue
				}
				on := "on listener " + l
				if l == "" {
					on = "on a listener no rule names"
				}
				return fmt.Errorf("open relay: the policy lets an unauthenticated client at %s %s send to any domain (rule %s); "+
					"fix the policy, or set allow_open_relay: true in it if this is really intended", ip, on, d.Rule)
			}
		}
	}
	return nil
}
