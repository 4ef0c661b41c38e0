package e2e

// The open-relay battery against the real binary and Postfix: every classic
// address trick, for an unauthenticated client (never relayed, never made
// local) and for a trusted-network client (relaying is allowed, so the
// check is that a trick never counts as local and that the backend gets
// exactly the canonical address tlsguard judged). Plus nmap's
// smtp-open-relay script. TestRelayTricksRefusedForUnauthenticated has the
// first six tricks; this is the full list.

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// relayTrick is one RCPT TO argument. local, if set, is the only address
// the backend may receive for it (the trick is really a local address);
// otherwise it must never be accepted from an unauthenticated client.
type relayTrick struct {
	name, arg, local string
}

var relayTricks = []relayTrick{
	{"percent hack", "<carol%foreign.test@example.org>", ""},
	{"percent hack quoted", `<"carol%foreign.test"@example.org>`, ""},
	{"percent hack double", "<carol%foreign.test%example.org@example.org>", ""},
	{"source route", "<@example.org:carol@foreign.test>", ""},
	{"source route, two hops", "<@example.org,@mail.example.org:carol@foreign.test>", ""},
	{"source route to a local address", "<@foreign.test:alice@example.org>", "alice@example.org"},
	{"bang path", "<foreign.test!carol@example.org>", ""},
	{"bang path, two hops", "<example.org!foreign.test!carol@example.org>", ""},
	{"bang path without domain", "<foreign.test!carol>", ""},
	{"quoted local part with @", `<"carol@foreign.test"@example.org>`, ""},
	{"quoted local part with escaped @", `<"carol\@foreign.test"@example.org>`, ""},
	{"quoted local part with >", `<"carol>"@example.org>`, ""},
	{"quoted plain local part", `<"alice"@example.org>`, "alice@example.org"},
	{"two @", "<carol@foreign.test@example.org>", ""},
	{"two @, local last", "<alice@example.org@foreign.test>", ""},
	{"empty label @@", "<carol@@example.org>", ""},
	{"IPv4 literal", "<alice@[127.0.0.1]>", ""},
	{"IPv6 literal", "<alice@[IPv6:::1]>", ""},
	{"foreign IP literal", "<carol@[192.0.2.1]>", ""},
	{"local domain with trailing dot", "<alice@example.org.>", "alice@example.org"},
	{"foreign domain with trailing dot", "<carol@foreign.test.>", ""},
	{"local domain in upper case", "<Alice@EXAMPLE.ORG>", "Alice@example.org"},
	{"foreign domain in upper case", "<carol@FOREIGN.TEST>", ""},
	{"local domain as a prefix", "<carol@example.org.foreign.test>", ""},
	{"local domain as a suffix", "<carol@foreign.test.example.org>", ""},
	{"local domain as a substring", "<carol@notexample.org>", ""},
	{"comment in the domain", "<carol@foreign.test(example.org)>", ""},
	{"comment in the local part", "<carol(x)@foreign.test>", ""},
	{"fullwidth dot", "<carol@foreign.test\uff0eexample.org>", ""},
	{"ideographic full stop", "<carol@example.org\u3002foreign.test>", ""},
	{"no angle brackets", "carol@foreign.test", ""},
	{"space before the bracket", " <carol@foreign.test>", ""},
	{"space inside the brackets", "< carol@foreign.test >", ""},
	{"double brackets", "<<carol@foreign.test>>", ""},
	{"unclosed bracket", "<carol@foreign.test", ""},
	{"local then foreign", "<alice@example.org> <carol@foreign.test>", ""},
	{"foreign after the bracket", "<alice@example.org>carol@foreign.test", ""},
	{"tab before the bracket", "\t<carol@foreign.test>", ""},
	{"postmaster without domain", "<postmaster>", "postmaster@example.org"},
	{"null recipient", "<>", ""},
}

// A trick refused by the policy or the parser; not a 2xx, and not a 4xx
// that the client would retry forever.
func expectTrickRefused(t testing.TB, tr relayTrick, r reply) {
	t.Helper()
	if r.code/100 != 5 {
		t.Errorf("%s: RCPT TO:%s got %q, want a 5xx", tr.name, tr.arg, r.raw)
	}
}

// Unauthenticated, on the MX listener in plaintext and inside TLS, with the
// null sender, a postmaster sender and a forged local sender: no trick
// reaches a foreign mailbox, and the backend receives only the canonical
// local addresses.
func TestHardeningRelayBatteryUnauthenticated(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	senders := []string{"<>", "<postmaster@example.org>", "<alice@example.org>", "<someone@foreign.test>"}
	for i, from := range senders {
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		if i%2 == 1 {
			c.startTLS(g.PKI.clientTLS())
			c.ehlo("client.example.net")
		}
		c.cmd("MAIL FROM:"+from).expect(t, 250)
		var allowed []string
		for _, tr := range relayTricks {
			r := c.cmd("RCPT TO:" + tr.arg)
			if tr.local != "" && r.code == 250 {
				allowed = append(allowed, strings.ToLower(tr.local))
				continue
			}
			expectTrickRefused(t, tr, r)
		}
		// The plain case, and the exact relay refusal.
		expectRelayDenied(t, c.cmd("RCPT TO:<"+carol+">"))
		c.cmd("RCPT TO:<"+bob+">").expect(t, 250)
		allowed = append(allowed, bob)
		c.cmd("DATA").expect(t, 354)
		c.send("Subject: relay battery " + from + "\r\n\r\nbody\r\n.\r\n")
		end := c.read().expect(t, 250)
		c.cmd("QUIT").expect(t, 221)

		for _, got := range waitPostfixRecipients(t, pf, queueIDOf(end)) {
			if !slices.Contains(allowed, strings.ToLower(got)) {
				t.Errorf("sender %s: the backend received RCPT %q; only %q were accepted as local", from, got, allowed)
			}
		}
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, carol, dave)
	log := pf.Log()
	for _, marker := range []string{"foreign.test!", "%foreign.test", "@[", "foreign.test@example.org", "notexample"} {
		if strings.Contains(log, marker) {
			t.Errorf("the backend saw a trick address (%q in its log)", marker)
		}
	}
}

// transactionLog is the part of tlsguard's "transaction" line checked here.
type transactionLog struct {
	Msg    string   `json:"msg"`
	Rcpts  []string `json:"rcpts"`
	Rules  []string `json:"rules"`
	Result string   `json:"result"`
}

// transactionFor returns the transaction log line whose result carries
// queue id.
func transactionFor(t testing.TB, g *TLSGuard, id string) transactionLog {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, line := range strings.Split(g.Log(), "\n") {
			var tx transactionLog
			if json.Unmarshal([]byte(line), &tx) == nil && tx.Msg == "transaction" && strings.HasSuffix(tx.Result, " "+id) {
				return tx
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no transaction log line for queue id %s", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A trusted-network client may relay, so a trick may be accepted; but an
// ambiguous address is never judged by the local-domains rule, and the
// backend receives exactly the canonical address tlsguard judged and
// logged, nothing reinterpreted on the way.
func TestHardeningRelayBatteryTrustedNetwork(t *testing.T) {
	t.Parallel()
	// A backend that treats bare LF normally and accepts what it is given.
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withTrustedNetworks("127.0.0.0/8"))

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<app@example.org>").expect(t, 250)
	accepted := 0
	for _, tr := range relayTricks {
		r := c.cmd("RCPT TO:" + tr.arg)
		t.Logf("%-35s RCPT TO:%-50q %s", tr.name, tr.arg, strings.TrimSpace(r.raw))
		if r.code/100 == 2 {
			accepted++
		}
		if r.code/100 == 4 {
			t.Errorf("%s: RCPT TO:%s got %q", tr.name, tr.arg, r.raw)
		}
	}
	c.cmd("RCPT TO:<"+carol+">").expect(t, 250) // relaying is allowed here
	accepted++
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: relay battery, trusted network\r\n\r\nbody\r\n.\r\n")
	end := c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	tx := transactionFor(t, g, queueIDOf(end))
	if len(tx.Rcpts) != accepted || len(tx.Rules) != accepted {
		t.Fatalf("transaction log has %d rcpts and %d rules, %d RCPTs were accepted: %+v", len(tx.Rcpts), len(tx.Rules), accepted, tx)
	}
	for i, rcpt := range tx.Rcpts {
		at := strings.LastIndex(rcpt, "@")
		local, domain := rcpt[:max(at, 0)], rcpt[at+1:]
		routing := strings.ContainsAny(local, `@%!":`) || strings.HasPrefix(domain, "[")
		if routing && tx.Rules[i] == "local_domains" {
			t.Errorf("%q was judged local (rule %s)", rcpt, tx.Rules[i])
		}
		if domain != strings.ToLower(domain) {
			t.Errorf("%q forwarded with a domain not in canonical lower case", rcpt)
		}
	}
	// What the backend received, recipient by recipient, is what was logged.
	// Postfix drops duplicate recipients, and compares without case.
	canon := func(list []string) []string {
		out := make([]string, 0, len(list))
		for _, a := range list {
			out = append(out, strings.ToLower(a))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	id := queueIDOf(end)
	deadline := time.Now().Add(20 * time.Second)
	var got []string
	for {
		got = postfixRecipients(pf, id)
		if len(got) >= len(canon(tx.Rcpts)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, want := canon(got), canon(tx.Rcpts)
	if !slices.Equal(got, want) {
		t.Errorf("the backend received recipients\n  %q\ntlsguard judged and logged\n  %q", got, want)
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, victim)
}

// nmap's smtp-open-relay script (16 classic relay tests) reports no open
// relay on the MX and submission listeners. The control run against the
// backend itself (which trusts loopback) must report an open relay, so the
// script demonstrably detects one.
func TestHardeningNmapOpenRelay(t *testing.T) {
	t.Parallel()
	nmap := requireTool(t, "nmap")
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	run := func(addr string) string {
		t.Helper()
		_, port, _ := net.SplitHostPort(addr)
		datadir := t.TempDir()
		writeFile(t, filepath.Join(datadir, "nmap-services"), "smtp\t"+port+"/tcp\t0.5\t# under test\n")
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, nmap, "-Pn", "-n", "-p", port, "--datadir", datadir,
			"--script", "smtp-open-relay", "--script-args", "smtp-open-relay.domain=foreign.test,smtp-open-relay.to=carol,smtp-open-relay.ip=127.0.0.1",
			"127.0.0.1").CombinedOutput()
		if err != nil {
			t.Fatalf("nmap: %v\n%s", err, out)
		}
		t.Logf("nmap smtp-open-relay on %s:\n%s", addr, out)
		return string(out)
	}
	if out := run(pf.Addr); !strings.Contains(out, "Server is an open relay") {
		t.Errorf("control: nmap did not find the loopback-trusting backend an open relay; the check below proves nothing")
	}
	for _, addr := range []string{g.MX, g.Submission} {
		out := run(addr)
		if strings.Contains(out, "Server is an open relay") || !strings.Contains(out, "smtp-open-relay:") {
			t.Errorf("%s: nmap reports an open relay (or ran no test)", addr)
		}
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, carol)
}
