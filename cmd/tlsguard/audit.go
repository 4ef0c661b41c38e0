package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/tlsguard/tlsguard/audit"
)

func init() {
	register("audit", "check a mail host's TLS, AUTH and relay safety", runAudit)
}

const auditUsage = `usage: tlsguard audit HOST [flags]

Checks a mail host as a security scanner would: STARTTLS and implicit TLS
on the SMTP, IMAP and POP3 ports, TLS versions and certificates, AUTH or
LOGIN before TLS, open relaying (MAIL and RCPT only, never DATA), and with
--domain the domain's SPF, DMARC and MX records. No real credential is
ever sent.

Exit status: 0 when nothing failed, 1 when a check failed, 2 when the audit
could not run.

flags:
`

// runAudit parses the flags of "tlsguard audit"; the checks are in package
// audit. Flags may come before or after HOST.
func runAudit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, auditUsage)
		fs.PrintDefaults()
	}
	var (
		domain     = fs.String("domain", "", "mail `domain` to check SPF, DMARC and MX for; also the local domain of relay probes (default: HOST)")
		ports      = fs.String("ports", "", "comma-separated `list` of ports to check: service names, standard port numbers, or name=port for a non-standard port\n(e.g. \"25,587\" or \"smtp=2525,imap=2143\"; default: 25,587,465,143,993,110,995)")
		jsonOut    = fs.Bool("json", false, "print the report as JSON")
		timeout    = fs.Duration("timeout", audit.DefaultTimeout, "limit for each dial, read, write, TLS handshake and DNS query")
		resolver   = fs.String("resolver", "", "DNS server `host:port` for the host's address, SPF, DMARC and MX (default: /etc/resolv.conf)")
		caFile     = fs.String("ca-file", "", "PEM `file` of CA certificates to verify chains against instead of the system roots")
		serverName = fs.String("servername", "", "`name` certificates must be valid for, also sent as SNI (default: HOST)")
		ehlo       = fs.String("ehlo", "", "`name` to give in EHLO (default: the address literal of this end)")
		mailFrom   = fs.String("mail-from", audit.DefaultMailFrom, "reverse-path `address` of the relay probes")
		relayTo    = fs.String("relay-to", audit.DefaultRelayTo, "external recipient `address` of the relay probes; its domain must not be local to HOST")
		noRelay    = fs.Bool("no-relay", false, "skip the open relay probes")
	)

	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fmt.Fprintln(stderr, "tlsguard audit: give exactly one HOST")
		fs.Usage()
		return 2
	}

	if !strings.Contains(*relayTo, "@") {
		fmt.Fprintf(stderr, "tlsguard audit: --relay-to %q is not an address\n", *relayTo)
		return 2
	}
	services, err := audit.ParsePorts(*ports)
	if err != nil {
		fmt.Fprintln(stderr, "tlsguard audit:", err)
		return 2
	}
	cfg := audit.Config{
		Host:       positional[0],
		Domain:     *domain,
		Services:   services,
		Timeout:    *timeout,
		Resolver:   *resolver,
		ServerName: *serverName,
		EHLOName:   *ehlo,
		MailFrom:   *mailFrom,
		RelayTo:    *relayTo,
		SkipRelay:  *noRelay,
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(stderr, "tlsguard audit: --ca-file:", err)
			return 2
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "tlsguard audit: --ca-file %s: no PEM certificate found\n", *caFile)
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	report, err := audit.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "tlsguard audit:", err)
		return 2
	}
	if *jsonOut {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tlsguard audit:", err)
		return 2
	}
	if report.Failed() {
		return 1
	}
	return 0
}
