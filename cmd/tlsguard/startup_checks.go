package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/policy"
)

// Addresses from the documentation ranges (RFC 5737, RFC 3849): never a
// real client, never in a sane trusted network.
var (
	selfTestIPs  = []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")}
	selfTestFrom = policy.Address{Local: "selftest", Domain: "tlsguard-selftest.invalid"}
	selfTestRcpt = policy.Address{Local: "postmaster", Domain: "tlsguard-selftest.invalid"}
)

// openRelayCheck asks the policy whether an unauthenticated client from an
// untrusted address may send to a foreign domain, on every listener, with
// and without TLS. If so the proxy would be an open relay: it returns an
// error naming the rule that allowed it.
func openRelayCheck(p *policy.Policy, listeners []string) error {
	for _, l := range listeners {
		for _, ip := range selfTestIPs {
			for _, tls := range []bool{false, true} {
				s := policy.Session{Listener: l, TLS: tls, ClientIP: ip}
				d := p.CheckRecipient(s, selfTestFrom, selfTestRcpt)
				if d.Action == policy.Accept {
					return fmt.Errorf("open relay: the policy lets an unauthenticated client at %s on listener %s send to any domain (rule %s); "+
						"fix the policy, or set allow_open_relay: true in it if this is really intended", ip, l, d.Rule)
				}
			}
		}
	}
	return nil
}

// dockerNATWarnings warns about trusted networks that, behind Docker's NAT
// (or any NAT), contain the address every client appears from: the
// container's default gateway, or Docker's private bridge ranges. That turns
// "trusted" into "everyone", the classic Postfix-in-Docker open relay.
func dockerNATWarnings(log *zap.Logger, trusted []netip.Prefix) {
	gw, hasGW := defaultGateway()
	container := inContainer()
	bridges := []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.0.0.0/8")}
	for _, n := range trusted {
		if hasGW && n.Contains(gw) {
			log.Warn("TRUSTED NETWORK CONTAINS THE DEFAULT GATEWAY: behind NAT (Docker's default bridge, a port forward) every client appears to come from "+
				gw.String()+", so everyone may relay. Use host networking or the PROXY protocol (listeners[].proxy_protocol), and trust only real client ranges.",
				zap.Stringer("trusted_network", n), zap.Bool("in_container", container))
			continue
		}
		if !container {
			continue
		}
		for _, b := range bridges {
			if n.Overlaps(b) {
				log.Warn("trusted network overlaps a private range that Docker's NAT may show every client as; check how clients reach this container",
					zap.Stringer("trusted_network", n), zap.Stringer("private_range", b))
				break
			}
		}
	}
}

// inContainer reports whether this process seems to run in a container.
func inContainer() bool {
	for _, f := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	b, err := os.ReadFile("/proc/1/cgroup")
	return err == nil && (strings.Contains(string(b), "docker") || strings.Contains(string(b), "kubepods") || strings.Contains(string(b), "containerd"))
}

// defaultGateway reads the IPv4 default route's gateway from /proc/net/route.
func defaultGateway() (netip.Addr, bool) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return netip.Addr{}, false
	}
	defer f.Close()
	return parseDefaultGateway(bufio.NewScanner(f))
}

// parseDefaultGateway finds the route with destination 00000000 and a
// gateway; /proc/net/route writes addresses as little-endian hex.
func parseDefaultGateway(sc *bufio.Scanner) (netip.Addr, bool) {
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[1] != "00000000" || f[2] == "00000000" {
			continue
		}
		raw, err := hex.DecodeString(f[2])
		if err != nil || len(raw) != 4 {
			continue
		}
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], binary.LittleEndian.Uint32(raw))
		return netip.AddrFrom4(ip), true
	}
	return netip.Addr{}, false
}
