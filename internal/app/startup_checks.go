package app

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"

	"go.uber.org/zap"
)

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
