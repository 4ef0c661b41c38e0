package policy

import (
	"fmt"
	"net/netip"
)

// The self-test's envelope: a sender and recipient in a reserved domain
// (RFC 2606), never local in a sane policy.
var (
	selfTestFrom = Address{Local: "selftest", Domain: "tlsguard-selftest.invalid"}
	selfTestRcpt = Address{Local: "postmaster", Domain: "tlsguard-selftest.invalid"}
)

// Beyond these a trusted network is broad enough to be a mistake: a /16 of
// IPv4 is 65536 hosts, a /32 of IPv6 a whole provider's allocation.
const (
	broadV4Bits = 16
	broadV6Bits = 32
)

// nonPublic are the ranges that are not reachable from the Internet (RFC
// 6890): trusting them is local, not a relay for the world. Docker's NAT is
// another matter, which serve warns about on its own.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast and reserved
	netip.MustParsePrefix("::/8"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// selfTestAddrs returns the client addresses the open-relay self-test
// tries: the documentation addresses (RFC 5737, RFC 3849) first, then one
// address in every public /8 of IPv4 and in every /8 of IPv6's global
// unicast 2000::/3, so that a trusted network covering a large part of the
// Internet is caught wherever it lies. Each probe avoids the networks in
// skip (a deliberately trusted office /24 is not a relay for the world) by
// taking the first of several candidates in different /16s (/32s for
// IPv6); a /8 whose candidates are all covered is left out.
func selfTestAddrs(skip []netip.Prefix) []netip.Addr {
	out := []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")}
	free := func(a netip.Addr) bool {
		for _, p := range skip {
			if p.Contains(a) {
				return false
			}
		}
		for _, p := range nonPublic {
			if p.Contains(a) {
				return false
			}
		}
		return true
	}
	// Second octets outside 100.64/10, 169.254/16, 172.16/12, 192.168/16,
	// 198.18/15 and 192.0.0/24, so each candidate is public in every
	// public /8.
	second := []byte{200, 97, 3, 151}
	for first := 1; first < 224; first++ {
		for _, s := range second {
			a := netip.AddrFrom4([4]byte{byte(first), s, 113, 7})
			if free(a) {
				out = append(out, a)
				break
			}
		}
	}
	for first := 0x20; first < 0x40; first++ {
		for _, s := range second {
			var b [16]byte
			b[0], b[1], b[2], b[3], b[15] = byte(first), s, 0x5a, 0x11, 7
			a := netip.AddrFrom16(b)
			if free(a) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

// narrowNetworks are the networks the policy names, in trusted_networks or
// a rule's networks, that are no broader than a /16 of IPv4 or a /32 of
// IPv6: deliberate, and so kept out of the self-test's probes.
func (p *Policy) narrowNetworks() []netip.Prefix {
	all := append([]netip.Prefix(nil), p.trusted...)
	for _, r := range p.rules {
		all = append(all, r.sel.networks...)
	}
	var out []netip.Prefix
	for _, n := range all {
		if (n.Addr().Is4() && n.Bits() >= broadV4Bits) || (!n.Addr().Is4() && n.Bits() >= broadV6Bits) {
			out = append(out, n)
		}
	}
	return out
}

// broadNetwork returns a warning when the trusted network n is broader
// than a /16 of public IPv4 or a /32 of public IPv6: everyone in it may
// relay without logging in, which is rarely what was meant.
func broadNetwork(n netip.Prefix) string {
	limit := broadV6Bits
	if n.Addr().Is4() {
		limit = broadV4Bits
	}
	// Every address (/0) is refused on its own unless allow_open_relay,
	// which has its own warning.
	if n.Bits() == 0 || n.Bits() >= limit || !overlapsPublic(n) {
		return ""
	}
	return fmt.Sprintf("%s is broader than a /%d of public addresses: every client in it may relay to any domain without logging in; trust only your own hosts", n, limit)
}

// overlapsPublic reports whether n holds any public address: whether it
// is not inside one non-public range.
func overlapsPublic(n netip.Prefix) bool {
	for _, np := range nonPublic {
		if np.Bits() <= n.Bits() && np.Contains(n.Addr()) {
			return false
		}
	}
	return true
}

// OpenRelayCheck asks the policy whether an unauthenticated client from an
// untrusted address may send to a foreign domain, on each of the listeners,
// with and without TLS. If so the proxy would be an open relay: it returns
// an error naming the rule that allowed it. The clients are a spread over
// the public address space (selfTestAddrs). With no listeners it checks
// every listener the policy names plus one it does not, which is what
// `policy check` can know without a config. A policy that says
// allow_open_relay is still reported; the caller decides.
func (p *Policy) OpenRelayCheck(listeners []string) error {
	if len(listeners) == 0 {
		listeners = append(p.Listeners(), "")
	}
	ips := selfTestAddrs(p.narrowNetworks())
	for _, l := range listeners {
		for _, ip := range ips {
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
