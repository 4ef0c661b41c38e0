package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// httpGet fetches url and returns status and body.
func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the sample whose name and labels match
// (all given label pairs must be present), or -1.
func metricValue(body, name string, labels ...string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(line, labels[i]+`="`+labels[i+1]+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			return v
		}
	}
	return -1
}

// The admin endpoint serves Prometheus metrics that count what a real
// client did, health, and readiness that follows the backend.
func TestOpsAdminMetricsHealthReadiness(t *testing.T) {
	pf := startPostfix(t)
	admin := loopbackAddr(t)
	g := startTLSGuard(t, pf, withConfig(fmt.Sprintf("admin:\n  address: %q\n", admin)))
	base := "http://" + admin

	// A real client: swaks over implicit TLS with AUTH, relaying.
	runSwaks(t, g.Submissions, g.PKI, "--tlsc", "--auth", "PLAIN",
		"--auth-user", aliceUser, "--auth-password", alicePass, "--from", alice, "--to", carol).expectOK(t)
	pf.WaitMessages(t, carol, 1)
	// And a refused relay on the STARTTLS port.
	c := dialSMTP(t, g.Submission)
	c.ehlo("client.test")
	c.cmd("MAIL FROM:<x@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+dave+">").expectPrefix(t, relayDenied)
	c.cmd("QUIT")

	if code, body := httpGet(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz with the backend up = %d %q", code, body)
	}

	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = httpGet(t, base+"/metrics")
		if metricValue(body, "tlsguard_messages_total", "listener", "submissions", "result", "delivered") >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"tlsguard_sessions_total", []string{"listener", "submissions"}},
		{"tlsguard_tls_handshakes_total", []string{"listener", "submissions", "mode", "implicit", "result", "ok"}},
		{"tlsguard_auth_total", []string{"listener", "submissions", "mechanism", "PLAIN", "result", "success"}},
		{"tlsguard_messages_total", []string{"listener", "submissions", "result", "delivered"}},
		{"tlsguard_backend_replies_total", []string{"stage", "data", "code", "250"}},
		{"tlsguard_delivery_latency_seconds_count", []string{"listener", "submissions"}},
		{"tlsguard_policy_decisions_total", []string{"action", "reject"}},
		{"tlsguard_relay_denied_total", []string{"listener", "submission"}},
		{"tlsguard_certificate_expiry_timestamp_seconds", []string{"name", "mail.example.org"}},
	} {
		if v := metricValue(body, m.name, m.labels...); v < 1 {
			t.Errorf("metric %s%v = %v, want >= 1", m.name, m.labels, v)
		}
	}
	// Bounded labels: no user name, address or client IP ever appears.
	for _, secret := range []string{aliceUser, alice, carol, dave, "x@foreign.test", alicePass} {
		if strings.Contains(body, secret) {
			t.Errorf("metrics contain %q", secret)
		}
	}
	if regexp.MustCompile(`client_ip|[{,]ip="`).MatchString(body) {
		t.Error("metrics have a client IP label")
	}

	// Readiness follows the backend (probes are cached for 3 s).
	pf.Stop(t)
	deadline = time.Now().Add(15 * time.Second)
	for {
		code, _ := httpGet(t, base+"/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d with the backend stopped", code)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d with the backend stopped; the process is alive", code)
	}
}

// A policy that makes an open relay stops tlsguard before it listens.
func TestOpsRefusesToStartAsOpenRelay(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	writeFile(t, pol, "local_domains: [example.org]\ntrusted_networks: [\"203.0.0.0/8\"]\n")
	addr := loopbackAddr(t)
	cfg := filepath.Join(dir, "tlsguard.yaml")
	writeFile(t, cfg, fmt.Sprintf("hostname: mail.example.org\nstate_dir: %q\nlisteners:\n  - {name: mx, address: %q, tls: none}\nbackend: {address: \"127.0.0.1:1\"}\npolicy: %q\n",
		filepath.Join(dir, "state"), addr, pol))
	out, err := exec.Command(tlsguardBinary(t), "serve", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("tlsguard started with an open-relay policy:\n%s", out)
	}
	if !strings.Contains(string(out), "open relay") || !strings.Contains(string(out), pol) {
		t.Errorf("output does not explain the refusal:\n%s", out)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on %s", addr)
	}

	// Said explicitly, it starts, with a loud warning.
	writeFile(t, pol, "allow_open_relay: true\nlocal_domains: [example.org]\ntrusted_networks: [\"203.0.0.0/8\"]\n")
	g := startBinary(t, cfg, addr)
	expectLogLine(t, g, "OPEN RELAY allowed by the policy (allow_open_relay: true): anyone may send mail anywhere through this proxy")
}

// HAProxy in front of tlsguard with PROXY protocol v2: the trusted-network
// rule sees the real client (127.0.0.2 is trusted, 127.0.0.3 is not), for
// STARTTLS and implicit TLS listeners; nobody else may send a header, and
// the load balancer must.
func TestOpsHAProxyProxyProtocol(t *testing.T) {
	haproxy := requireTool(t, "haproxy")
	pf := startPostfix(t)
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	direct, directTLS := loopbackAddr(t), loopbackAddr(t)
	front, frontTLS := loopbackAddr(t), loopbackAddr(t)

	pol := filepath.Join(dir, "policy.yaml")
	writeFile(t, pol, "local_domains: [example.org]\ntrusted_networks: [\"127.0.0.2/32\"]\n")
	cfg := filepath.Join(dir, "tlsguard.yaml")
	writeFile(t, cfg, fmt.Sprintf(`hostname: mail.example.org
state_dir: %q
listeners:
  - name: mx
    address: %q
    tls: starttls
    auth: false
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
      header_timeout: 2s
  - name: submissions
    address: %q
    tls: implicit
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
tls:
  certificates:
    - {cert: %q, key: %q}
backend: {address: %q}
policy: %q
log: {level: debug}
`, filepath.Join(dir, "state"), direct, directTLS, pki.CertFile, pki.KeyFile, pf.Addr, pol))
	g := startBinary(t, cfg, direct)

	runHAProxy(t, haproxy, dir, fmt.Sprintf(`global
  maxconn 100
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend smtp
  bind %s
  default_backend guard
frontend smtps
  bind %s
  default_backend guardtls
backend guard
  server g1 %s send-proxy-v2 source 127.0.0.1
backend guardtls
  server g2 %s send-proxy-v2 source 127.0.0.1
`, front, frontTLS, direct, directTLS), front)

	relay := func(t *testing.T, c *smtpConn, want string) {
		t.Helper()
		c.ehlo("client.test")
		c.cmd("MAIL FROM:<x@client.test>").expect(t, 250)
		c.cmd("RCPT TO:<"+dave+">").expectPrefix(t, want)
		c.cmd("QUIT")
	}
	t.Run("trusted client through haproxy relays", func(t *testing.T) {
		relay(t, dialSMTPFrom(t, "127.0.0.2", front), "250 ")
	})
	t.Run("untrusted client through haproxy is refused", func(t *testing.T) {
		relay(t, dialSMTPFrom(t, "127.0.0.3", front), relayDenied)
	})
	t.Run("implicit TLS: header below TLS", func(t *testing.T) {
		raw := dialFrom(t, "127.0.0.2", frontTLS)
		tc := tls.Client(raw, &tls.Config{ServerName: "mail.example.org", RootCAs: pki.Pool})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS through haproxy: %v", err)
		}
		c := newSMTPConn(t, tc)
		c.read().expect(t, 220)
		relay(t, c, "250 ")
	})
	t.Run("the load balancer must send a header", func(t *testing.T) {
		c := dialSMTPRaw(t, "127.0.0.1", direct)
		c.expectClosed()
	})
	t.Run("an untrusted peer cannot claim an address", func(t *testing.T) {
		// A direct client is greeted at once; its forged header is then
		// read as a non-SMTP first line and the connection closed, never
		// taken as its address.
		raw := dialFrom(t, "127.0.0.3", direct)
		fmt.Fprintf(raw, "PROXY TCP4 127.0.0.2 127.0.0.1 40000 25\r\n")
		c := newSMTPConn(t, raw)
		c.read().expect(t, 220)
		c.expectClosed()
	})
	t.Run("an untrusted peer may connect directly", func(t *testing.T) {
		relay(t, dialSMTPFrom(t, "127.0.0.3", direct), relayDenied)
	})
	expectLogLine(t, g, "transaction", `"client_ip":"127.0.0.2"`)
	expectLogLine(t, g, "PROXY header refused")
	expectLogLine(t, g, "session", `"client_ip":"127.0.0.3"`, `"end":"non-SMTP client"`)
}

// dialFrom connects to addr from the local address src (any 127.0.0.0/8
// address is local on Linux).
func dialFrom(t testing.TB, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialSMTPFrom connects from src and reads the greeting.
func dialSMTPFrom(t testing.TB, src, addr string) *smtpConn {
	t.Helper()
	c := newSMTPConn(t, dialFrom(t, src, addr))
	c.read().expect(t, 220)
	return c
}

// dialSMTPRaw connects from src without reading anything.
func dialSMTPRaw(t testing.TB, src, addr string) *smtpConn {
	t.Helper()
	return newSMTPConn(t, dialFrom(t, src, addr))
}

// startBinary runs tlsguard with a config the test wrote, waits for addr,
// and stops it with SIGTERM at the end (its log shown on failure).
func startBinary(t testing.TB, cfg, addr string) *TLSGuard {
	t.Helper()
	dir := filepath.Dir(cfg)
	g := &TLSGuard{Dir: dir, ConfigFile: cfg, LogFile: filepath.Join(dir, "tlsguard.log")}
	g.cmd, g.exited = runGuard(t, dir, cfg, g.LogFile)
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() {
			t.Logf("tlsguard log:\n%s", g.Log())
		}
	})
	if err := waitListening(addr, g.exited, guardStartTimeout); err != nil {
		t.Fatalf("tlsguard: %v\n%s", err, g.Log())
	}
	return g
}

// SIGHUP re-reads the config: a listener removed stops accepting while its
// open session finishes its message, a listener added starts, a broken file
// changes nothing, and a section that needs a restart is named in the log.
func TestOpsReloadConfigListeners(t *testing.T) {
	pf := startPostfix(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	writeFile(t, pol, "local_domains: [example.org]\ntrusted_networks: []\n")
	oldAddr, newAddr := loopbackAddr(t), loopbackAddr(t)
	config := func(name, addr, timeout string) string {
		return fmt.Sprintf("hostname: mail.example.org\nstate_dir: %q\nlisteners:\n  - {name: %s, address: %q, tls: none}\n"+
			"backend: {address: %q, timeout: %s}\npolicy: %q\nlog: {level: debug}\n", filepath.Join(dir, "state"), name, addr, pf.Addr, timeout, pol)
	}
	cfg := filepath.Join(dir, "tlsguard.yaml")
	writeFile(t, cfg, config("old", oldAddr, "30s"))
	g := startBinary(t, cfg, oldAddr)

	c := dialSMTP(t, oldAddr)
	c.ehlo("client.test")
	c.cmd("MAIL FROM:<x@client.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+bob+">").expect(t, 250)

	writeFile(t, cfg, config("new", newAddr, "30s"))
	g.cmd.Process.Signal(syscall.SIGHUP)
	if err := waitListening(newAddr, g.exited, 10*time.Second); err != nil {
		t.Fatalf("added listener: %v\n%s", err, g.Log())
	}
	expectLogLine(t, g, "listener closed; its open sessions finish", `"listener":"old"`)
	if conn, err := net.DialTimeout("tcp", oldAddr, time.Second); err == nil {
		conn.Close()
		t.Errorf("removed listener %s still accepts", oldAddr)
	}
	// The session on the removed listener finishes its message.
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: across a reload\r\n\r\nhello\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT")
	pf.WaitMessages(t, bob, 1)

	// A broken file changes nothing.
	writeFile(t, cfg, strings.Replace(config("new", newAddr, "30s"), "tls: none", "tls: nonsense", 1))
	g.cmd.Process.Signal(syscall.SIGHUP)
	expectLogLine(t, g, "config reload refused; the old one stays in force", "nonsense")
	n := dialSMTP(t, newAddr)
	n.ehlo("client.test")
	n.cmd("QUIT")

	// A restart-only section is named, and keeps its running value.
	writeFile(t, cfg, config("new", newAddr, "45s"))
	g.cmd.Process.Signal(syscall.SIGHUP)
	expectLogLine(t, g, "config sections changed that apply only at restart; they keep their running values until then", `"backend"`)
}

// With greeting_delay, a client that talks before the greeting (as spambots
// do) gets 554 5.5.1 and is disconnected; one that waits is served.
func TestOpsEarlyTalkerRefused(t *testing.T) {
	pf := startPostfix(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	writeFile(t, pol, "local_domains: [example.org]\ntrusted_networks: []\n")
	addr := loopbackAddr(t)
	cfg := filepath.Join(dir, "tlsguard.yaml")
	writeFile(t, cfg, fmt.Sprintf("hostname: mail.example.org\nstate_dir: %q\nlisteners:\n  - {name: mx, address: %q, tls: none, greeting_delay: 700ms}\n"+
		"backend: {address: %q}\npolicy: %q\nlog: {level: debug}\n", filepath.Join(dir, "state"), addr, pf.Addr, pol))
	g := startBinary(t, cfg, addr)

	early := newSMTPConn(t, dialFrom(t, "127.0.0.1", addr))
	early.send("EHLO spambot.test\r\n")
	early.read().expectPrefix(t, "554 5.5.1 ")
	early.expectClosed()
	expectLogLine(t, g, "session", `"end":"data before greeting"`)

	c := dialSMTP(t, addr) // reads the greeting first, as RFC 5321 asks
	c.ehlo("client.test")
	c.openData(t, "x@client.test", bob)
	c.send("Subject: patient\r\n\r\nhello\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT")
	pf.WaitMessages(t, bob, 1)
}

// Every listener's series exist at 0 from the start, before its first
// session; the certificate-expiry label is a DNS name, never an address
// (the test certificate also names 127.0.0.1).
func TestOpsMetricsBeforeFirstSession(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	admin := loopbackAddr(t)
	startTLSGuard(t, pf, withConfig(fmt.Sprintf("admin:\n  address: %q\n", admin)))
	// The harness's readiness probes are sessions too: wait until tlsguard
	// has seen them end (at most a few seconds under load).
	var body string
	waitUntil(t, "the readiness probes' sessions end", 10*time.Second, func() bool {
		_, body = httpGet(t, "http://"+admin+"/metrics")
		for _, l := range []string{"submissions", "submission", "submission-strict", "mx"} {
			if metricValue(body, "tlsguard_sessions_open", "listener", l) > 0 {
				return false
			}
		}
		return true
	})
	for _, l := range []string{"submissions", "submission", "submission-strict", "mx"} {
		for _, m := range []struct {
			name   string
			labels []string
		}{
			{"tlsguard_sessions_open", nil},
			{"tlsguard_messages_total", []string{"result", "delivered"}},
			{"tlsguard_messages_total", []string{"result", "failed"}},
			{"tlsguard_relay_denied_total", nil},
			{"tlsguard_connections_refused_total", []string{"reason", "limit_per_ip"}},
			{"tlsguard_delivery_latency_seconds_count", nil},
		} {
			if v := metricValue(body, m.name, append([]string{"listener", l}, m.labels...)...); v != 0 {
				t.Errorf("%s{listener=%q %v} = %v before any session, want a series at 0", m.name, l, m.labels, v)
			}
		}
	}
	if v := metricValue(body, "tlsguard_auth_total", "listener", "submissions", "mechanism", "PLAIN", "result", "failure"); v != 0 {
		t.Errorf("auth_total for submissions = %v, want a series at 0", v)
	}
	if v := metricValue(body, "tlsguard_auth_total", "listener", "mx"); v != -1 {
		t.Errorf("auth_total for mx, which offers no AUTH: %v", v)
	}
	if v := metricValue(body, "tlsguard_certificate_expiry_timestamp_seconds", "name", "mail.example.org"); v < 1 {
		t.Errorf("no certificate expiry for mail.example.org")
	}
	if m := regexp.MustCompile(`tlsguard_certificate_expiry_timestamp_seconds\{name="[0-9.:]*"`).FindString(body); m != "" {
		t.Errorf("an address as a certificate name label: %s", m)
	}
}
