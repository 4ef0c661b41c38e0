package proxy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/proxy"
)

// dsnBackend is a fake backend that offers DSN.
func dsnBackend(t *testing.T) *fakeBackend {
	return newFakeBackend(t, func(fb *fakeBackend) {
		fb.configure = func(s *smtp.Server) { s.EnableDSN = true }
	})
}

func withDSN(m proxy.DSNMode) envOpt { return func(c *proxy.Config) { c.DSN = m } }

// sendDSNRequest sends one message with DSN requests for two recipients.
func sendDSNRequest(c *client, from string) {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+"> RET=FULL ENVID=env1", 250)
	c.cmd("RCPT TO:<bob@example.org> NOTIFY=SUCCESS", 250)
	c.cmd("RCPT TO:<carol@example.org> NOTIFY=DELAY,FAILURE,SUCCESS ORCPT=rfc822;carol@example.org", 250)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: dsn\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.cmd("QUIT", 221)
}

// DSN requests that reach the backend, by dsn mode and by who asks: a
// client that is neither logged in nor trusted loses NOTIFY=SUCCESS and
// DELAY (NEVER when nothing is left), keeps the rest, and the transaction
// log says what was stripped.
func TestDSNRequestsReachingBackend(t *testing.T) {
	stripped := []string{"RCPT TO:<bob@example.org> NOTIFY=NEVER", "RCPT TO:<carol@example.org> NOTIFY=FAILURE ORCPT=RFC822;carol@example.org"}
	asked := []string{"RCPT TO:<bob@example.org> NOTIFY=SUCCESS", "RCPT TO:<carol@example.org> NOTIFY=DELAY,FAILURE,SUCCESS ORCPT=RFC822;carol@example.org"}
	trustLoopback := func(c *proxy.Config) {
		p, err := policy.Parse("trusted.yaml", []byte("local_domains: [example.org]\ntrusted_networks: [127.0.0.0/8]\n"))
		if err != nil {
			t.Fatal(err)
		}
		c.Policy = p
	}
	cases := []struct {
		name     string
		opts     []envOpt
		listener string
		auth     bool
		want     []string
		log      string // dsn_stripped in the transaction line, "" for none
	}{
		{"default, not logged in", nil, lMX, false, stripped, "[NOTIFY=SUCCESS NOTIFY=DELAY]"},
		{"authenticated, not logged in", []envOpt{withDSN(proxy.DSNAuthenticated)}, lSubmission, false, stripped, "[NOTIFY=SUCCESS NOTIFY=DELAY]"},
		{"authenticated, logged in", nil, lSubmissions, true, asked, ""},
		{"authenticated, trusted network", []envOpt{trustLoopback}, lMX, false, asked, ""},
		{"all, not logged in", []envOpt{withDSN(proxy.DSNAll)}, lMX, false, asked, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, dsnBackend(t), tc.opts...)
			c := e.session(t, tc.listener, true, tc.auth)
			sendDSNRequest(c, "carol@foreign.test")
			waitFor(t, "the message at the backend", func() bool { return len(e.be.messages()) == 1 })
			if got := e.be.rawLines("RCPT TO:"); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("backend got\n%q\nwant\n%q", got, tc.want)
			}
			// RET and ENVID only shape the reports that remain: unchanged.
			if got := e.be.rawLines("MAIL FROM:"); len(got) != 1 || !strings.Contains(got[0], " RET=FULL ENVID=env1") {
				t.Errorf("backend got MAIL %q, want RET=FULL ENVID=env1 kept", got)
			}
			waitFor(t, "transaction line", func() bool { return e.logs.FilterMessage("transaction").Len() == 1 })
			f := e.logs.FilterMessage("transaction").All()[0].ContextMap()
			if got, ok := f["dsn_stripped"]; tc.log == "" && ok || tc.log != "" && fmt.Sprint(got) != tc.log {
				t.Errorf("dsn_stripped = %v (present %v), want %q", got, ok, tc.log)
			}
		})
	}
}

// dsn: none does not advertise DSN, even over a backend that offers it, so
// its parameters are refused (RFC 3461 4: a client sends them only to a
// server that offers DSN) rather than accepted and dropped.
func TestDSNNoneNotAdvertised(t *testing.T) {
	e := newEnv(t, dsnBackend(t), withDSN(proxy.DSNNone))
	c := e.session(t, lSubmissions, true, true)
	if ext := c.ehlo(); contains(ext, "DSN") {
		t.Errorf("dsn: none advertises DSN: %q", ext)
	}
	c.cmd("MAIL FROM:<alice@example.org> RET=HDRS", 504)
	c.cmd("MAIL FROM:<alice@example.org>", 250)
	c.cmd("RCPT TO:<bob@example.org> NOTIFY=SUCCESS", 504)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("QUIT", 221)

	// The control: the default mode advertises DSN over the same backend.
	d := newEnv(t, dsnBackend(t)).dial(t, lMX)
	if ext := d.ehlo(); !contains(ext, "DSN") {
		t.Errorf("the default mode does not advertise the backend's DSN: %q", ext)
	}
}

// An unknown mode is a configuration error, not a silent default.
func TestDSNModeChecked(t *testing.T) {
	pol, _ := policy.Parse("p.yaml", []byte("local_domains: [example.org]\n"))
	if _, err := proxy.New(proxy.Config{Hostname: "mx.example.org", Policy: pol, DSN: "success"}); err == nil {
		t.Error("proxy.New accepted dsn mode \"success\"")
	}
}
