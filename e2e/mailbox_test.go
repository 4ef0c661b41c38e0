package e2e

// IMAP and POP3 behind the guard: tlsguard's imap and pop3 listeners in
// front of a private, plaintext Dovecot (the legacy mailbox server), driven
// by Python's imaplib and poplib, curl and openssl s_client.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/audit"
)

// mailboxGuard is tlsguard with four mailbox listeners in front of a
// Dovecot whose passwd file has alice, and whose Maildir holds one message.
type mailboxGuard struct {
	*TLSGuard
	dv                       *auditDovecot
	IMAPS, IMAP, POP3S, POP3 string
}

const (
	mbUser    = "alice"
	mbPass    = "alice-secret-1"
	mbSubject = "known message for the mailbox tests"
)

// startMailboxGuard starts Dovecot and tlsguard; auth goes to Dovecot's
// auth socket (the same passwords as the mailbox server), and extraYAML
// is appended (a limits: section, say). backend replaces the
// mailbox_backend addresses when not "" (a server that is down).
func startMailboxGuard(t *testing.T, extraYAML, backend string) *mailboxGuard {
	t.Helper()
	return startMailboxGuardWith(t, extraYAML, func(dv *auditDovecot, _ *auditPKI) string {
		imapAddr, pop3Addr := net.JoinHostPort(dv.Host, strconv.Itoa(dv.IMAP)), net.JoinHostPort(dv.Host, strconv.Itoa(dv.POP3))
		if backend != "" {
			imapAddr, pop3Addr = backend, backend
		}
		return fmt.Sprintf("mailbox_backend:\n  imap: %q\n  pop3: %q\n  tls: none\n  timeout: 5s\n", imapAddr, pop3Addr)
	})
}

// startMailboxGuardWith is startMailboxGuard with the mailbox_backend
// section (and any backend keys it needs) written by mailbox.
func startMailboxGuardWith(t *testing.T, extraYAML string, mailbox func(dv *auditDovecot, pki *auditPKI) string) *mailboxGuard {
	t.Helper()
	dv, pki := identityDovecot(t)
	dovecotMessage(t, dv, mbUser, "1", mbSubject)
	m := &mailboxGuard{dv: dv, IMAPS: loopbackAddr(t), IMAP: loopbackAddr(t), POP3S: loopbackAddr(t), POP3: loopbackAddr(t)}
	listeners := fmt.Sprintf(`  - name: imaps
    address: %q
    protocol: imap
    tls: implicit
  - name: imap
    address: %q
    protocol: imap
    tls: starttls
  - name: pop3s
    address: %q
    protocol: pop3
    tls: implicit
  - name: pop3
    address: %q
    protocol: pop3
    tls: starttls
`, m.IMAPS, m.IMAP, m.POP3S, m.POP3)
	pf := startPostfix(t)
	m.TLSGuard = startGuardEdited(t, pf.Addr, func(cfg string) string {
		cfg = strings.Replace(cfg, "listeners:\n", "listeners:\n"+listeners, 1)
		// The CA of Dovecot's certificate, for a TLS leg to it; the SMTP
		// backend's leg stays plaintext.
		cfg = strings.Replace(cfg, "  timeout: 30s\n", fmt.Sprintf("  timeout: 30s\n  tls_ca_file: %q\n", pki.CAFile), 1)
		return regexp.MustCompile(`(?m)^auth:\n  users_file: .*\n`).ReplaceAllLiteralString(cfg,
			fmt.Sprintf("auth:\n  sources:\n    - dovecot:\n        socket: %q\n", dv.AuthSocket))
	}, mailbox(dv, pki)+extraYAML)
	for _, a := range []string{m.IMAPS, m.IMAP, m.POP3S, m.POP3} {
		if err := waitListening(a, m.exited, guardStartTimeout); err != nil {
			t.Fatalf("tlsguard: %v\n%s", err, m.Log())
		}
	}
	return m
}

// dovecotMessage puts a message into user's Maildir (new/), readable by
// Dovecot's mail processes (uid nobody).
func dovecotMessage(t *testing.T, dv *auditDovecot, usr, id, subject string) {
	t.Helper()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	home := filepath.Join(dv.Dir, "home", usr)
	for _, d := range []string{"", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"} {
		p := filepath.Join(home, d)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, uid, gid)
	}
	os.Chown(filepath.Join(dv.Dir, "home"), uid, gid)
	msg := "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: " + subject + "\r\nMessage-ID: <" + id + "@example.org>\r\n\r\nHello " + id + ".\r\n"
	tmp := filepath.Join(home, "Maildir", "tmp", id+".e2e")
	if err := os.WriteFile(tmp, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(tmp, uid, gid)
	if err := os.Rename(tmp, filepath.Join(home, "Maildir", "new", "1700000000."+id+".e2e")); err != nil {
		t.Fatal(err)
	}
}

// dovecotLoginLines counts the lines of Dovecot's log written by its login
// processes: any connection that reaches Dovecot leaves one.
func dovecotLoginLines(dv *auditDovecot) int {
	return strings.Count(readFile(filepath.Join(dv.Dir, "dovecot.log")), "-login: ")
}

// mbStep is one line of testdata/mailbox_client.py's output.
type mbStep struct {
	Step    string   `json:"step"`
	OK      bool     `json:"ok"`
	Msg     string   `json:"msg"`
	Subject string   `json:"subject"`
	Exists  int      `json:"exists"`
	Version string   `json:"version"`
	Caps    []string `json:"caps"`
}

// runMailboxClient runs testdata/mailbox_client.py and returns its steps
// by name.
func runMailboxClient(t *testing.T, m *mailboxGuard, addr string, args ...string) map[string]mbStep {
	t.Helper()
	python := requireTool(t, "python3")
	host, port, _ := net.SplitHostPort(addr)
	script, _ := filepath.Abs(filepath.Join("testdata", "mailbox_client.py"))
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	all := append([]string{script, "--host", host, "--port", port, "--cafile", m.PKI.CAFile}, args...)
	out, err := exec.CommandContext(ctx, python, all...).CombinedOutput()
	t.Logf("mailbox_client.py %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("mailbox_client.py: %v", err)
	}
	steps := map[string]mbStep{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var s mbStep
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("mailbox_client.py printed %q: %v", line, err)
		}
		steps[s.Step] = s
	}
	if e, ok := steps["error"]; ok {
		t.Fatalf("mailbox client: %s", e.Msg)
	}
	return steps
}

// Python's imaplib and poplib log in and fetch the known message over each
// listener (993 and 995 implicit TLS, 143 STARTTLS, 110 STLS), with LOGIN,
// USER/PASS and AUTH(ENTICATE) PLAIN; before TLS only STARTTLS/STLS is
// offered, inside it the logins, and after login the backend's own
// capabilities without STARTTLS. Each session leaves one log line.
func TestMailboxPythonClients(t *testing.T) {
	t.Parallel()
	admin := loopbackAddr(t)
	m := startMailboxGuard(t, fmt.Sprintf("admin:\n  address: %q\n", admin), "")
	for _, tc := range []struct {
		name, addr, proto, mode, mech string
	}{
		{"imaps-login", m.IMAPS, "imap", "implicit", "login"},
		{"imaps-plain", m.IMAPS, "imap", "implicit", "plain"},
		{"imap-starttls-login", m.IMAP, "imap", "starttls", "login"},
		{"imap-starttls-plain", m.IMAP, "imap", "starttls", "plain"},
		{"pop3s-user", m.POP3S, "pop3", "implicit", "login"},
		{"pop3-stls-user", m.POP3, "pop3", "starttls", "login"},
		{"pop3-stls-plain", m.POP3, "pop3", "starttls", "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := runMailboxClient(t, m, tc.addr, "--proto", tc.proto, "--mode", tc.mode, "--mech", tc.mech,
				"--user", mbUser, "--password", mbPass)
			if c := s["capabilities"]; tc.mode == "starttls" {
				want := "STARTTLS"
				if tc.proto == "pop3" {
					want = "STLS"
				}
				if !contains(c.Caps, want) || contains(c.Caps, "USER") || containsPrefix(c.Caps, "AUTH=") || contains(c.Caps, "SASL") {
					t.Errorf("capabilities before TLS %v: want %s and no login", c.Caps, want)
				}
				if tc.proto == "imap" && !contains(c.Caps, "LOGINDISABLED") {
					t.Errorf("capabilities before TLS %v: no LOGINDISABLED", c.Caps)
				}
			}
			if c := s["tls"].Caps; contains(c, "STARTTLS") || contains(c, "LOGINDISABLED") || contains(c, "STLS") {
				t.Errorf("capabilities inside TLS %v still offer STARTTLS or LOGINDISABLED", c)
			}
			if !s["login"].OK || s["fetch"].Subject != mbSubject {
				t.Fatalf("login %+v, fetch %+v: want the known message", s["login"], s["fetch"])
			}
		})
	}
	expectLogLine(t, m.TLSGuard, "mailbox session", `"listener":"imaps"`, `"protocol":"imap"`, `"user":"alice"`, `"tls":"1.3"`, `"end":"logout"`)
	expectLogLine(t, m.TLSGuard, "mailbox session", `"listener":"pop3"`, `"protocol":"pop3"`, `"user":"alice"`, `"end":"logout"`)
	expectLogLine(t, m.TLSGuard, "login succeeded", `"protocol":"pop3"`, `"mechanism":"PLAIN"`, `"source":"dovecot"`)
	if strings.Contains(m.Log(), mbPass) {
		t.Error("the password is in tlsguard's log")
	}
	_, body := httpGet(t, "http://"+admin+"/metrics")
	for _, want := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"tlsguard_mailbox_logins_total", []string{"listener", "imaps", "protocol", "imap", "mechanism", "LOGIN", "result", "success"}, 1},
		{"tlsguard_mailbox_logins_total", []string{"listener", "pop3", "protocol", "pop3", "mechanism", "PLAIN", "result", "success"}, 1},
		{"tlsguard_mailbox_sessions_total", []string{"listener", "imap", "protocol", "imap", "end", "logout"}, 2},
		{"tlsguard_mailbox_sessions_open", []string{"protocol", "imap"}, 0},
	} {
		if got := metricValue(body, want.name, want.labels...); got != want.value {
			t.Errorf("%s%v = %v, want %v", want.name, want.labels, got, want.value)
		}
	}
	if got := metricValue(body, "tlsguard_mailbox_bytes_total", "protocol", "pop3", "direction", "out"); got <= 0 {
		t.Errorf("tlsguard_mailbox_bytes_total pop3 out = %v", got)
	}
}

// curl (imaps://, pop3s://, and --ssl-reqd for STARTTLS/STLS) and openssl
// s_client -starttls imap|pop3 fetch the known message.
func TestMailboxCurlOpenSSL(t *testing.T) {
	t.Parallel()
	m := startMailboxGuard(t, "", "")
	curl := requireTool(t, "curl")
	for _, tc := range []struct{ name, url string }{
		{"imaps", "imaps://" + m.IMAPS + "/INBOX;MAILINDEX=1"},
		{"imap-starttls", "imap://" + m.IMAP + "/INBOX;MAILINDEX=1"},
		{"pop3s", "pop3s://" + m.POP3S + "/1"},
		{"pop3-stls", "pop3://" + m.POP3 + "/1"},
	} {
		t.Run("curl-"+tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
			defer cancel()
			out, err := exec.CommandContext(ctx, curl, "-sS", "--ssl-reqd", "--cacert", m.PKI.CAFile, "-u", mbUser+":"+mbPass, tc.url).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Subject: "+mbSubject) {
				t.Fatalf("curl %s: %v\n%s", tc.url, err, out)
			}
		})
	}
	openssl := requireTool(t, "openssl")
	for _, tc := range []struct{ proto, addr, script, want string }{
		{"imap", m.IMAP, "a LOGIN " + mbUser + " " + mbPass + "\nb SELECT INBOX\nc FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]\nd LOGOUT\n", "Subject: " + mbSubject},
		{"pop3", m.POP3, "USER " + mbUser + "\nPASS " + mbPass + "\nRETR 1\nQUIT\n", "Subject: " + mbSubject},
	} {
		t.Run("openssl-"+tc.proto, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", tc.addr, "-starttls", tc.proto,
				"-CAfile", m.PKI.CAFile, "-verify_return_error", "-crlf", "-quiet", "-ign_eof")
			cmd.Stdin = strings.NewReader(tc.script)
			out, err := cmd.CombinedOutput()
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("openssl s_client -starttls %s: %v\n%s", tc.proto, err, out)
			}
		})
	}
}

// mbConn is a raw IMAP or POP3 client connection for the protocol tests.
type mbConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialMailbox(t *testing.T, src, addr string, implicit bool, pki *testPKI) *mbConn {
	t.Helper()
	c := dialFrom(t, src, addr)
	if implicit {
		tc := tls.Client(c, pki.clientTLS())
		c = tc
	}
	m := &mbConn{t: t, c: c, r: bufio.NewReader(c)}
	return m
}

func (m *mbConn) line() string {
	m.t.Helper()
	m.c.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := m.r.ReadString('\n')
	if err != nil {
		m.t.Fatalf("reading (so far %q): %v", l, err)
	}
	return strings.TrimRight(l, "\r\n")
}

func (m *mbConn) send(s string) {
	m.t.Helper()
	m.c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := m.c.Write([]byte(s)); err != nil {
		m.t.Fatalf("writing %q: %v", s, err)
	}
}

// cmd sends an IMAP command and returns every line up to its tagged reply.
func (m *mbConn) cmd(tag, s string) []string {
	m.t.Helper()
	m.send(tag + " " + s + "\r\n")
	return m.until(tag + " ")
}

// until reads lines up to the first that starts with prefix.
func (m *mbConn) until(prefix string) []string {
	m.t.Helper()
	var out []string
	for {
		l := m.line()
		out = append(out, l)
		if strings.HasPrefix(l, prefix) {
			return out
		}
	}
}

// startTLS upgrades the connection after STARTTLS or STLS was accepted.
func (m *mbConn) startTLS(pki *testPKI) {
	m.t.Helper()
	if m.r.Buffered() > 0 {
		m.t.Fatalf("bytes after the STARTTLS reply, before TLS")
	}
	tc := tls.Client(m.c, pki.clientTLS())
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		m.t.Fatalf("TLS handshake: %v", err)
	}
	m.c, m.r = tc, bufio.NewReader(tc)
}

// closed reports whether the server has closed the connection.
func (m *mbConn) closed() bool {
	m.c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, err := m.r.ReadString('\n')
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func last(lines []string) string { return lines[len(lines)-1] }

// Before STARTTLS, IMAP offers STARTTLS and LOGINDISABLED and no AUTH=,
// and refuses LOGIN and AUTHENTICATE with NO [PRIVACYREQUIRED] (a
// synchronising literal gets no "+"); POP3 offers STLS and refuses USER,
// PASS, APOP and AUTH. None of it reaches Dovecot (its log shows no
// connection).
func TestMailboxLoginBeforeTLSRefused(t *testing.T) {
	t.Parallel()
	m := startMailboxGuard(t, "", "")
	before := dovecotLoginLines(m.dv)
	c := dialMailbox(t, "127.0.0.1", m.IMAP, false, m.PKI)
	if g := c.line(); !strings.Contains(g, "STARTTLS") || !strings.Contains(g, "LOGINDISABLED") || strings.Contains(g, "AUTH=") {
		t.Errorf("greeting %q", g)
	}
	caps := c.cmd("a", "CAPABILITY")
	if !strings.Contains(caps[0], "STARTTLS LOGINDISABLED") || strings.Contains(caps[0], "AUTH=") {
		t.Errorf("CAPABILITY before TLS: %q", caps)
	}
	for i, cmd := range []string{"LOGIN " + mbUser + " " + mbPass, "AUTHENTICATE PLAIN " + b64("\x00"+mbUser+"\x00"+mbPass), "AUTHENTICATE PLAIN"} {
		tag := "l" + strconv.Itoa(i)
		if r := last(c.cmd(tag, cmd)); !strings.HasPrefix(r, tag+" NO [PRIVACYREQUIRED]") {
			t.Errorf("%s before STARTTLS: %q", strings.Fields(cmd)[0], r)
		}
	}
	c.send("s LOGIN {5}\r\n")
	if r := c.line(); !strings.HasPrefix(r, "s NO [PRIVACYREQUIRED]") {
		t.Errorf("LOGIN with a literal before STARTTLS: %q (want no continuation)", r)
	}

	p := dialMailbox(t, "127.0.0.1", m.POP3, false, m.PKI)
	p.line()
	p.send("CAPA\r\n")
	capa := strings.Join(p.until("."), "\n")
	if !strings.Contains(capa, "STLS") || strings.Contains(capa, "USER") || strings.Contains(capa, "SASL") {
		t.Errorf("CAPA before STLS:\n%s", capa)
	}
	for _, cmd := range []string{"USER " + mbUser, "PASS " + mbPass} {
		p.send(cmd + "\r\n")
		if r := p.line(); !strings.HasPrefix(r, "-ERR") {
			t.Errorf("%s before STLS: %q", cmd, r)
		}
	}
	p.send("AUTH PLAIN " + b64("\x00"+mbUser+"\x00"+mbPass) + "\r\n")
	if r := p.line(); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("AUTH before STLS: %q", r)
	}
	// The session still works: STARTTLS, then a login.
	if r := last(c.cmd("t", "STARTTLS")); !strings.HasPrefix(r, "t OK") {
		t.Fatalf("STARTTLS: %q", r)
	}
	if got := dovecotLoginLines(m.dv); got != before {
		t.Errorf("Dovecot's log has %d new login-process lines before any login inside TLS", got-before)
	}
	c.startTLS(m.PKI)
	if r := last(c.cmd("u", "LOGIN "+mbUser+" "+mbPass)); !strings.HasPrefix(r, "u OK") {
		t.Fatalf("LOGIN inside TLS: %q", r)
	}
	c.cmd("v", "LOGOUT")
}

// Commands pipelined behind STARTTLS (and STLS), in plaintext, are
// discarded: they get no answer inside TLS and log nobody in.
func TestMailboxSTARTTLSInjection(t *testing.T) {
	t.Parallel()
	m := startMailboxGuard(t, "", "")
	c := dialMailbox(t, "127.0.0.1", m.IMAP, false, m.PKI)
	c.line()
	c.send("a STARTTLS\r\nb LOGIN " + mbUser + " " + mbPass + "\r\n")
	if r := c.line(); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("STARTTLS: %q", r)
	}
	c.r = bufio.NewReader(c.c) // what the server may have sent after its OK is read inside TLS
	c.startTLS(m.PKI)
	lines := c.cmd("c", "SELECT INBOX")
	for _, l := range lines {
		if strings.HasPrefix(l, "b ") {
			t.Errorf("the injected LOGIN was answered: %q", l)
		}
	}
	if r := last(lines); !strings.HasPrefix(r, "c BAD") {
		t.Errorf("SELECT after the injected LOGIN: %q (want BAD: not logged in)", r)
	}

	p := dialMailbox(t, "127.0.0.1", m.POP3, false, m.PKI)
	p.line()
	p.send("STLS\r\nUSER " + mbUser + "\r\nPASS " + mbPass + "\r\n")
	if r := p.line(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("STLS: %q", r)
	}
	p.startTLS(m.PKI)
	p.send("STAT\r\n")
	if r := p.line(); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("STAT after the injected USER/PASS: %q (want -ERR: not logged in)", r)
	}
}

// Wrong passwords over SMTP AUTH and IMAP LOGIN from one address count
// against one budget: with auth_max_failures 3, two SMTP failures and one
// IMAP failure end the IMAP session, and the right password from that
// address is then refused on both while another address logs in.
func TestMailboxThrottleSharedWithSMTP(t *testing.T) {
	t.Parallel()
	m := startMailboxGuard(t, "limits:\n  auth_fail_delay: 50ms\n  auth_max_failures: 3\n", "")
	const src = "127.0.31.1"
	for i := 0; i < 2; i++ {
		s := dialImplicitTLSFrom(t, src, m.Submissions, m.PKI.clientTLS())
		s.ehlo("client.example.net")
		s.authPlain("", mbUser, "wrong-"+strconv.Itoa(i)).expectPrefix(t, "535 ")
	}
	c := dialMailbox(t, src, m.IMAPS, true, m.PKI)
	c.line()
	lines := c.cmd("a", "LOGIN "+mbUser+" wrong-imap")
	if !strings.HasPrefix(last(lines), "a NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("wrong password: %q", lines)
	}
	if r := c.line(); !strings.HasPrefix(r, "* BYE") || !c.closed() {
		t.Errorf("the third failure from the address: %q, want * BYE and a hang-up", r)
	}
	c = dialMailbox(t, src, m.IMAPS, true, m.PKI)
	c.line()
	if r := last(c.cmd("b", "LOGIN "+mbUser+" "+mbPass)); strings.HasPrefix(r, "b OK") {
		t.Errorf("the right password from the throttled address: %q", r)
	}
	s := dialImplicitTLSFrom(t, src, m.Submissions, m.PKI.clientTLS())
	s.ehlo("client.example.net")
	s.authPlain("", mbUser, mbPass).expectPrefix(t, "421 ")
	c = dialMailbox(t, "127.0.31.2", m.IMAPS, true, m.PKI)
	c.line()
	if r := last(c.cmd("c", "LOGIN "+mbUser+" "+mbPass)); !strings.HasPrefix(r, "c OK") {
		t.Errorf("another address: %q", r)
	}
	expectLogLine(t, m.TLSGuard, "login failed", `"protocol":"imap"`, `"throttled":true`)
}

// The leg to the mailbox server may use TLS, implicit or STARTTLS/STLS,
// with its certificate checked (backend.tls_ca_file, against the host of
// the mailbox address):
// Dovecot logs the logins as made over TLS.
func TestMailboxBackendTLS(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"implicit", "starttls"} {
		t.Run(mode, func(t *testing.T) {
			m := startMailboxGuardWith(t, "", func(dv *auditDovecot, pki *auditPKI) string {
				imapPort, pop3Port := dv.IMAPS, dv.POP3S
				if mode == "starttls" {
					imapPort, pop3Port = dv.IMAP, dv.POP3
				}
				return fmt.Sprintf("mailbox_backend:\n  imap: \"%s:%d\"\n  pop3: \"%s:%d\"\n  tls: %s\n", dv.Host, imapPort, dv.Host, pop3Port, mode)
			})
			for _, tc := range []struct{ addr, proto string }{{m.IMAPS, "imap"}, {m.POP3S, "pop3"}} {
				s := runMailboxClient(t, m, tc.addr, "--proto", tc.proto, "--mode", "implicit", "--user", mbUser, "--password", mbPass)
				if s["fetch"].Subject != mbSubject {
					t.Errorf("%s: fetch %+v", tc.proto, s["fetch"])
				}
			}
			log := readFile(filepath.Join(m.dv.Dir, "dovecot.log"))
			for _, proto := range []string{"imap", "pop3"} {
				if !regexp.MustCompile(proto + `-login: Info: Login: user=<alice>.*TLS`).MatchString(log) {
					t.Errorf("no %s login over TLS in Dovecot's log:\n%s", proto, log)
				}
			}
		})
	}
}

// A mailbox server that is down gives the client a temporary failure
// after the password was checked (IMAP NO [UNAVAILABLE], POP3 -ERR
// [SYS/TEMP]); the session stays usable.
func TestMailboxBackendDown(t *testing.T) {
	t.Parallel()
	m := startMailboxGuard(t, "", loopbackAddr(t))
	c := dialMailbox(t, "127.0.0.1", m.IMAPS, true, m.PKI)
	c.line()
	if r := last(c.cmd("a", "LOGIN "+mbUser+" "+mbPass)); !strings.HasPrefix(r, "a NO [UNAVAILABLE]") {
		t.Errorf("IMAP login with the server down: %q", r)
	}
	if r := last(c.cmd("b", "NOOP")); !strings.HasPrefix(r, "b OK") {
		t.Errorf("NOOP after: %q", r)
	}
	p := dialMailbox(t, "127.0.0.1", m.POP3S, true, m.PKI)
	p.line()
	p.send("USER " + mbUser + "\r\nPASS " + mbPass + "\r\n")
	p.line()
	if r := p.line(); !strings.HasPrefix(r, "-ERR [SYS/TEMP]") {
		t.Errorf("POP3 login with the server down: %q", r)
	}
	expectLogLine(t, m.TLSGuard, "mailbox backend unavailable", `"protocol":"pop3"`)
}

// Before login, an overlong line, an oversized literal and an HTTP request
// close the connection with * BYE (IMAP) or -ERR (POP3), and reach nothing
// behind tlsguard.
func TestMailboxPreLoginLimits(t *testing.T) {
	t.Parallel()
	m := startMailboxGuard(t, "", "")
	before := dovecotLoginLines(m.dv)
	for _, tc := range []struct{ name, addr, send, want string }{
		{"imap-long-line", m.IMAPS, "a LOGIN " + strings.Repeat("x", 10000) + "\r\n", "* BYE"},
		{"imap-big-literal", m.IMAPS, "a LOGIN {100000}\r\n", "* BYE"},
		{"imap-http", m.IMAPS, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "* BYE"},
		{"pop3-long-line", m.POP3S, "USER " + strings.Repeat("x", 10000) + "\r\n", "-ERR"},
		{"pop3-http", m.POP3S, "GET / HTTP/1.1\r\n", "-ERR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialMailbox(t, "127.0.0.1", tc.addr, true, m.PKI)
			c.line()
			c.send(tc.send)
			if r := c.line(); !strings.HasPrefix(r, tc.want) {
				t.Errorf("reply %q, want %s", r, tc.want)
			}
			if !c.closed() {
				t.Error("the connection stays open")
			}
		})
	}
	if got := dovecotLoginLines(m.dv); got != before {
		t.Errorf("Dovecot saw %d connections", got-before)
	}
}

// IDLE (RFC 2177) is held two minutes, far past limits.command_timeout
// (which bounds only the commands before login), and the client is told of
// a message that arrives meanwhile (put into the Maildir: the test Postfix
// does not deliver to Dovecot); at shutdown, once shutdown_grace is over, the idle
// session gets * BYE.
func TestMailboxIdleAndShutdown(t *testing.T) {
	t.Parallel()
	m := startMailboxGuard(t, "limits:\n  command_timeout: 2s\nshutdown_grace: 1s\n", "")
	c := dialMailbox(t, "127.0.0.1", m.IMAPS, true, m.PKI)
	c.line()
	if r := last(c.cmd("a", "LOGIN "+mbUser+" "+mbPass)); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("LOGIN: %q", r)
	}
	c.cmd("b", "SELECT INBOX")
	c.send("c IDLE\r\n")
	if r := c.line(); !strings.HasPrefix(r, "+") {
		t.Fatalf("IDLE: %q", r)
	}
	// Two minutes: far past command_timeout, and long enough for Dovecot's
	// own "still here" (imap_idle_notify_interval, 2 minutes) to pass.
	time.Sleep(2*time.Minute + 5*time.Second)
	dovecotMessage(t, m.dv, mbUser, "2", "arrived during IDLE")
	if r := c.line(); r != "* 2 EXISTS" {
		for !strings.HasSuffix(r, "EXISTS") {
			r = c.line()
		}
		if r != "* 2 EXISTS" {
			t.Errorf("during IDLE: %q, want * 2 EXISTS", r)
		}
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	for {
		r := c.line()
		if strings.HasPrefix(r, "* BYE") {
			break
		}
	}
	expectLogLine(t, m.TLSGuard, "mailbox session", `"end":"shutdown"`, `"user":"alice"`)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func containsPrefix(list []string, p string) bool {
	for _, v := range list {
		if strings.HasPrefix(strings.ToUpper(v), p) {
			return true
		}
	}
	return false
}

// `tlsguard audit` against tlsguard's own mailbox ports grades them OK:
// STARTTLS offered, no login before TLS, injection discarded, TLS 1.2+
// with a valid certificate.
func TestMailboxAuditIsClean(t *testing.T) {
	t.Parallel()
	m := startMailboxGuard(t, "", "")
	caFile := auditLongLivedCert(t, m.TLSGuard)
	d := auditStartDNS(t, `mail.example.org. 300 IN A 127.0.0.1`)
	imap, imaps, pop3, pop3s := auditPort(t, m.IMAP), auditPort(t, m.IMAPS), auditPort(t, m.POP3), auditPort(t, m.POP3S)
	r := auditRun(t, "mail.example.org", "--resolver", d.Addr, "--ports", "imap="+imap+",imaps="+imaps+",pop3="+pop3+",pop3s="+pop3s,
		"--ca-file", caFile, "--timeout", auditServerTimeout)
	r.expect(t, "imap/"+imap+" starttls", audit.OK, "offered")
	r.expect(t, "imap/"+imap+" login before tls", audit.OK, "PRIVACYREQUIRED", "LOGINDISABLED")
	r.expect(t, "pop3/"+pop3+" starttls", audit.OK, "STLS offered")
	r.expect(t, "pop3/"+pop3+" login before tls", audit.OK)
	r.expect(t, "imap/"+imap+" starttls injection", audit.OK)
	r.expect(t, "pop3/"+pop3+" starttls injection", audit.OK)
	for _, svc := range []string{"imap/" + imap, "imaps/" + imaps, "pop3/" + pop3, "pop3s/" + pop3s} {
		r.expect(t, svc+" tls", audit.OK, "TLS 1.3")
		r.expect(t, svc+" certificate", audit.OK, "valid for mail.example.org")
		r.expect(t, svc+" tls versions", audit.OK, "refuses TLS 1.0, TLS 1.1")
	}
	for _, f := range r.Report.Findings {
		if f.Grade == audit.Warning || f.Grade == audit.Fail {
			t.Errorf("%s: %s: %s", f.Check, f.Grade, f.Detail)
		}
	}
	r.expectExit(t, 0)
}
