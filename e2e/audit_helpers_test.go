package e2e

// Helpers for the `tlsguard audit` tests (audit_*_test.go): running the
// binary, a throwaway PKI, a DNS server on loopback, and a private Dovecot.
// Every name starts with "audit" so as not to collide with the shared
// helpers, which these tests reuse (tlsguardBinary, requireTool,
// startPostfix, startTLSGuard, waitListening).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlsguard/tlsguard/audit"
)

// auditRunTimeout bounds one run of the auditor; every dial and read in it
// has its own --timeout as well.
const auditRunTimeout = 2 * time.Minute

// auditServerTimeout is the --timeout for audits of real servers: generous,
// because CI machines are small and shared (a loaded Postfix can take
// seconds to greet); a healthy run takes well under a second.
const auditServerTimeout = "20s"

// auditResult is one run of `tlsguard audit ... --json`.
type auditResult struct {
	Report audit.Report
	Exit   int
	Stdout string
	Stderr string
}

// auditRun runs the auditor with args (plus --json) and parses its report.
func auditRun(t testing.TB, args ...string) auditResult {
	t.Helper()
	bin := tlsguardBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), auditRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(append([]string{"audit"}, args...), "--json")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := auditResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.Exit = exit.ExitCode()
	case err != nil:
		t.Fatalf("tlsguard audit %s: %v\n%s", strings.Join(args, " "), err, r.Stderr)
	}
	if r.Exit == 2 {
		t.Fatalf("tlsguard audit %s: exit 2 (could not run): %s", strings.Join(args, " "), r.Stderr)
	}
	if err := json.Unmarshal(stdout.Bytes(), &r.Report); err != nil {
		t.Fatalf("tlsguard audit %s: bad JSON (%v):\n%s\n%s", strings.Join(args, " "), err, r.Stdout, r.Stderr)
	}
	t.Logf("tlsguard audit %s: exit %d in %s\n%s", strings.Join(args, " "), r.Exit, time.Since(start).Round(time.Millisecond), r.dump())
	return r
}

// dump is the report as a table, for failure messages.
func (r auditResult) dump() string {
	var b bytes.Buffer
	r.Report.WriteText(&b)
	return b.String()
}

// finding returns the finding named check; the test fails if there is none.
func (r auditResult) finding(t testing.TB, check string) audit.Finding {
	t.Helper()
	for _, f := range r.Report.Findings {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("no finding %q in the report:\n%s", check, r.dump())
	return audit.Finding{}
}

// expect checks the grade of a finding and that its detail holds each of
// the given substrings.
func (r auditResult) expect(t testing.TB, check string, grade audit.Grade, details ...string) {
	t.Helper()
	f := r.finding(t, check)
	if f.Grade != grade {
		t.Errorf("%s: grade %s, want %s (detail: %s)", check, f.Grade, grade, f.Detail)
	}
	for _, d := range details {
		if !strings.Contains(f.Detail, d) {
			t.Errorf("%s: detail %q lacks %q", check, f.Detail, d)
		}
	}
	if (f.Grade == audit.Fail || f.Grade == audit.Warning) && f.Advice == "" {
		t.Errorf("%s: %s without advice", check, f.Grade)
	}
}

// expectExit checks the exit code against the findings: 1 exactly when a
// finding failed.
func (r auditResult) expectExit(t testing.TB, want int) {
	t.Helper()
	if r.Exit != want {
		t.Errorf("exit code %d, want %d; report:\n%s", r.Exit, want, r.dump())
	}
	if (r.Exit == 1) != r.Report.Failed() {
		t.Errorf("exit code %d but Failed() = %v", r.Exit, r.Report.Failed())
	}
}

// auditRequireDebian is requireTool for a Debian package's program: skipped
// locally, a failure under CI, with the package named.
func auditRequireDebian(t testing.TB, program, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, program); isExecutable(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed: apt-get install %s (see e2e/testdata/audit/APT-PACKAGES)", program, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// auditPKI is a CA and a server certificate it signed, valid for 90 days
// so that the auditor's expiry check passes.
type auditPKI struct {
	CAFile, CertFile, KeyFile string
	Leaf                      *x509.Certificate
}

// auditNewPKI writes a CA and a leaf for names (DNS names or IPs) into dir.
func auditNewPKI(t testing.TB, dir string, names ...string) *auditPKI {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := func() *big.Int {
		n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "tlsguard audit test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey := key()
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, n)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	p := &auditPKI{
		CAFile: filepath.Join(dir, "audit-ca.pem"), CertFile: filepath.Join(dir, "audit-cert.pem"),
		KeyFile: filepath.Join(dir, "audit-key.pem"), Leaf: leaf,
	}
	for path, block := range map[string]*pem.Block{
		p.CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
		p.CertFile: {Type: "CERTIFICATE", Bytes: leafDER},
		p.KeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// auditDNS is an authoritative DNS server for test zones on 127.0.0.1, so
// that no test ever resolves a real name. It answers NXDOMAIN for names it
// has no record of, and records every question it gets.
type auditDNS struct {
	Addr string

	mu        sync.Mutex
	records   map[string][]dns.RR // "name./TYPE"
	names     map[string]bool
	questions []string
}

// auditStartDNS serves the given records (zone-file lines, as dns.NewRR
// reads them) over UDP and TCP until the test ends.
func auditStartDNS(t testing.TB, records ...string) *auditDNS {
	t.Helper()
	d := &auditDNS{records: map[string][]dns.RR{}, names: map[string]bool{}}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("test zone: %q: %v", s, err)
		}
		name := strings.ToLower(rr.Header().Name)
		key := name + "/" + dns.TypeToString[rr.Header().Rrtype]
		d.records[key] = append(d.records[key], rr)
		d.names[name] = true
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil { // the TCP port is taken: another UDP port
			pc.Close()
			lastErr = err
			continue
		}
		for _, srv := range []*dns.Server{{PacketConn: pc, Handler: d}, {Listener: l, Handler: d}} {
			started := make(chan struct{})
			srv.NotifyStartedFunc = func() { close(started) }
			go srv.ActivateAndServe()
			<-started
			t.Cleanup(func() { srv.Shutdown() })
		}
		d.Addr = pc.LocalAddr().String()
		return d
	}
	t.Fatalf("test DNS server: %v", lastErr)
	return nil
}

// ServeDNS answers from the test zone.
func (d *auditDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	d.mu.Lock()
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		d.questions = append(d.questions, name+"/"+dns.TypeToString[q.Qtype])
		m.Answer = append(m.Answer, d.records[name+"/"+dns.TypeToString[q.Qtype]]...)
		if !d.names[name] {
			m.Rcode = dns.RcodeNameError
		}
	}
	d.mu.Unlock()
	w.WriteMsg(m)
}

// Questions returns the questions asked so far ("name./TYPE").
func (d *auditDNS) Questions() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.questions...)
}

// auditDovecot is a private Dovecot (IMAP and POP3, with and without
// implicit TLS) on 127.0.0.2. Dovecot treats a connection whose client and
// server addresses are equal as secure, and so allows plaintext logins on
// it whatever the configuration says; listening on 127.0.0.2 while the
// auditor connects from 127.0.0.1 keeps the test honest.
type auditDovecot struct {
	Host                     string // 127.0.0.2
	IMAP, IMAPS, POP3, POP3S int
	AuthSocket               string // SASL socket for Postfix (smtpd_sasl_type = dovecot)
	Dir                      string

	cmd    *exec.Cmd
	exited chan struct{}
}

// auditDovecotOptions choose how weak the instance is.
type auditDovecotOptions struct {
	// Plaintext allows LOGIN, USER/PASS and AUTH before TLS.
	Plaintext bool
	// OldTLS accepts TLS 1.0 and 1.1 (with OpenSSL's security level 0).
	OldTLS bool
}

const auditDovecotHost = "127.0.0.2"

// auditStartDovecot starts Dovecot with testdata/audit/dovecot.conf and
// stops it when the test ends.
func auditStartDovecot(t testing.TB, pki *auditPKI, opt auditDovecotOptions) *auditDovecot {
	t.Helper()
	bin := auditRequireDebian(t, "dovecot", "dovecot-imapd dovecot-pop3d")
	for _, prog := range []string{"imap-login", "pop3-login"} {
		if !isExecutable(filepath.Join("/usr/lib/dovecot", prog)) {
			msg := "dovecot " + prog + " missing: apt-get install dovecot-imapd dovecot-pop3d"
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a port can be taken between pick and bind
		d, err := auditTryDovecot(t, bin, pki, opt)
		if err == nil {
			return d
		}
		lastErr = err
	}
	t.Fatalf("starting dovecot: %v", lastErr)
	return nil
}

func auditTryDovecot(t testing.TB, bin string, pki *auditPKI, opt auditDovecotOptions) (*auditDovecot, error) {
	// Dovecot's unprivileged processes must reach the base directory, and
	// unix socket paths must stay short: not t.TempDir().
	base, err := os.MkdirTemp("", "tlsguard-audit-dovecot-")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	d := &auditDovecot{Host: auditDovecotHost, Dir: base, AuthSocket: filepath.Join(base, "auth-postfix")}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = auditFreePort(auditDovecotHost); err != nil {
			return nil, err
		}
	}
	d.IMAP, d.IMAPS, d.POP3, d.POP3S = ports[0], ports[1], ports[2], ports[3]
	plaintext, minProto, ciphers := "yes", "TLSv1.2", "ECDHE+AESGCM:ECDHE+CHACHA20"
	if opt.Plaintext {
		plaintext = "no"
	}
	if opt.OldTLS {
		minProto, ciphers = "TLSv1", "ALL:@SECLEVEL=0"
	}
	// Copies inside base: Dovecot reads "#" in a path (as in t.TempDir()
	// of a repeated subtest) as the start of a comment.
	certFile, keyFile := filepath.Join(base, "cert.pem"), filepath.Join(base, "key.pem")
	for src, dst := range map[string]string{pki.CertFile: certFile, pki.KeyFile: keyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			return nil, err
		}
	}
	tmpl, err := os.ReadFile(filepath.Join("testdata", "audit", "dovecot.conf"))
	if err != nil {
		return nil, err
	}
	conf := strings.NewReplacer(
		"@BASE@", base, "@HOST@", auditDovecotHost, "@INSTANCE@", filepath.Base(base),
		"@IMAP@", strconv.Itoa(d.IMAP), "@IMAPS@", strconv.Itoa(d.IMAPS),
		"@POP3@", strconv.Itoa(d.POP3), "@POP3S@", strconv.Itoa(d.POP3S),
		"@DISABLE_PLAINTEXT@", plaintext, "@MIN_PROTOCOL@", minProto, "@CIPHERS@", ciphers,
		"@CERT@", certFile, "@KEY@", keyFile,
	).Replace(string(tmpl))
	confFile := filepath.Join(base, "dovecot.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// A user that exists, so that the probes' user is plainly not one.
	if err := os.WriteFile(filepath.Join(base, "passwd"), []byte("alice:{PLAIN}alice-secret-1\n"), 0o644); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(base, "dovecot.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	d.cmd = exec.Command(bin, "-F", "-c", confFile)
	d.cmd.Stdout, d.cmd.Stderr = out, out
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting dovecot: %w", err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("dovecot log:\n%s", d.Log())
		}
	})
	for _, p := range ports {
		if err := waitListening(net.JoinHostPort(auditDovecotHost, strconv.Itoa(p)), d.exited, 20*time.Second); err != nil {
			d.stop(t)
			return nil, fmt.Errorf("%w\n%s", err, d.Log())
		}
	}
	if err := auditAuthReady(d.AuthSocket, 30*time.Second); err != nil {
		d.stop(t)
		return nil, fmt.Errorf("dovecot auth: %w\n%s", err, d.Log())
	}
	return d, nil
}

// auditAuthReady waits until Dovecot's auth service completes the client
// handshake on socket (VERSION ... DONE, the Dovecot auth protocol), so
// that the auth process is running before Postfix's smtpd, which blocks
// its greeting on this handshake, first connects.
func auditAuthReady(socket string, timeout time.Duration) error {
	c, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("VERSION\t1\t2\nCPID\t" + strconv.Itoa(os.Getpid()) + "\n")); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("no DONE from %s: %w", socket, err)
		}
		if line == "DONE\n" {
			return nil
		}
	}
}

func (d *auditDovecot) stop(t testing.TB) {
	if terminate(d.cmd, d.exited, 15*time.Second) {
		t.Errorf("dovecot did not exit within 15s of SIGTERM; killed")
	}
}

// Log is Dovecot's log and anything it printed.
func (d *auditDovecot) Log() string {
	return readFile(filepath.Join(d.Dir, "dovecot.log")) + readFile(filepath.Join(d.Dir, "dovecot.out"))
}

// Ports is the --ports value for all four listeners.
func (d *auditDovecot) Ports() string {
	return fmt.Sprintf("imap=%d,imaps=%d,pop3=%d,pop3s=%d", d.IMAP, d.IMAPS, d.POP3, d.POP3S)
}

// auditFreePort returns a TCP port on host that was free a moment ago.
func auditFreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// auditPort is the port of a "host:port" address.
func auditPort(t testing.TB, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func auditItoa(n int) string { return strconv.Itoa(n) }
