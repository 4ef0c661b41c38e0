package e2e

// Logging users in against the stores that already hold their passwords:
// OpenLDAP (slapd), Dovecot (IMAP, POP3 and its auth socket), each started
// by the test on loopback, with Postfix as the backend.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// slapd is a private OpenLDAP from testdata/ldap: plain LDAP (with
// StartTLS) and LDAPS on 127.0.0.1, certificates from a test CA.
type slapd struct {
	URL, LDAPS string
	PKI        *auditPKI
	Dir        string
	conf       string
	cmd        *exec.Cmd
	exited     chan struct{}
}

const ldapBase = "dc=example,dc=org"

// startSlapd loads testdata/ldap/users.ldif with slapadd and serves it.
func startSlapd(t testing.TB) *slapd {
	t.Helper()
	bin := auditRequireDebian(t, "/usr/sbin/slapd", "slapd ldap-utils")
	// Short paths without "#": slapd.conf and the ldapi/mdb paths.
	dir, err := os.MkdirTemp("", "tlsguard-slapd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &slapd{Dir: dir, PKI: auditNewPKI(t, dir, "127.0.0.1")}
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(filepath.Join("testdata", "ldap", "slapd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer("@BASE@", dir, "@CERT@", s.PKI.CertFile, "@KEY@", s.PKI.KeyFile, "@CA@", s.PKI.CAFile).Replace(string(tmpl))
	s.conf = filepath.Join(dir, "slapd.conf")
	writeFile(t, s.conf, conf)
	if out, err := exec.Command("/usr/sbin/slapadd", "-f", s.conf, "-l", filepath.Join("testdata", "ldap", "users.ldif")).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v\n%s", err, out)
	}
	var p1, p2 int
	for attempt := 0; ; attempt++ {
		if p1, err = auditFreePort("127.0.0.1"); err == nil {
			p2, err = auditFreePort("127.0.0.1")
		}
		if err != nil {
			t.Fatal(err)
		}
		s.URL, s.LDAPS = fmt.Sprintf("ldap://127.0.0.1:%d", p1), fmt.Sprintf("ldaps://127.0.0.1:%d", p2)
		if err = s.start(t, bin); err == nil {
			return s
		}
		if attempt == 2 {
			t.Fatalf("slapd: %v\n%s", err, s.Log())
		}
	}
}

func (s *slapd) start(t testing.TB, bin string) error {
	out, err := os.OpenFile(filepath.Join(s.Dir, "slapd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	// -d 256 (stats): stay in the foreground and log every operation, so
	// that a test can see which binds reached the directory.
	s.cmd = exec.Command(bin, "-f", s.conf, "-h", s.URL+"/ "+s.LDAPS+"/", "-d", "256")
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("slapd log:\n%s", s.Log())
		}
	})
	for _, u := range []string{s.URL, s.LDAPS} {
		if err := waitListening(strings.SplitN(u, "//", 2)[1], s.exited, 20*time.Second); err != nil {
			s.Stop(t)
			return err
		}
	}
	return nil
}

// Stop stops slapd (the directory is then down).
func (s *slapd) Stop(t testing.TB) {
	if s.cmd != nil && s.cmd.Process != nil {
		terminate(s.cmd, s.exited, 15*time.Second)
	}
}

// Log is slapd's log.
func (s *slapd) Log() string { return readFile(filepath.Join(s.Dir, "slapd.log")) }

// Binds counts the bind operations slapd logged for dn.
func (s *slapd) Binds(dn string) int {
	return len(regexp.MustCompile(`BIND dn="`+regexp.QuoteMeta(dn)+`"`).FindAllString(s.Log(), -1))
}

// SetPassword changes a user's password as the directory's admin would.
func (s *slapd) SetPassword(t testing.TB, dn, pw string) {
	t.Helper()
	out, err := exec.Command("ldappasswd", "-x", "-H", s.URL, "-D", "cn=admin,"+ldapBase, "-w", "admin-secret", "-s", pw, dn).CombinedOutput()
	if err != nil {
		t.Fatalf("ldappasswd: %v\n%s", err, out)
	}
}

// identityGuard starts tlsguard in front of pf with authYAML as its auth
// section (indented two spaces) and policy as its policy file.
func identityGuard(t *testing.T, pf *Postfix, authYAML, policy, extraYAML string) *TLSGuard {
	t.Helper()
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "identity-policy.yaml")
	writeFile(t, policyFile, policy)
	return startGuardEdited(t, pf.Addr, func(cfg string) string {
		cfg = regexp.MustCompile(`(?m)^auth:\n  users_file: .*\n`).ReplaceAllLiteralString(cfg, "auth:\n"+authYAML)
		cfg = regexp.MustCompile(`(?m)^policy: .*$`).ReplaceAllLiteralString(cfg, "policy: "+strconv.Quote(policyFile))
		if strings.Contains(cfg, "users_file") {
			t.Fatalf("identityGuard: the users_file line was not replaced:\n%s", cfg)
		}
		return cfg
	}, extraYAML)
}

// identityPolicy: staff (a directory group) may relay; everyone logged in
// may send as the addresses the directory lists for them (and carl, an
// htpasswd user, as carl@example.org).
const identityPolicy = `local_domains: ["example.org"]
groups:
  - name: staff
    directory_groups: ["CN=staff,ou=groups,dc=example,dc=org"]
rules:
  - name: local-mail
    local_recipient: true
    action: accept
  - name: staff-relay
    groups: [staff]
    action: accept
sender_ownership:
  - name: own-addresses
    may_send_as: ["{addresses}", "carl@example.org"]
`

const identityLimits = "limits:\n  auth_fail_delay: 50ms\n  auth_max_failures: 50\n  auth_user_max_failures: 100\n"

// login opens a session from src on the submissions port and tries one
// AUTH PLAIN.
func login(t *testing.T, g *TLSGuard, src, user, pass string) (reply, *smtpConn) {
	t.Helper()
	c := dialImplicitTLSFrom(t, src, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	return c.authPlain("", user, pass), c
}

// LDAP with search+bind (StartTLS, search account): success with the
// directory's groups and addresses in force, wrong password 535, an
// unknown user passed to the next source, injection attempts and an
// ambiguous login refused, an empty password refused before any bind,
// a changed password taking effect within the cache's ttl.
func TestIdentityLDAPSearchBind(t *testing.T) {
	t.Parallel()
	ld := startSlapd(t)
	pf := startPostfix(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "ldap.secret")
	writeFile(t, secret, "search-secret\n")
	users := writeHtpasswd(t, dir, map[string]string{"carl": "carl-htpasswd-pw", "twin": "twin-htpasswd-pw"})
	g := identityGuard(t, pf, fmt.Sprintf(`  sources:
    - ldap:
        url: %s
        start_tls: true
        ca_file: %q
        bind_dn: cn=tlsguard,ou=services,dc=example,dc=org
        bind_password_file: %q
        base_dn: ou=people,dc=example,dc=org
        filter: "(&(objectClass=inetOrgPerson)(uid={user}))"
        addresses_attribute: mail
        groups_attribute: businessCategory
        timeout: 3s
    - htpasswd:
        file: %q
  cache:
    ttl: 2s
`, ld.URL, ld.PKI.CAFile, secret, users), identityPolicy, identityLimits)

	// alice is staff in the directory: she may relay, and send as the
	// second address her entry lists.
	r, c := login(t, g, "127.0.20.1", "alice", "alice-ldap-pw")
	r.expect(t, 235)
	tryTransaction(t, c, "a.liddell@example.org", carol, "Subject: ldap staff\r\n\r\nbody\r\n").expect(t, 250)
	pf.WaitMessages(t, carol, 1)
	expectLogLine(t, g, "auth succeeded", `"user":"alice"`, `"source":"ldap"`)

	// bob is not staff: no relay, and alice's address is not his.
	r, c = login(t, g, "127.0.20.2", "bob", "bob-ldap-pw")
	r.expect(t, 235)
	c.cmd("MAIL FROM:<a.liddell@example.org>").expectPrefix(t, "553 5.7.1 ")
	c.cmd("MAIL FROM:<bob@example.org>").expect(t, 250)
	c.cmd("RCPT TO:<"+carol+">").expectPrefix(t, relayDenied)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)

	// Real clients: swaks with AUTH LOGIN after STARTTLS (alice relays),
	// smtplib with AUTH PLAIN (bob sends to a local mailbox).
	runSwaks(t, g.Submission, g.PKI, "--tls", "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "alice-ldap-pw",
		"--from", "alice@example.org", "--to", dave, "--header", "Subject: swaks ldap").expectOK(t)
	pf.WaitMessages(t, dave, 1)
	py := runPython(t, g.Submission, g.PKI, "--tls", "starttls", "--user", "bob", "--password", "bob-ldap-pw", "--auth", "PLAIN",
		"--mail-from", bob, "--rcpt", alice)
	py.noErrors(t)
	if d := py.step(t, "data"); d.Code != 250 {
		t.Errorf("smtplib as bob: DATA %d %s", d.Code, d.Msg)
	}

	// Wrong password: 535, decided by the directory (not passed on).
	r, _ = login(t, g, "127.0.20.3", "alice", "not-alice-ldap-pw")
	r.expectPrefix(t, "535 5.7.8 ")
	expectLogLine(t, g, "auth failed", `"user":"alice"`, `"source":"ldap"`, `"reason":"bad credentials"`)

	// Unknown to the directory: the next source (htpasswd) decides.
	r, c = login(t, g, "127.0.20.4", "carl", "carl-htpasswd-pw")
	r.expect(t, 235)
	c.cmd("MAIL FROM:<carl@example.org>").expect(t, 250)
	expectLogLine(t, g, "auth succeeded", `"user":"carl"`, `"source":"htpasswd"`)
	// Two directory entries with uid=twin: not a user of the directory.
	r, _ = login(t, g, "127.0.20.5", "twin", "twin-pw")
	r.expectPrefix(t, "535 5.7.8 ")
	r, _ = login(t, g, "127.0.20.5", "twin", "twin-htpasswd-pw")
	r.expect(t, 235)

	// Filter injection never logs in, with alice's right password.
	for _, u := range []string{"*", "alice)(uid=*", `alice\00`, "al*", "alice)(|(uid=*"} {
		r, _ = login(t, g, "127.0.20.6", u, "alice-ldap-pw")
		r.expectPrefix(t, "535 5.7.8 ")
	}

	// An empty password is refused before a bind reaches the directory.
	aliceDN := "uid=alice,ou=people," + ldapBase
	before := ld.Binds(aliceDN)
	if before == 0 {
		t.Fatalf("slapd's log shows no bind as alice after her logins; the count below would prove nothing\n%s", ld.Log())
	}
	r, _ = login(t, g, "127.0.20.7", "alice", "")
	r.expectPrefix(t, "535 5.7.8 ")
	if after := ld.Binds(aliceDN); after != before {
		t.Errorf("an empty password made %d bind(s) as alice reach the directory", after-before)
	}

	// A password changed in the directory: the old one is refused once
	// the cache's ttl (2s) has passed, the new one works.
	login(t, g, "127.0.20.8", "alice", "alice-ldap-pw")
	ld.SetPassword(t, aliceDN, "alice-new-pw")
	time.Sleep(2500 * time.Millisecond)
	r, _ = login(t, g, "127.0.20.8", "alice", "alice-ldap-pw")
	r.expectPrefix(t, "535 5.7.8 ")
	r, _ = login(t, g, "127.0.20.8", "alice", "alice-new-pw")
	r.expect(t, 235)

	for _, secret := range []string{"alice-ldap-pw", "alice-new-pw", "bob-ldap-pw", "search-secret", "carl-htpasswd-pw"} {
		if strings.Contains(g.Log(), secret) {
			t.Errorf("tlsguard's log contains the password %q", secret)
		}
	}
}

// LDAPS with an anonymous search; with the directory down every login is
// 454 4.7.0, never counted as a failure (more attempts than
// auth_max_failures, then success once it is back) and never passed to
// the next source (which knows alice with another password).
func TestIdentityLDAPSAnonymousAndDown(t *testing.T) {
	t.Parallel()
	ld := startSlapd(t)
	pf := startPostfix(t)
	dir := t.TempDir()
	users := writeHtpasswd(t, dir, map[string]string{"alice": "alice-htpasswd-pw"})
	admin := loopbackAddr(t)
	g := identityGuard(t, pf, fmt.Sprintf(`  sources:
    - ldap:
        url: %s
        ca_file: %q
        base_dn: ou=people,dc=example,dc=org
        filter: "(uid={user})"
        addresses_attribute: mail
        timeout: 2s
    - htpasswd:
        file: %q
  cache:
    ttl: 0s
`, ld.LDAPS, ld.PKI.CAFile, users), identityPolicy, fmt.Sprintf("limits:\n  auth_fail_delay: 50ms\n  auth_max_failures: 2\nadmin:\n  address: %q\n", admin))

	r, c := login(t, g, "127.0.21.1", "alice", "alice-ldap-pw")
	r.expect(t, 235)
	c.cmd("MAIL FROM:<alice@example.org>").expect(t, 250)

	ld.Stop(t)
	for i := 0; i < 4; i++ {
		r, _ = login(t, g, "127.0.21.2", "alice", "alice-htpasswd-pw")
		r.expectPrefix(t, "454 4.7.0 ")
	}
	expectLogLine(t, g, "auth check failed", `"user":"alice"`, `"source":"ldap"`)
	// Not counted: the address is not throttled once the directory is back.
	ld.start(t, "/usr/sbin/slapd")
	r, _ = login(t, g, "127.0.21.2", "alice", "alice-ldap-pw")
	r.expect(t, 235)

	// Metrics per source and result, and the latency histogram.
	_, body := httpGet(t, "http://"+admin+"/metrics")
	for _, want := range []string{
		`tlsguard_auth_source_requests_total{result="success",source="ldap"} 2`,
		`tlsguard_auth_source_requests_total{result="unavailable",source="ldap"} 4`,
		`tlsguard_auth_source_latency_seconds_count{source="ldap"} 6`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s\n%s", want, grepLines(body, "auth_source"))
		}
	}
	if strings.Contains(body, `source="htpasswd"`) {
		t.Errorf("the htpasswd source was asked while the directory was down:\n%s", grepLines(body, "auth_source"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// bind_template: a direct bind as the DN the template makes, with the
// login escaped per RFC 4514; "svc,ou=apps" would otherwise reach
// uid=svc,ou=apps,ou=people,... with svc's password.
func TestIdentityLDAPBindTemplate(t *testing.T) {
	t.Parallel()
	ld := startSlapd(t)
	pf := startPostfix(t)
	g := identityGuard(t, pf, fmt.Sprintf(`  sources:
    - ldap:
        url: %s
        start_tls: true
        ca_file: %q
        bind_template: "uid={user},ou=people,dc=example,dc=org"
        addresses_attribute: mail
        groups_attribute: businessCategory
`, ld.URL, ld.PKI.CAFile), identityPolicy, identityLimits)

	r, c := login(t, g, "127.0.22.1", "alice", "alice-ldap-pw")
	r.expect(t, 235)
	tryTransaction(t, c, "a.liddell@example.org", carol, "Subject: bind template\r\n\r\nbody\r\n").expect(t, 250)
	r, _ = login(t, g, "127.0.22.2", "alice", "wrong-pw")
	r.expectPrefix(t, "535 5.7.8 ")
	r, _ = login(t, g, "127.0.22.3", "svc,ou=apps", "svc-pw")
	r.expectPrefix(t, "535 5.7.8 ")
	if ld.Binds("uid=svc,ou=apps,ou=people,"+ldapBase) != 0 {
		t.Error("a login with a comma bound as another entry")
	}
	pf.WaitMessages(t, carol, 1)

	// tlsguard auth test: the password on stdin, the source, groups and
	// addresses printed; no mail.
	code, out := authTestCmd(t, g.ConfigFile, "alice", "alice-ldap-pw\n")
	if code != 0 || !containsAll(out, []string{"source: ldap", "cn=staff,ou=groups,dc=example,dc=org", "alice@example.org", "a.liddell@example.org"}) {
		t.Errorf("auth test alice: exit %d\n%s", code, out)
	}
	if code, out = authTestCmd(t, g.ConfigFile, "alice", "wrong\n"); code != 1 || !strings.Contains(out, "wrong_password") {
		t.Errorf("auth test with a wrong password: exit %d\n%s", code, out)
	}
	// policy explain with the group and address auth test printed.
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, pol, identityPolicy)
	explain := []string{"policy", "explain", "--policy", pol, "--from", "a.liddell@example.org", "--to", carol, "--user", "alice", "--tls"}
	_, out, _ = runGuardCmd(t, append(explain, "--group", "cn=staff,ou=groups,dc=example,dc=org", "--address", "a.liddell@example.org")...)
	if !strings.Contains(out, "staff-relay") || !strings.Contains(out, "ACCEPT") && !strings.Contains(out, "accept") {
		t.Errorf("explain with the staff group does not accept by staff-relay:\n%s", out)
	}
	_, out, _ = runGuardCmd(t, explain...)
	if strings.Contains(out, "250 ") {
		t.Errorf("explain without the directory's group and address accepts:\n%s", out)
	}
}

// authTestCmd runs tlsguard auth test with the password on stdin.
func authTestCmd(t *testing.T, cfg, user, stdin string) (int, string) {
	t.Helper()
	cmd := exec.Command(tlsguardBinary(t), "auth", "test", "--config", cfg, user)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// identityDovecot starts the audit tests' Dovecot with plaintext logins
// allowed (tlsguard connects from 127.0.0.1 to 127.0.0.2, which Dovecot
// does not count as secure), with alice in its passwd file.
func identityDovecot(t *testing.T) (*auditDovecot, *auditPKI) {
	pki := auditNewPKI(t, t.TempDir(), "mail.audit.test", auditDovecotHost)
	return auditStartDovecot(t, pki, auditDovecotOptions{Plaintext: true}), pki
}

// Dovecot's auth socket, IMAP (STARTTLS, implicit TLS, plaintext) and
// POP3: alice's password works through each, a wrong one is 535, and a
// source that is down gives 454 4.7.0.
func TestIdentityDovecotIMAPPOP3(t *testing.T) {
	t.Parallel()
	dv, pki := identityDovecot(t)
	pf := startPostfix(t)
	for _, tc := range []struct{ name, source string }{
		{"dovecot", fmt.Sprintf("    - dovecot:\n        socket: %q\n", dv.AuthSocket)},
		{"imap", fmt.Sprintf("    - imap:\n        address: %s:%d\n        tls: none\n", dv.Host, dv.IMAP)},
		{"imap-starttls", fmt.Sprintf("    - imap:\n        name: imap-starttls\n        address: %s:%d\n        tls: starttls\n        tls_server_name: mail.audit.test\n        ca_file: %%q\n", dv.Host, dv.IMAP)},
		{"imap-implicit", fmt.Sprintf("    - imap:\n        name: imap-implicit\n        address: %s:%d\n        tls: implicit\n        tls_server_name: mail.audit.test\n        ca_file: %%q\n", dv.Host, dv.IMAPS)},
		{"pop3", fmt.Sprintf("    - pop3:\n        address: %s:%d\n        tls: none\n", dv.Host, dv.POP3)},
		{"pop3-starttls", fmt.Sprintf("    - pop3:\n        name: pop3-starttls\n        address: %s:%d\n        tls: starttls\n        tls_server_name: mail.audit.test\n        ca_file: %%q\n", dv.Host, dv.POP3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.source
			if strings.Contains(src, "%q") {
				src = fmt.Sprintf(src, pki.CAFile)
			}
			g := identityGuard(t, pf, "  sources:\n"+src+"  cache:\n    ttl: 0s\n", identityPolicy, identityLimits)
			r, _ := login(t, g, "127.0.23.1", "alice", "alice-secret-1")
			r.expect(t, 235)
			expectLogLine(t, g, "auth succeeded", `"user":"alice"`, `"source":"`+tc.name+`"`)
			r, _ = login(t, g, "127.0.23.2", "alice", "wrong-secret")
			r.expectPrefix(t, "535 5.7.8 ")
		})
	}
	// Each source down, or failing TLS (a certificate the system roots do
	// not trust): 454, never 535.
	dead := loopbackAddr(t)
	deadSock := filepath.Join(t.TempDir(), "no-auth-socket")
	for _, src := range []string{
		fmt.Sprintf("    - dovecot:\n        socket: %q\n", deadSock),
		fmt.Sprintf("    - imap:\n        address: %s\n        tls: none\n", dead),
		fmt.Sprintf("    - pop3:\n        address: %s\n        tls: none\n", dead),
		fmt.Sprintf("    - imap:\n        address: %s:%d\n        tls: implicit\n", dv.Host, dv.IMAPS),
	} {
		g := identityGuard(t, pf, "  sources:\n"+src, identityPolicy, identityLimits)
		r, _ := login(t, g, "127.0.23.3", "alice", "alice-secret-1")
		r.expectPrefix(t, "454 4.7.0 ")
	}
	if _, err := net.Dial("unix", deadSock); err == nil {
		t.Fatal("the dead socket answers")
	}
}
