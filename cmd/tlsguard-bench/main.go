// Command tlsguard-bench is the SMTP load generator of tlsguard's benchmark
// (the comparison script is bench/run.sh, documented in
// bench/README.md).
//
// It opens SMTP sessions to -addr, which must be on this machine's loopback
// (127.0.0.0/8 or ::1; anything else is refused before a packet is sent), and
// sends -n messages from -c concurrent sessions:
//
//	plain     connect, EHLO, [AUTH], MAIL, RCPT×r, DATA, QUIT
//	starttls  connect, EHLO, STARTTLS, TLS handshake, EHLO, [AUTH], MAIL, ...
//	implicit  connect, TLS handshake, EHLO, [AUTH], MAIL, ...
//
// Each session carries -per-conn messages (default 1, like smtp-source
// without -d). The client speaks in lock step (no PIPELINING) and writes each
// message as one pre-built, pre-dot-stuffed buffer, so its own CPU cost per
// message is small and the same for every server under test.
//
// Latency of a message is measured from the start of its work (including
// connect, TLS handshake, EHLO and AUTH for the first message of a session)
// to the server's reply to the final ".". QUIT is not included. The setup
// latency (connect until ready for MAIL) is also reported on its own.
//
// -hold N opens N sessions instead (-c of them in parallel), brings each to
// the point where MAIL FROM would come next, prints a line starting with
// "HOLDING", keeps them idle for -hold-for, checks each with NOOP and quits.
//
// The last line of the output is machine-readable:
//
//	RESULT mode=starttls n=8000 ok=8000 err=0 ... rate=... p50_ms=... p99_ms=...
//
// Key exchange: -groups x25519 (the default) pins X25519, so that every
// server does the same handshake work (Go ≥ 1.24 would otherwise offer
// X25519MLKEM768, which OpenSSL 3.0 does not have). P-256 is listed second
// only so that TLS 1.2 servers with a P-256 certificate accept the hello.
//
// -attack spray | drip measures one good client while attackers from many
// loopback source addresses spray passwords or hold DATA open (attack.go;
// the driver is bench/attack.sh).
//
// Every loop is bounded: -n messages (at most 10,000,000), -hold sessions
// (at most 100,000), and -max-time for the whole run; every read and write
// has the -timeout deadline.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tlsguard/tlsguard/internal/smtpwire"
)

// Bounds on what one run may ask for.
const (
	maxMessages = 10_000_000
	maxConc     = 20_000
	maxHold     = 100_000
	maxSize     = 100 << 20
	maxRcpt     = 1000
	maxHoldFor  = time.Hour
	maxErrKinds = 10 // distinct error texts printed
)

// options is the parsed command line.
type options struct {
	addr       string
	mode       string
	n          int
	conc       int
	size       int
	rcpt       int
	auth       string
	perConn    int
	hold       int
	holdFor    time.Duration
	timeout    time.Duration
	maxTime    time.Duration
	groups     string
	tlsMax     string
	resume     bool
	serverName string
	caFile     string
	helo       string
	from       string
	rcptDomain string
	quiet      bool
	src        string // the client's source address (loopback)

	// -attack: see attack.go.
	attack     string
	attackAddr string
	attackMode string
	attackSrc  string
	attackers  int
	duration   time.Duration
	baseline   time.Duration
	ramp       time.Duration
	grace      time.Duration
	sprayUsers int
	sprayGood  int
	dripBytes  int
	dripEvery  time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "tlsguard-bench:", err)
		}
		return 2
	}
	target, err := loopbackTarget(o.addr)
	if err != nil {
		fmt.Fprintln(stderr, "tlsguard-bench:", err)
		return 2
	}
	tc, err := tlsConfig(o)
	if err != nil {
		fmt.Fprintln(stderr, "tlsguard-bench:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.maxTime)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := &client{o: o, target: target, tls: tc}
	if o.auth != "" {
		user, pass, _ := strings.Cut(o.auth, ":")
		c.authLine = "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))
	}
	if o.src != "" {
		srcs, _ := parseSources(o.src) // checked in parseFlags
		c.src = srcs[0]
	}
	if o.attack != "" {
		return runAttack(ctx, c, stdout)
	}
	if o.hold > 0 {
		return runHold(ctx, c, stdout)
	}
	return runLoad(ctx, c, stdout)
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("tlsguard-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:2587", "server `host:port` (loopback only)")
	fs.StringVar(&o.mode, "mode", "starttls", "plain | starttls | implicit")
	fs.IntVar(&o.n, "n", 1000, "messages to send")
	fs.IntVar(&o.conc, "c", 50, "concurrent sessions (in -hold mode: sessions being opened in parallel)")
	fs.IntVar(&o.size, "size", 5000, "message body `bytes` (about 200 bytes of headers come on top)")
	fs.IntVar(&o.rcpt, "rcpt", 1, "recipients per message (r1@DOMAIN, r2@DOMAIN, ...)")
	fs.StringVar(&o.auth, "auth", "", "`user:pass` for AUTH PLAIN after EHLO (optional)")
	fs.IntVar(&o.perConn, "per-conn", 1, "messages per session before QUIT")
	fs.IntVar(&o.hold, "hold", 0, "idle-hold mode: open this many sessions and keep them idle instead of sending mail")
	fs.DurationVar(&o.holdFor, "hold-for", 20*time.Second, "how long -hold keeps the sessions idle")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline for each read and write")
	fs.DurationVar(&o.maxTime, "max-time", 10*time.Minute, "bound on the whole run: no new message or session starts after it")
	fs.StringVar(&o.groups, "groups", "x25519", "TLS key exchange: x25519 | p256 | mlkem (X25519MLKEM768) | default (Go's defaults)")
	fs.StringVar(&o.tlsMax, "tls", "1.3", "highest TLS version offered: 1.2 | 1.3")
	fs.BoolVar(&o.resume, "resume", false, "resume TLS sessions (session tickets, client cache shared by all sessions)")
	fs.StringVar(&o.serverName, "servername", "localhost", "TLS SNI name")
	fs.StringVar(&o.caFile, "cafile", "", "PEM file of the CA to verify the server against (default: no chain verification; the handshake signature is still checked)")
	fs.StringVar(&o.helo, "helo", "bench.localhost", "EHLO name")
	fs.StringVar(&o.from, "from", "sender@bench.localhost", "envelope sender")
	fs.StringVar(&o.rcptDomain, "rcpt-domain", "example.test", "recipient domain")
	fs.BoolVar(&o.quiet, "q", false, "print only the RESULT line (and HOLDING in -hold mode)")
	fs.StringVar(&o.src, "src", "", "source `address` of the client's connections (loopback, e.g. 127.0.1.1; default: the system's choice)")
	fs.StringVar(&o.attack, "attack", "", "measure one good client (-c sessions, default 1) under attack: spray (wrong passwords) | drip (unauthenticated DATA held open)")
	fs.StringVar(&o.attackAddr, "attack-addr", "", "the attackers' target `host:port` (loopback only)")
	fs.StringVar(&o.attackMode, "attack-mode", "", "the attackers' plain | starttls | implicit (default: implicit for spray, plain for drip)")
	fs.StringVar(&o.attackSrc, "attack-src", "127.0.0.2-127.0.0.254", "the attackers' source `addresses`: FIRST-LAST and/or a comma-separated list, loopback only")
	fs.IntVar(&o.attackers, "attackers", 100, "attacker sessions at once")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "-attack: how long the good client is measured under attack")
	fs.DurationVar(&o.baseline, "baseline", 3*time.Second, "-attack: how long the good client is measured alone first (0: not at all)")
	fs.DurationVar(&o.ramp, "ramp", 5*time.Second, "-attack: at most this long between starting the attackers and measuring (less once all are at work)")
	fs.DurationVar(&o.grace, "grace", 10*time.Second, "-attack: a good attempt still running this long after the end is cut off and counted as failed")
	fs.IntVar(&o.sprayUsers, "spray-users", 10000, "-attack spray: distinct user names guessed (spray1, spray2, ...)")
	fs.IntVar(&o.sprayGood, "spray-good", 0, "-attack spray: every `N`th guess is for the good client's own user (-auth); 0: never")
	fs.IntVar(&o.dripBytes, "drip-bytes", 8, "-attack drip: bytes written each -drip-every")
	fs.DurationVar(&o.dripEvery, "drip-every", time.Second, "-attack drip: interval between writes")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tlsguard-bench -addr 127.0.0.1:2587 -mode plain|starttls|implicit -n N -c C [flags]")
		fmt.Fprintln(stderr, "       tlsguard-bench -addr 127.0.0.1:2587 -mode starttls -hold N -hold-for 20s [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := checkAttackFlags(o, fs); err != nil {
		return nil, err
	}
	switch o.mode {
	case "plain", "starttls", "implicit":
	default:
		return nil, fmt.Errorf("-mode %q: want plain, starttls or implicit", o.mode)
	}
	checks := []struct {
		name    string
		v, lo   int
		hi      int
		applies bool
	}{
		{"-n", o.n, 1, maxMessages, o.hold == 0},
		{"-c", o.conc, 1, maxConc, true},
		{"-size", o.size, 0, maxSize, true},
		{"-rcpt", o.rcpt, 1, maxRcpt, true},
		{"-per-conn", o.perConn, 1, maxMessages, true},
		{"-hold", o.hold, 0, maxHold, true},
	}
	for _, c := range checks {
		if c.applies && (c.v < c.lo || c.v > c.hi) {
			return nil, fmt.Errorf("%s %d: must be between %d and %d", c.name, c.v, c.lo, c.hi)
		}
	}
	if o.holdFor < 0 || o.holdFor > maxHoldFor {
		return nil, fmt.Errorf("-hold-for %v: must be between 0 and %v", o.holdFor, maxHoldFor)
	}
	if o.timeout <= 0 || o.maxTime <= 0 {
		return nil, errors.New("-timeout and -max-time must be positive")
	}
	if o.auth != "" && !strings.Contains(o.auth, ":") {
		return nil, errors.New("-auth wants user:pass")
	}
	for _, s := range []string{o.helo, o.from, o.rcptDomain, o.auth} {
		if strings.ContainsAny(s, "\r\n") {
			return nil, errors.New("flags must not contain CR or LF")
		}
	}
	return o, nil
}

// loopbackTarget resolves addr and returns host:port with a literal IP, or an
// error if any address the name stands for is not loopback. Dialing the
// literal means a name cannot resolve differently later.
func loopbackTarget(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("-addr %q: %v", addr, err)
	}
	if host == "" {
		return "", fmt.Errorf("-addr %q: name a loopback address (127.0.0.1 or ::1)", addr)
	}
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		ips, err = net.LookupIP(host)
		if err != nil {
			return "", fmt.Errorf("-addr %q: %v", addr, err)
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("-addr %q: no address", addr)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return "", fmt.Errorf("refusing target %s (%s): only loopback (127.0.0.0/8, ::1) may be load-tested", addr, ip)
		}
	}
	return net.JoinHostPort(ips[0].String(), port), nil
}

func tlsConfig(o *options) (*tls.Config, error) {
	tc := &tls.Config{
		ServerName: o.serverName,
		MinVersion: tls.VersionTLS12,
		MaxVersion: tls.VersionTLS13,
	}
	switch o.tlsMax {
	case "1.3":
	case "1.2":
		tc.MaxVersion = tls.VersionTLS12
	default:
		return nil, fmt.Errorf("-tls %q: want 1.2 or 1.3", o.tlsMax)
	}
	switch o.groups {
	case "x25519":
		// The TLS 1.3 key share is X25519 only; P-256 is there for TLS 1.2
		// servers whose ECDSA P-256 certificate must match supported_groups.
		tc.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	case "p256":
		tc.CurvePreferences = []tls.CurveID{tls.CurveP256}
	case "mlkem":
		tc.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
	case "default":
	default:
		return nil, fmt.Errorf("-groups %q: want x25519, p256, mlkem or default", o.groups)
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-cafile %s: no PEM certificate", o.caFile)
		}
		tc.RootCAs = pool
	} else {
		// A self-signed bench certificate: skip the chain, as every target
		// gets the same treatment. The server's handshake signature is
		// still verified, so the server does its full share of the work.
		tc.InsecureSkipVerify = true
	}
	if o.resume {
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(8192)
	}
	return tc, nil
}

// client holds what every session shares.
type client struct {
	o        *options
	target   string
	tls      *tls.Config
	authLine string

	firstTLS atomic.Pointer[tls.ConnectionState]
	resumed  atomic.Int64
	tlsConns atomic.Int64
	src      net.IP // -src, or nil
}

// session is one SMTP connection in lock step with the server.
type session struct {
	c    *client
	w    *smtpwire.Conn
	conn net.Conn          // w's connection: TLS once up
	ext  map[string]string // EHLO keywords (upper case) -> parameters
}

// stageError says at which step a session failed; the stage names the
// error kind in the report.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

func fail(stage string, err error) error { return &stageError{stage, err} }

// open connects and brings a session to "ready for MAIL FROM".
func (c *client) open(ctx context.Context) (*session, error) { return c.openFrom(ctx, c.src) }

// openFrom is open from the source address src (nil: the system's choice).
func (c *client) openFrom(ctx context.Context, src net.IP) (*session, error) {
	d := net.Dialer{Timeout: c.o.timeout}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	raw, err := d.DialContext(ctx, "tcp", c.target)
	if err != nil {
		return nil, fail("connect", err)
	}
	s := &session{c: c, w: smtpwire.New(raw, c.o.timeout), conn: raw}
	ok := false
	defer func() {
		if !ok {
			s.conn.Close()
		}
	}()
	if c.o.mode == "implicit" {
		tc, err := s.w.Upgrade(ctx, c.tls)
		if err != nil {
			return nil, fail("tls handshake", err)
		}
		s.tlsUp(tc)
	}
	if _, _, err := s.expect(220); err != nil {
		return nil, fail("greeting", err)
	}
	if err := s.ehlo(); err != nil {
		return nil, err
	}
	if c.o.mode == "starttls" {
		if _, ok := s.ext["STARTTLS"]; !ok {
			return nil, fail("starttls", errors.New("server does not offer STARTTLS"))
		}
		tc, err := s.w.StartTLS(ctx, c.tls)
		var he *smtpwire.HandshakeError
		switch {
		case errors.As(err, &he):
			return nil, fail("tls handshake", he.Err)
		case err != nil:
			return nil, fail("starttls", err)
		}
		s.tlsUp(tc)
		if err := s.ehlo(); err != nil {
			return nil, err
		}
	}
	if c.authLine != "" {
		if err := s.cmd(235, c.authLine); err != nil {
			return nil, fail("auth", err)
		}
	}
	ok = true
	return s, nil
}

// tlsUp counts a TLS session that has just been set up.
func (s *session) tlsUp(tc *tls.Conn) {
	st := tc.ConnectionState()
	s.c.firstTLS.CompareAndSwap(nil, &st)
	s.c.tlsConns.Add(1)
	if st.DidResume {
		s.c.resumed.Add(1)
	}
	s.conn = tc
}

func (s *session) ehlo() error {
	r, err := s.w.Cmd("EHLO " + s.c.o.helo)
	if err == nil && r.Code != 250 {
		err = &smtpwire.ReplyError{Reply: r}
	}
	if err != nil {
		return fail("ehlo", err)
	}
	s.ext = smtpwire.Extensions(r)
	return nil
}

// cmd sends one command line and expects the reply code want.
func (s *session) cmd(want int, line string) error {
	_, _, err := s.send(want, line)
	return err
}

func (s *session) send(want int, line string) (int, []string, error) {
	if err := s.w.WriteLine(line); err != nil {
		return 0, nil, err
	}
	return s.expect(want)
}

// expect reads one (possibly multi-line) reply and checks its code; another
// code is a *smtpwire.ReplyError.
func (s *session) expect(want int) (int, []string, error) {
	r, err := s.w.Expect(want)
	return r.Code, r.Lines, err
}

// deliver sends one message: MAIL, RCPT×r, DATA, the message, ".".
func (s *session) deliver(msg []byte) error {
	if err := s.cmd(250, "MAIL FROM:<"+s.c.o.from+">"); err != nil {
		return fail("mail", err)
	}
	for i := 1; i <= s.c.o.rcpt; i++ {
		if err := s.cmd(250, "RCPT TO:<r"+strconv.Itoa(i)+"@"+s.c.o.rcptDomain+">"); err != nil {
			return fail("rcpt", err)
		}
	}
	if err := s.cmd(354, "DATA"); err != nil {
		return fail("data", err)
	}
	// The message already ends with "\r\n.\r\n"; large ones go out in
	// deadline-refreshed chunks so a slow but moving transfer is not cut.
	const chunk = 1 << 20
	for off := 0; off < len(msg); off += chunk {
		if _, err := s.w.Write(msg[off:min(off+chunk, len(msg))]); err != nil {
			return fail("data write", err)
		}
	}
	if _, _, err := s.expect(250); err != nil {
		return fail("end of data", err)
	}
	return nil
}

// quit says QUIT and closes; a server that closes first is not an error.
func (s *session) quit() {
	s.conn.SetDeadline(time.Now().Add(s.c.o.timeout))
	s.cmd(221, "QUIT")
	s.conn.Close()
}

// buildMessage returns headers, a body of size bytes in 78-byte lines, and
// the end-of-data marker, dot-stuffed once for every send.
func buildMessage(o *options) []byte {
	var b bytes.Buffer
	b.Grow(o.size + 512)
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <r1@%s>\r\nSubject: tlsguard-bench\r\nMessage-ID: <bench.%d@bench.localhost>\r\nDate: %s\r\n\r\n",
		o.from, o.rcptDomain, time.Now().UnixNano(), time.Now().Format(time.RFC1123Z))
	line := bytes.Repeat([]byte("x"), 76)
	for left := o.size; left > 0; {
		n := min(left, len(line)+2) - 2
		if n < 0 {
			n = 0
		}
		b.Write(line[:n])
		b.WriteString("\r\n")
		left -= n + 2
	}
	return dotStuff(b.Bytes())
}

// dotStuff doubles a leading "." on every line and appends "\r\n.\r\n"
// (RFC 5321 4.5.2). The input ends with CRLF.
func dotStuff(m []byte) []byte {
	out := make([]byte, 0, len(m)+8)
	bol := true
	for _, ch := range m {
		if bol && ch == '.' {
			out = append(out, '.')
		}
		out = append(out, ch)
		bol = ch == '\n'
	}
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return append(out, ".\r\n"...)
}

// errCounts tallies errors by text (bounded: the first maxErrKinds*10
// distinct texts, the rest as "other").
type errCounts struct {
	mu sync.Mutex
	m  map[string]int
	n  atomic.Int64
}

func (e *errCounts) add(err error) {
	e.n.Add(1)
	msg := err.Error()
	if len(msg) > 140 {
		msg = msg[:140]
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	if _, ok := e.m[msg]; !ok && len(e.m) >= 10*maxErrKinds {
		msg = "(other errors)"
	}
	e.m[msg]++
}

func (e *errCounts) print(w io.Writer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range e.m {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	for i, x := range l {
		if i == maxErrKinds {
			fmt.Fprintf(w, "  ... %d more kinds of error\n", len(l)-i)
			break
		}
		fmt.Fprintf(w, "  error x%d: %s\n", x.v, x.k)
	}
}

// runLoad sends o.n messages from o.conc workers.
func runLoad(ctx context.Context, c *client, stdout io.Writer) int {
	o := c.o
	msg := buildMessage(o)
	var (
		next    atomic.Int64
		ok      atomic.Int64
		conns   atomic.Int64
		errs    errCounts
		mu      sync.Mutex
		lat     = make([]time.Duration, 0, o.n)
		setup   = make([]time.Duration, 0, o.n/o.perConn+1)
		wg      sync.WaitGroup
		workers = min(o.conc, o.n)
	)
	// take claims the next message; false when all are claimed or time is up.
	take := func() bool { return ctx.Err() == nil && next.Add(1) <= int64(o.n) }
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var myLat, mySetup []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, myLat...)
				setup = append(setup, mySetup...)
				mu.Unlock()
			}()
			for take() {
				t0 := time.Now()
				s, err := c.open(ctx)
				if err != nil {
					errs.add(err)
					continue
				}
				conns.Add(1)
				mySetup = append(mySetup, time.Since(t0))
				sent := 0
				for {
					if err = s.deliver(msg); err != nil {
						errs.add(err)
						break
					}
					myLat = append(myLat, time.Since(t0))
					ok.Add(1)
					sent++
					if sent >= o.perConn || !take() {
						break
					}
					t0 = time.Now()
				}
				if err == nil {
					s.quit()
				} else {
					s.conn.Close()
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	notRun := int64(o.n) - ok.Load() - errs.n.Load()
	if notRun < 0 {
		notRun = 0
	}
	pl, ps := percentiles(lat), percentiles(setup)
	rate := float64(ok.Load()) / wall.Seconds()
	tlsWord := c.tlsSummary()
	if !o.quiet {
		fmt.Fprintf(stdout, "tlsguard-bench: %s -> %s  n=%d c=%d size=%d rcpt=%d per-conn=%d groups=%s auth=%v\n",
			o.mode, c.target, o.n, o.conc, o.size, o.rcpt, o.perConn, o.groups, o.auth != "")
		fmt.Fprintf(stdout, "  %s\n", tlsWord)
		fmt.Fprintf(stdout, "  %d ok, %d errors, %d not started (time bound), %d sessions in %.2f s: %.1f msgs/s, %.1f MB/s\n",
			ok.Load(), errs.n.Load(), notRun, conns.Load(), wall.Seconds(), rate, rate*float64(len(msg))/1e6)
		fmt.Fprintf(stdout, "  latency per message ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f;  session setup ms: p50 %.2f  p99 %.2f\n",
			pl(0.50), pl(0.90), pl(0.99), pl(1), ps(0.50), ps(0.99))
		errs.print(stdout)
	}
	fmt.Fprintf(stdout, "RESULT mode=%s n=%d ok=%d err=%d not_run=%d conns=%d wall_s=%.3f rate=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f setup_p50_ms=%.2f setup_p99_ms=%.2f msg_bytes=%d %s\n",
		o.mode, o.n, ok.Load(), errs.n.Load(), notRun, conns.Load(), wall.Seconds(), rate,
		pl(0.50), pl(0.90), pl(0.99), pl(1), ps(0.50), ps(0.99), len(msg), tlsWord)
	if errs.n.Load() > 0 || notRun > 0 {
		return 1
	}
	return 0
}

// tlsSummary describes the first TLS session and the resumption rate.
func (c *client) tlsSummary() string {
	st := c.firstTLS.Load()
	if st == nil {
		return "tls=none"
	}
	v := map[uint16]string{tls.VersionTLS12: "1.2", tls.VersionTLS13: "1.3"}[st.Version]
	return fmt.Sprintf("tls=%s cipher=%s group=%s resumed=%d/%d", v, tls.CipherSuiteName(st.CipherSuite),
		strings.ReplaceAll(st.CurveID.String(), " ", ""), c.resumed.Load(), c.tlsConns.Load())
}

// percentiles sorts d and returns a lookup in milliseconds (nearest rank).
func percentiles(d []time.Duration) func(p float64) float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return func(p float64) float64 {
		if len(d) == 0 {
			return 0
		}
		i := int(p*float64(len(d)) + 0.5)
		i = min(max(i-1, 0), len(d)-1)
		return float64(d[i].Microseconds()) / 1000
	}
}

// runHold opens o.hold sessions, keeps them idle for o.holdFor, then checks
// they are still alive with NOOP and quits them.
func runHold(ctx context.Context, c *client, stdout io.Writer) int {
	o := c.o
	var (
		mu   sync.Mutex
		held = make([]*session, 0, o.hold)
		errs errCounts
		wg   sync.WaitGroup
		sem  = make(chan struct{}, o.conc)
	)
	start := time.Now()
	for i := 0; i < o.hold && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s, err := c.open(ctx)
			if err != nil {
				errs.add(err)
				return
			}
			// Idle sessions must outlive the hold: no deadline until NOOP.
			s.conn.SetDeadline(time.Time{})
			mu.Lock()
			held = append(held, s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	setup := time.Since(start)
	fmt.Fprintf(stdout, "HOLDING established=%d failed=%d setup_s=%.2f mode=%s %s\n",
		len(held), errs.n.Load(), setup.Seconds(), o.mode, c.tlsSummary())
	if !o.quiet {
		errs.print(stdout)
	}
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	select {
	case <-time.After(o.holdFor):
	case <-ctx.Done():
	}
	var alive atomic.Int64
	var noopErrs errCounts
	for _, s := range held {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.cmd(250, "NOOP"); err != nil {
				noopErrs.add(fail("noop", err))
				s.conn.Close()
				return
			}
			alive.Add(1)
			s.quit()
		}()
	}
	wg.Wait()
	if !o.quiet {
		noopErrs.print(stdout)
	}
	fmt.Fprintf(stdout, "RESULT mode=hold-%s requested=%d established=%d alive_after=%d failed=%d setup_s=%.2f held_s=%.1f %s\n",
		o.mode, o.hold, len(held), alive.Load(), errs.n.Load(), setup.Seconds(), time.Since(start).Seconds()-setup.Seconds(), c.tlsSummary())
	if int(alive.Load()) != o.hold {
		return 1
	}
	return 0
}
