package audit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// resolver asks one DNS server directly (miekg/dns), so that the audit can
// be pointed at any server and sees the raw TXT strings and response codes.
type resolver struct {
	server  string // host:port; empty: the system resolver for host names
	timeout time.Duration
}

// resolvConf is where the system's nameserver is read from when no resolver
// is given.
const resolvConf = "/etc/resolv.conf"

// newResolver returns a resolver for server ("host", "host:port"); empty
// means the first nameserver of /etc/resolv.conf for DNS records and the
// system resolver (hosts file included) for the audited host's address.
func newResolver(server string, timeout time.Duration) (*resolver, error) {
	if server != "" {
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
		}
	}
	return &resolver{server: server, timeout: timeout}, nil
}

// dnsServer is the server to ask for records.
func (r *resolver) dnsServer() (string, error) {
	if r.server != "" {
		return r.server, nil
	}
	cc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w (set a resolver with --resolver)", resolvConf, err)
	}
	if len(cc.Servers) == 0 {
		return "", fmt.Errorf("%s lists no nameserver (set a resolver with --resolver)", resolvConf)
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// errNXDomain marks a name that does not exist; lookups that get it return
// no records and this error so callers can tell "no such name" from "no
// record of this type".
var errNXDomain = errors.New("no such domain (NXDOMAIN)")

// query asks for name/qtype with recursion desired, retrying over TCP when
// the UDP answer is truncated. NXDOMAIN gives errNXDomain; other failure
// codes are errors.
func (r *resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	server, err := r.dnsServer()
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: "udp", Timeout: r.timeout}
	in, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, server)
	}
	what := fmt.Sprintf("DNS %s %s via %s", dns.TypeToString[qtype], name, server)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
		return in.Answer, nil
	case dns.RcodeNameError:
		return nil, fmt.Errorf("%s: %w", what, errNXDomain)
	}
	return nil, fmt.Errorf("%s: server answered %s", what, dns.RcodeToString[in.Rcode])
}

// txt returns the TXT records at name, each one's strings joined as RFC
// 7208 3.3 says. A name that does not exist has no records.
func (r *resolver) txt(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	if errors.Is(err, errNXDomain) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}

// mx returns the MX records of domain.
func (r *resolver) mx(ctx context.Context, domain string) ([]*dns.MX, error) {
	rrs, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var out []*dns.MX
	for _, rr := range rrs {
		if m, ok := rr.(*dns.MX); ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// addrs returns the A and AAAA addresses of name, IPv4 first.
func (r *resolver) addrs(ctx context.Context, name string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := r.query(ctx, name, qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range rrs {
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					out = append(out, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA); ok {
					out = append(out, a)
				}
			}
		}
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// hostAddr resolves the audited host: an IP address as is; a name through
// the configured DNS server, or through the system resolver when none is
// set. The first address is audited (IPv4 first).
func (r *resolver) hostAddr(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return a.Unmap(), nil
	}
	var as []netip.Addr
	var err error
	if r.server != "" {
		as, err = r.addrs(ctx, host)
	} else {
		ctx, cancel := context.WithTimeout(ctx, r.timeout)
		defer cancel()
		as, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		for i, a := range as {
			as[i] = a.Unmap()
		}
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(as) == 0 {
		return netip.Addr{}, fmt.Errorf("resolving %s: no A or AAAA record", host)
	}
	for _, a := range as {
		if a.Is4() {
			return a, nil
		}
	}
	return as[0], nil
}
