// Package audit checks a mail host the way a public mail-security scanner
// would: STARTTLS and implicit TLS on the SMTP, IMAP and POP3 ports, the TLS
// versions and certificate each endpoint offers, whether a password could be
// sent in clear, whether the host relays mail for strangers, and (for a mail
// domain) its SPF, DMARC and MX records.
//
// The auditor is a client of other mail servers; it is not part of the
// proxy. It never sends a real credential (AUTH probes are cancelled with
// "*" at the first challenge, LOGIN/USER probes use an obviously invalid
// user) and never sends DATA: relay probes stop after RCPT and RSET.
package audit

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Defaults for Config fields left at their zero value.
const (
	// DefaultTimeout bounds every dial, read, write and TLS handshake.
	DefaultTimeout = 10 * time.Second
	// DefaultMailFrom is the reverse path of relay probes. example.org is
	// reserved (RFC 2606), so nothing can ever be delivered to or from it.
	DefaultMailFrom = "tlsguard-audit@example.org"
	// DefaultRelayTo is the external-looking recipient of relay probes, in
	// another reserved domain.
	DefaultRelayTo = "tlsguard-audit@example.net"
)

// maxParallelServices bounds how many ports are checked at once, so that
// the audit opens a handful of connections at a time (a real host may rate
// limit or ban a burst), not dozens.
const maxParallelServices = 3

// Config says what to audit and how. Only Host is required; every other
// field has a default that suits a real host.
type Config struct {
	// Host is the mail host to connect to: a name or an IP address.
	Host string

	// Domain is the mail domain whose SPF, DMARC and MX records are checked,
	// and the domain of the "local-looking" relay probe addresses. Empty:
	// no DNS policy checks, and relay probes use Host as the local domain.
	Domain string

	// Services are the ports to check. Nil means DefaultServices (25, 587,
	// 465, 143, 993, 110, 995). See ParsePorts.
	Services []Service

	// Timeout bounds every single dial, read, write, handshake and DNS
	// query (not the whole audit). Zero means DefaultTimeout.
	Timeout time.Duration

	// Resolver is the DNS server ("host:port") used for the host's address
	// and for SPF, DMARC and MX. Empty means the first nameserver of
	// /etc/resolv.conf.
	Resolver string

	// RootCAs verifies certificate chains. Nil means the system roots.
	RootCAs *x509.CertPool

	// ServerName is the name certificates must be valid for, also sent as
	// SNI. Empty means Host (for an IP address, the IP must be in the
	// certificate's SANs).
	ServerName string

	// EHLOName is the name the auditor gives in EHLO. Empty means the
	// address literal of the local end of each connection (RFC 5321
	// section 4.1.3), which is always syntactically valid.
	EHLOName string

	// MailFrom is the reverse path of relay probes. Empty means
	// DefaultMailFrom.
	MailFrom string

	// RelayTo is the external recipient of relay probes. Empty means
	// DefaultRelayTo. Its domain must not be local to the audited host.
	RelayTo string

	// SkipRelay turns the open relay probes off.
	SkipRelay bool

	// Now is the clock for certificate expiry. Nil means time.Now.
	Now func() time.Time
}

// withDefaults returns a copy of c with every zero field filled in.
func (c Config) withDefaults() Config {
	if c.Services == nil {
		c.Services = DefaultServices()
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ServerName == "" {
		c.ServerName = strings.TrimSuffix(c.Host, ".")
	}
	if c.MailFrom == "" {
		c.MailFrom = DefaultMailFrom
	}
	if c.RelayTo == "" {
		c.RelayTo = DefaultRelayTo
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Domain = strings.TrimSuffix(strings.ToLower(c.Domain), ".")
	return c
}

// Run audits cfg.Host and, with cfg.Domain, the domain's DNS records. The
// ports are checked concurrently; findings come back in a stable order
// (ports in the order of cfg.Services, then DNS). An error means the audit
// could not start (for example, Host does not resolve); everything that goes
// wrong with one port or record is a finding instead.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Host == "" {
		return nil, errors.New("audit: no host given")
	}
	cfg = cfg.withDefaults()
	start := time.Now()
	res, err := newResolver(cfg.Resolver, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("audit %s: %w", cfg.Host, err)
	}
	addr, err := res.hostAddr(ctx, cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("audit %s: %w", cfg.Host, err)
	}

	a := &auditor{cfg: cfg, addr: addr, res: res}
	parts := make([][]Finding, len(cfg.Services)+1)
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelServices)
	for i, svc := range cfg.Services {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			parts[i] = a.checkService(ctx, svc)
		})
	}
	if cfg.Domain != "" {
		wg.Go(func() { parts[len(cfg.Services)] = a.checkDomain(ctx, cfg.Domain) })
	}
	wg.Wait()

	r := &Report{Host: cfg.Host, Address: addr.String(), Domain: cfg.Domain, Started: start.UTC()}
	r.Findings = append(r.Findings, Finding{
		Grade: Info, Check: "host", Detail: fmt.Sprintf("auditing %s at %s", cfg.Host, addr),
	})
	open := 0
	for i, p := range parts {
		if i < len(cfg.Services) && !portClosed(p) {
			open++
		}
		r.Findings = append(r.Findings, p...)
	}
	if open == 0 && len(cfg.Services) > 0 {
		r.Findings = append(r.Findings, Finding{
			Grade: Fail, Check: "host", Detail: "no mail service answered on any checked port",
			Advice: "check the host name and --ports, and that the host is reachable from here",
		})
	}
	r.Duration = time.Since(start).Round(time.Millisecond)
	return r, nil
}

// auditor carries what every check needs.
type auditor struct {
	cfg  Config
	addr netip.Addr
	res  *resolver
}

// dialAddr is the TCP address of a port on the audited host.
func (a *auditor) dialAddr(port int) string {
	return net.JoinHostPort(a.addr.String(), fmt.Sprint(port))
}

// localDomain is the domain of "local-looking" relay probe addresses.
func (a *auditor) localDomain() string {
	if a.cfg.Domain != "" {
		return a.cfg.Domain
	}
	if _, err := netip.ParseAddr(a.cfg.Host); err == nil {
		return addrLiteral(a.addr)
	}
	return strings.ToLower(strings.TrimSuffix(a.cfg.Host, "."))
}

// addrLiteral formats an IP as an SMTP address literal (RFC 5321 4.1.3).
func addrLiteral(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		return "[IPv6:" + ip.String() + "]"
	}
	return "[" + ip.String() + "]"
}

// portClosed reports whether a service's findings say it did not answer.
func portClosed(fs []Finding) bool {
	return len(fs) == 1 && fs[0].closed
}
