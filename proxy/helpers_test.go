package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/proxy"
)

// waitMax bounds every wait on the network. It is an upper bound for a
// reply that should come at once, never a performance assertion.
const waitMax = 5 * time.Second

// ---------------------------------------------------------------------
// Test PKI: one self-signed ECDSA P-256 certificate per test binary.

var (
	pkiOnce    sync.Once
	serverCert tls.Certificate
	rootPool   *x509.CertPool
)

func testPKI(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	pkiOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "mail.example.org"},
			DNSNames:              []string{"mail.example.org"},
			IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		cert, _ := x509.ParseCertificate(der)
		serverCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
		rootPool = x509.NewCertPool()
		rootPool.AddCert(cert)
	})
	return serverCert, rootPool
}

func serverTLSConfig(t testing.TB) *tls.Config {
	cert, _ := testPKI(t)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"smtp"}}
}

func clientTLSConfig(t testing.TB) *tls.Config {
	_, pool := testPKI(t)
	return &tls.Config{RootCAs: pool, ServerName: "mail.example.org", MinVersion: tls.VersionTLS12}
}

// ---------------------------------------------------------------------
// Fake backend: a go-smtp server that records what it receives.

type fakeMsg struct {
	From string
	To   []string
	Data []byte
}

type fakeBackend struct {
	t    testing.TB
	srv  *smtp.Server
	ln   net.Listener
	addr string

	mu       sync.Mutex
	msgs     []fakeMsg
	raw      []*lockedBuffer // bytes read on each connection, in order
	sessions int

	// Behaviour, set before use.
	mailErr      func(from string) error
	rcptErr      func(to string) error
	dataErr      error              // returned after reading the whole message
	dataReply    *smtp.SMTPError    // the 250 reply (nil: go-smtp's default)
	rcptHang     chan struct{}      // RCPT blocks until closed
	closeMidData int                // >0: read this many bytes of DATA, then drop the connection
	offerAuth    bool               // advertise AUTH PLAIN (so the client may send AUTH=)
	closeIdle    atomic.Bool        // drop the connection right after a successful DATA reply
	discard      bool               // count messages only (benchmarks)
	killOnRcpt   string             // a RCPT to an address with this prefix drops the connection
	configure    func(*smtp.Server) // adjust the go-smtp server before it serves
	delivered    atomic.Int64
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type recListener struct {
	net.Listener
	fb *fakeBackend
}

func (l recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	buf := &lockedBuffer{}
	l.fb.mu.Lock()
	l.fb.raw = append(l.fb.raw, buf)
	l.fb.mu.Unlock()
	return &recConn{Conn: c, rec: buf}, nil
}

type recConn struct {
	net.Conn
	rec *lockedBuffer
}

func (c *recConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.rec.Write(b[:n])
	return n, err
}

func newFakeBackend(t testing.TB, setup ...func(*fakeBackend)) *fakeBackend {
	t.Helper()
	fb := &fakeBackend{t: t}
	for _, f := range setup {
		f(fb)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb.ln = ln
	fb.addr = ln.Addr().String()
	srv := smtp.NewServer(fb)
	srv.Domain = "backend.example.org"
	srv.AllowInsecureAuth = true
	srv.ErrorLog = nopErrorLog{}
	srv.MaxLineLength = 10000
	if fb.configure != nil {
		fb.configure(srv)
	}
	fb.srv = srv
	go srv.Serve(recListener{ln, fb})
	t.Cleanup(func() {
		fb.mu.Lock()
		if fb.rcptHang != nil {
			select {
			case <-fb.rcptHang:
			default:
				close(fb.rcptHang)
			}
		}
		fb.mu.Unlock()
		srv.Close()
	})
	return fb
}

type nopErrorLog struct{}

func (nopErrorLog) Printf(string, ...any) {}
func (nopErrorLog) Println(...any)        {}

func (fb *fakeBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	fb.mu.Lock()
	fb.sessions++
	fb.mu.Unlock()
	return &fakeSession{fb: fb, c: c}, nil
}

func (fb *fakeBackend) messages() []fakeMsg {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return append([]fakeMsg(nil), fb.msgs...)
}

// rawAll is everything the backend read, over all its connections.
func (fb *fakeBackend) rawAll() string {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	var b strings.Builder
	for _, r := range fb.raw {
		b.WriteString(r.String())
	}
	return b.String()
}

// rawLines returns the backend's received command lines that start with prefix.
func (fb *fakeBackend) rawLines(prefix string) []string {
	var out []string
	for _, l := range strings.Split(fb.rawAll(), "\r\n") {
		if strings.HasPrefix(strings.ToUpper(l), strings.ToUpper(prefix)) {
			out = append(out, l)
		}
	}
	return out
}

func (fb *fakeBackend) connections() int {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return len(fb.raw)
}

type fakeSession struct {
	fb   *fakeBackend
	c    *smtp.Conn
	from string
	to   []string
}

func (s *fakeSession) AuthMechanisms() []string {
	if s.fb.offerAuth {
		return []string{sasl.Plain}
	}
	return nil
}

func (s *fakeSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, _, _ string) error { return nil }), nil
}

func (s *fakeSession) Mail(from string, _ *smtp.MailOptions) error {
	if f := s.fb.mailErr; f != nil {
		if err := f(from); err != nil {
			return err
		}
	}
	s.from, s.to = from, nil
	return nil
}

func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.fb.mu.Lock()
	hang := s.fb.rcptHang
	s.fb.mu.Unlock()
	if hang != nil {
		<-hang
	}
	if k := s.fb.killOnRcpt; k != "" && strings.HasPrefix(to, k) {
		s.c.Conn().Close()
		return errors.New("dropped at RCPT")
	}
	if f := s.fb.rcptErr; f != nil {
		if err := f(to); err != nil {
			return err
		}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *fakeSession) Data(r io.Reader) error {
	if n := s.fb.closeMidData; n > 0 {
		io.ReadFull(r, make([]byte, n))
		s.c.Conn().Close()
		return errors.New("dropped mid-DATA")
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err // an aborted DATA is never stored
	}
	if s.fb.dataErr != nil {
		return s.fb.dataErr
	}
	s.fb.delivered.Add(1)
	if !s.fb.discard {
		s.fb.mu.Lock()
		s.fb.msgs = append(s.fb.msgs, fakeMsg{From: s.from, To: append([]string(nil), s.to...), Data: b})
		s.fb.mu.Unlock()
	}
	if s.fb.closeIdle.Load() {
		// Like a legacy server's idle timeout firing between messages:
		// answer, then hang up.
		go func() { time.Sleep(20 * time.Millisecond); s.c.Conn().Close() }()
	}
	if s.fb.dataReply != nil {
		return s.fb.dataReply
	}
	return nil
}

func (s *fakeSession) Reset()        { s.from, s.to = "", nil }
func (s *fakeSession) Logout() error { return nil }

// ---------------------------------------------------------------------
// Authenticator stub.

type stubAuth struct {
	users map[string]string
	calls atomic.Int64
}

func (a *stubAuth) Authenticate(_ context.Context, user, pass string) (bool, error) {
	a.calls.Add(1)
	p, ok := a.users[user]
	return ok && p == pass, nil
}

const (
	testUser = "alice@example.org"
	testPass = "s3cret-Pa55word!"
)

// ---------------------------------------------------------------------
// The proxy under test.

type env struct {
	t    testing.TB
	srv  *proxy.Server
	be   *fakeBackend
	auth *stubAuth
	logs *observer.ObservedLogs
	addr map[string]string
	cfg  proxy.Config
}

// Listener names of the default configuration.
const (
	lSubmissions = "submissions" // implicit TLS, AUTH
	lSubmission  = "submission"  // STARTTLS, AUTH
	lMX          = "mx"          // STARTTLS, no AUTH
	lStrict      = "strict"      // STARTTLS, require_tls, AUTH
	lPlain       = "plain"       // no TLS at all, AUTH configured (must never be offered)
)

type envOpt func(*proxy.Config)

func withLimits(f func(*proxy.Limits)) envOpt { return func(c *proxy.Config) { f(&c.Limits) } }

func testLimits() proxy.Limits {
	return proxy.Limits{
		MaxMessageBytes:  1 << 20,
		MaxRecipients:    10,
		MaxLineLength:    2000,
		MaxSessions:      2000,
		MaxSessionsPerIP: 50,
		CommandTimeout:   10 * time.Second,
		DataTimeout:      5 * time.Second,
		WriteTimeout:     5 * time.Second,
		HandshakeTimeout: 5 * time.Second,
		AuthFailDelay:    5 * time.Millisecond,
		AuthMaxFailures:  3,
		AuthFailWindow:   time.Minute,

		AuthUserMaxFailures: 50,
		AuthRemember:        time.Hour,
		AuthMaxConcurrent:   8,
	}
}

func newEnv(t testing.TB, be *fakeBackend, opts ...envOpt) *env {
	t.Helper()
	if be == nil {
		be = newFakeBackend(t)
	}
	pol, err := policy.Parse("test.yaml", []byte("local_domains: [example.org]\ntrusted_networks: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	auth := &stubAuth{users: map[string]string{testUser: testPass, "bob": "bobpass"}}
	cfg := proxy.Config{
		Hostname: "mail.example.org",
		Listeners: []proxy.ListenerConfig{
			{Name: lSubmissions, Address: "127.0.0.1:0", TLS: proxy.TLSImplicit, Auth: true},
			{Name: lSubmission, Address: "127.0.0.1:0", TLS: proxy.TLSStartTLS, Auth: true},
			{Name: lMX, Address: "127.0.0.1:0", TLS: proxy.TLSStartTLS, Auth: false},
			{Name: lStrict, Address: "127.0.0.1:0", TLS: proxy.TLSStartTLS, Auth: true, RequireTLS: true},
			{Name: lPlain, Address: "127.0.0.1:0", TLS: proxy.TLSNone, Auth: true},
		},
		TLS: serverTLSConfig(t),
		Backend: proxy.BackendConfig{Address: be.addr, TLS: proxy.TLSNone, Timeout: 3 * time.Second, PoolSize: 256, PoolIdle: 20 * time.Second,
			DataDoneTimeout: 10 * time.Second, MaxConnections: 100, ReservedAuthenticated: 20, SpoolAfter: 2 * time.Second},
		Limits: testLimits(),
		Policy: pol,
		Auth:   auth,
		Logger: zap.New(core),
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, be: be, auth: auth, logs: logs, addr: map[string]string{}, cfg: cfg}
	for i, a := range srv.Addrs() {
		e.addr[cfg.Listeners[i].Name] = a.String()
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * waitMax):
			t.Errorf("proxy Shutdown did not return within %v (a session is stuck)", 2*waitMax)
		}
	})
	return e
}

// ---------------------------------------------------------------------
// A protocol-level client: send a line, expect a reply code.

type client struct {
	t    testing.TB
	e    *env
	conn net.Conn
	r    *bufio.Reader
}

// dial connects to a listener and reads the greeting. Implicit TLS listeners
// are dialled with TLS.
func (e *env) dial(t testing.TB, listener string) *client {
	t.Helper()
	c := e.dialNoGreet(t, listener)
	c.expect(220)
	return c
}

func (e *env) dialNoGreet(t testing.TB, listener string) *client {
	t.Helper()
	addr, ok := e.addr[listener]
	if !ok {
		t.Fatalf("no listener %q", listener)
	}
	var nc net.Conn
	var err error
	if listener == lSubmissions {
		d := &net.Dialer{Timeout: waitMax}
		nc, err = tls.DialWithDialer(d, "tcp", addr, clientTLSConfig(t))
	} else {
		nc, err = net.DialTimeout("tcp", addr, waitMax)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", listener, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, e: e, conn: nc, r: bufio.NewReader(nc)}
}

func (c *client) sendRaw(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(waitMax))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

func (c *client) send(line string) { c.t.Helper(); c.sendRaw(line + "\r\n") }

// reply reads one (possibly multi-line) reply: its code and its lines
// without the "250-" prefixes.
func (c *client) reply() (int, []string, error) {
	c.conn.SetReadDeadline(time.Now().Add(waitMax))
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return 0, lines, fmt.Errorf("reading reply (got %q so far): %w", lines, err)
		}
		l = strings.TrimRight(l, "\r\n")
		if len(l) < 4 {
			return 0, nil, fmt.Errorf("short reply line %q", l)
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil {
			return 0, nil, fmt.Errorf("bad reply line %q", l)
		}
		lines = append(lines, l[4:])
		if l[3] == ' ' {
			return code, lines, nil
		}
	}
}

// expect reads a reply and fails unless its code is code. It returns the
// last line's text (after the code).
func (c *client) expect(code int) string {
	c.t.Helper()
	got, lines, err := c.reply()
	if err != nil {
		c.t.Fatalf("want %d: %v", code, err)
	}
	if got != code {
		c.t.Fatalf("want %d, got %d %s", code, got, strings.Join(lines, " / "))
	}
	return lines[len(lines)-1]
}

// expectLine reads a one-line reply and fails unless it is exactly want.
func (c *client) expectLine(want string) {
	c.t.Helper()
	code, lines, err := c.reply()
	if err != nil {
		c.t.Fatalf("want %q: %v", want, err)
	}
	got := fmt.Sprintf("%d %s", code, strings.Join(lines, "\n"))
	if got != want {
		c.t.Fatalf("want %q\n got %q", want, got)
	}
}

// expectClass reads a reply and fails unless its first digit is class (4 or 5).
func (c *client) expectClass(class int) (int, string) {
	c.t.Helper()
	code, lines, err := c.reply()
	if err != nil {
		c.t.Fatalf("want %dxx: %v", class, err)
	}
	if code/100 != class {
		c.t.Fatalf("want %dxx, got %d %s", class, code, strings.Join(lines, " / "))
	}
	return code, lines[len(lines)-1]
}

func (c *client) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line)
	return c.expect(code)
}

// ehlo sends EHLO and returns the extension keywords (upper-case lines).
func (c *client) ehlo() []string {
	c.t.Helper()
	c.send("EHLO client.test")
	code, lines, err := c.reply()
	if err != nil || code != 250 {
		c.t.Fatalf("EHLO: %d %q %v", code, lines, err)
	}
	var ext []string
	for _, l := range lines[1:] {
		ext = append(ext, strings.ToUpper(l))
	}
	return ext
}

// starttls upgrades the connection; the caller must EHLO again.
func (c *client) starttls() {
	c.t.Helper()
	c.cmd("STARTTLS", 220)
	tc := tls.Client(c.conn, clientTLSConfig(c.t))
	tc.SetDeadline(time.Now().Add(waitMax))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func plainIR(authz, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func (c *client) authPlain(user, pass string) {
	c.t.Helper()
	c.cmd("AUTH PLAIN "+plainIR("", user, pass), 235)
}

// expectClosed waits for the server to close the connection, failing if it
// sends another reply line first.
func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(waitMax))
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("connection still open after %v", waitMax)
			}
			return
		}
		if l != "" {
			c.t.Fatalf("expected the connection to close, got %q", l)
		}
	}
}

// readUntilClosed returns everything the server sends until it closes, or
// fails after waitMax.
func (c *client) readUntilClosed() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(waitMax))
	b, err := io.ReadAll(c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after %v; got %q", waitMax, b)
	}
	return string(b)
}

// session runs a standard opening: greeting, EHLO, (STARTTLS, EHLO) and AUTH
// as asked.
func (e *env) session(t testing.TB, listener string, tlsUp, auth bool) *client {
	t.Helper()
	c := e.dial(t, listener)
	c.ehlo()
	if tlsUp && listener != lSubmissions {
		c.starttls()
		c.ehlo()
	}
	if auth {
		c.authPlain(testUser, testPass)
	}
	return c
}

// sendMessage runs MAIL, RCPT..., DATA with body (which must end in CRLF)
// and returns the final reply's code and text.
func (c *client) sendMessage(from string, to []string, body string) (int, string) {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", 250)
	for _, r := range to {
		c.cmd("RCPT TO:<"+r+">", 250)
	}
	c.cmd("DATA", 354)
	c.sendRaw(body + ".\r\n")
	code, lines, err := c.reply()
	if err != nil {
		c.t.Fatalf("end of DATA: %v", err)
	}
	return code, lines[len(lines)-1]
}

// waitFor polls cond until it holds or waitMax passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitMax)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle gives asynchronous server work (backend aborts) time to finish
// before a negative assertion.
func settle() { time.Sleep(150 * time.Millisecond) }

// allCRLF reports whether every CR and LF in b is part of a CRLF pair.
func allCRLF(b []byte) bool {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return false
			}
			i++
		case '\n':
			return false
		}
	}
	return true
}

// bodyAfterHeader strips the proxy's Received header from a stored message.
func bodyAfterReceived(t testing.TB, data []byte) string {
	t.Helper()
	s := string(data)
	if !strings.HasPrefix(s, "Received: ") {
		t.Fatalf("message does not start with a Received header: %q", s)
	}
	// The Received header's continuation lines start with a tab.
	i := 0
	for {
		j := strings.Index(s[i:], "\r\n")
		if j < 0 {
			t.Fatalf("unterminated Received header: %q", s)
		}
		i += j + 2
		if i >= len(s) || s[i] != '\t' {
			return s[i:]
		}
	}
}

// freePort returns a loopback address nothing listens on.
func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func hasPrefix(list []string, p string) bool {
	for _, l := range list {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

type proxyLimits = proxy.Limits

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

// dialPlainTo opens a plain TCP connection to addr without reading anything.
func (e *env) dialPlainTo(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitMax)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, e: e, conn: nc, r: bufio.NewReader(nc)}
}

type proxyConfig = proxy.Config

type failingAuth struct{}

func (failingAuth) Authenticate(context.Context, string, string) (bool, error) {
	return false, errors.New("ldap://10.0.0.5: connection refused")
}
