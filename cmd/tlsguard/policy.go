package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/policy"
)

func init() {
	register("policy", "check, explain and test relay policy files", runPolicy)
}

// The usage of each policy subcommand, so that "policy test --help" prints
// its own and "policy --help" all three.
const (
	policyCheckUsage = `  tlsguard policy check FILE...
      validate policy files and run the open-relay self-test; exit 0, or print
      every error as file:line: key: message and exit 1. Files named
      *.cases.yaml are test tables for "policy test" and are skipped
`
	policyExplainUsage = `  tlsguard policy explain --policy FILE --from ADDR --to ADDR [--to ADDR...]
                          [--user NAME] [--ip IP] [--tls] [--listener NAME]
                          [--size BYTES] [--prior-recipients N]
                          [--group DN...] [--address ADDR...]
      print the decision, the SMTP reply, the rule (file:line) that decided,
      and why each earlier rule did not match
`
	policyTestUsage = `  tlsguard policy test FILE CASES.yaml
      run a table of envelopes with expected decisions; print a diff for each
      failing case; exit 1 if any fails
  tlsguard policy replay --policy CANDIDATE [--current FILE] [--since DURATION]
                         [--json] [--max-groups N] LOG...
      re-evaluate every recipient decision of tlsguard's transaction log
      lines (plain or gzip files, - for stdin) under CANDIDATE; print what
      changes; exit 0 when nothing does, 1 when something does, 2 on bad input
`
	policyUsage = "usage:\n" + policyCheckUsage + policyExplainUsage + policyTestUsage
)

// isHelp reports whether args ask for help rather than give operands; a
// request for help exits 0, a usage error 2.
func isHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return true
		case "--":
			return false
		}
	}
	return false
}

func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, policyUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "check":
		return policyCheck(args[1:], stdout, stderr)
	case "explain":
		return policyExplain(args[1:], stdout, stderr)
	case "test":
		return policyTest(args[1:], stdout, stderr)
	case "replay":
		return policyReplay(args[1:], os.Stdin, stdout, stderr)
	}
	fmt.Fprintf(stderr, "tlsguard policy: unknown subcommand %q\n\n%s", args[0], policyUsage)
	return 2
}

// printLoadError prints a load error one problem per line.
func printLoadError(w io.Writer, err error) {
	var es yamlx.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintln(w, e)
		}
		return
	}
	fmt.Fprintln(w, err)
}

func policyCheck(args []string, stdout, stderr io.Writer) int {
	if isHelp(args) {
		fmt.Fprint(stderr, "usage:\n"+policyCheckUsage)
		return 0
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, "usage:\n"+policyCheckUsage)
		return 2
	}
	code := 0
	for _, file := range args {
		// A shell glob such as policies/*.yaml also names the test tables
		// that sit beside the policies; they are not policies.
		if strings.HasSuffix(file, ".cases.yaml") || strings.HasSuffix(file, ".cases.yml") {
			fmt.Fprintf(stdout, "%s: skipped: a test table, not a policy (run it with: tlsguard policy test POLICY %s)\n", file, file)
			continue
		}
		p, err := policy.Load(file)
		if err != nil {
			printLoadError(stderr, err)
			code = 1
			continue
		}
		// The same refusal serve applies at start and on reload, for
		// every listener a config could give the policy.
		if err := p.OpenRelayCheck(nil); err != nil {
			if !p.AllowOpenRelay() {
				fmt.Fprintf(stderr, "%s: %v\n", file, err)
				// The warnings often say why (a trusted network too broad).
				for _, w := range p.Warnings() {
					fmt.Fprintf(stderr, "warning: %s\n", w)
				}
				code = 1
				continue
			}
			fmt.Fprintf(stdout, "warning: %s: %v\n", file, err)
		}
		fmt.Fprintf(stdout, "%s: ok (%s, %s, %s%s)\n", file, count(len(p.LocalDomains()), "local domain"),
			count(len(p.TrustedNetworks()), "trusted network"), count(len(p.Rules()), "rule"), builtinNote(p))
		for _, w := range p.Warnings() {
			fmt.Fprintf(stdout, "warning: %s\n", w)
		}
	}
	return code
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func builtinNote(p *policy.Policy) string {
	if rs := p.Rules(); len(rs) == 3 && rs[0] == policy.RuleLocalDomains && rs[1] == policy.RuleAuthenticated {
		return ": the built-in local_domains, authenticated, trusted_networks"
	}
	return ""
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func policyExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage:\n"+policyExplainUsage+"\nflags:\n")
		fs.PrintDefaults()
	}
	file := fs.String("policy", "", "the policy file")
	from := fs.String("from", "", `MAIL FROM address ("<>" for the null sender)`)
	var tos stringList
	fs.Var(&tos, "to", "RCPT TO address (repeat for several)")
	user := fs.String("user", "", "the logged-in user (none: not authenticated)")
	ipStr := fs.String("ip", "", "the client IP (none: unknown, never trusted)")
	tls := fs.Bool("tls", false, "the session is encrypted")
	listener := fs.String("listener", "", "the listener name")
	size := fs.Int64("size", 0, "the SIZE= the client declared")
	prior := fs.Int("prior-recipients", 0, "recipients already accepted in this message")
	var groups, addrs stringList
	fs.Var(&groups, "group", "a directory group of the user, as the source reports it (repeat for several; see tlsguard auth test)")
	fs.Var(&addrs, "address", "an address of the user in the directory, for {addresses} (repeat for several)")
	if err := fs.Parse(args); err != nil {
		return helpExit(err)
	}
	if *file == "" || len(tos) == 0 || fs.NArg() > 0 {
		fmt.Fprint(stderr, "policy explain: --policy, --from and --to are required\n\nusage:\n", policyExplainUsage)
		return 2
	}
	var fromSet bool
	fs.Visit(func(f *flag.Flag) { fromSet = fromSet || f.Name == "from" })
	if !fromSet {
		fmt.Fprint(stderr, "policy explain: --from is required (\"<>\" for the null sender)\n")
		return 2
	}
	s := policy.Session{Listener: *listener, TLS: *tls, User: *user, Groups: groups, Addresses: addrs}
	if *user == "" && len(groups)+len(addrs) > 0 {
		fmt.Fprint(stderr, "policy explain: --group and --address describe a logged-in user: give --user too\n")
		return 2
	}
	if *ipStr != "" {
		ip, err := netip.ParseAddr(*ipStr)
		if err != nil {
			fmt.Fprintf(stderr, "policy explain: --ip %q is not an IP address\n", *ipStr)
			return 2
		}
		s.ClientIP = ip
	}
	fromAddr, err := parseCLIAddress(*from)
	if err != nil {
		fmt.Fprintf(stderr, "policy explain: --from %q: %v\n", *from, err)
		return 2
	}
	p, err := policy.Load(*file)
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	env := policy.Envelope{From: fromAddr, Size: *size, Recipients: *prior}
	for i, to := range tos {
		rcpt, err := parseCLIAddress(to)
		if err != nil || rcpt.IsNull() {
			fmt.Fprintf(stderr, "policy explain: --to %q: not a recipient address: %v\n", to, err)
			return 2
		}
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printExplanation(stdout, s, env, rcpt, p.Explain(s, env, rcpt))
	}
	return 0
}

func parseCLIAddress(s string) (policy.Address, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	ascii := true
	for i := 0; i < len(s); i++ {
		ascii = ascii && s[i] < 0x80
	}
	return policy.ParseAddress(s, !ascii)
}

func printExplanation(w io.Writer, s policy.Session, env policy.Envelope, rcpt policy.Address, x policy.Explanation) {
	yes := map[bool]string{true: "yes", false: "no"}
	user := s.User
	if user == "" {
		user = "(not logged in)"
	}
	ip := "(unknown)"
	if s.ClientIP.IsValid() {
		ip = s.ClientIP.String()
	}
	listener := s.Listener
	if listener == "" {
		listener = "(any)"
	}
	fmt.Fprintf(w, "session:  listener %s, tls %s, user %s, client ip %s\n", listener, yes[s.TLS], user, ip)
	fmt.Fprintf(w, "envelope: MAIL FROM:<%s> RCPT TO:<%s>\n", env.From, rcpt)
	d := x.Decision
	fmt.Fprintf(w, "decision: %s\n", d.Action)
	fmt.Fprintf(w, "reply:    %s\n", d.Reply)
	fmt.Fprintf(w, "rule:     %s (%s)\n", d.Rule, d.Source)
	for _, sh := range d.Shadow {
		fmt.Fprintf(w, "shadow:   rule %s (%s, mode: shadow) would %s: %s\n", sh.Rule, sh.Source, sh.Would, sh.Reply)
	}
	fmt.Fprintln(w, "how:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, st := range x.Steps {
		mark := "no match"
		switch {
		case st.Decided:
			mark = "DECIDED"
		case st.Shadow:
			mark = "SHADOW"
		case st.Matched || st.Stage == "limit":
			mark = "ok"
		case st.Stage == "mail":
			mark = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", strings.ToUpper(st.Stage), st.Rule, st.Source, mark, st.Note)
	}
	tw.Flush()
}

func policyTest(args []string, stdout, stderr io.Writer) int {
	if isHelp(args) {
		fmt.Fprint(stderr, "usage:\n"+policyTestUsage)
		return 0
	}
	if len(args) != 2 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, "usage:\n"+policyTestUsage)
		return 2
	}
	p, err := policy.Load(args[0])
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	cases, err := policy.LoadCases(args[1])
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	failed := 0
	for _, r := range p.RunCases(cases) {
		if r.Pass() {
			fmt.Fprintf(stdout, "ok    %s\n", r.Case.Name)
			continue
		}
		failed++
		fmt.Fprintf(stdout, "FAIL  %s (%s)\n", r.Case.Name, r.Case.Source)
		for _, df := range r.Diffs {
			fmt.Fprintf(stdout, "      - %-7s %s\n", df.Field+":", df.Want)
			fmt.Fprintf(stdout, "      + %-7s %s\n", df.Field+":", df.Got)
		}
		if len(r.Diffs) > 0 && r.Diffs[0].Field == "expect" {
			fmt.Fprintf(stdout, "        decided by %s (%s): %s\n", r.Got.Rule, r.Got.Source, r.Got.Reply)
		}
	}
	fmt.Fprintf(stdout, "%s: %d passed, %d failed\n", args[1], len(cases)-failed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}
