package e2e

// The backend leg under pressure: a backend slow to answer the final dot,
// and unauthenticated sessions that would hold every backend connection.

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// slowDotSender is the sender for which the backend (Postfix) takes 60 s to
// answer the end-of-data dot: its end-of-data restrictions sleep first, as a
// slow before-queue content scan would.
const slowDotSender = "eod-slow@foreign.test"

// slowDotPostfix makes Postfix sleep 60 s at the end of DATA for
// slowDotSender only (a restriction class through an inline access map),
// keeping the template's end-of-data refusals.
var slowDotPostfix = []string{
	"smtpd_restriction_classes = slow_eod",
	"slow_eod = sleep 60",
	"smtpd_end_of_data_restrictions = check_sender_access inline:{" + slowDotSender + "=slow_eod}",
}

// RFC 5321 4.5.3.2.6 gives a server 10 minutes to answer the final dot. A
// backend that answers after 60 s (longer than backend.timeout, 30 s) must
// get its 250 passed to the client, which waited meanwhile, and the message
// is stored exactly once. With the final reply bounded by backend.timeout,
// the client was told 451 for a message the backend then stored: its retry
// would have stored a second copy.
func TestHardeningSlowFinalReply(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 60 s for the backend's reply")
	}
	t.Parallel()
	pf := startPostfix(t, slowDotPostfix...)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.openData(t, slowDotSender, alice)
	sent := time.Now()
	c.send("Subject: slow final reply\r\n\r\nbody\r\n.\r\n")
	r, err := c.tryRead(90 * time.Second)
	if err != nil {
		t.Fatalf("no reply to the final dot: %v (got %q)", err, r.raw)
	}
	r.expect(t, 250)
	if waited := time.Since(sent); waited < 55*time.Second {
		t.Fatalf("got %q after %v: the backend's end-of-data sleep did not happen, the test proves nothing", r.raw, waited)
	}
	// The session is still usable after the long wait.
	c.cmd("NOOP").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, alice, 1)
	pf.Settle(t)
	if n := len(pf.Messages(t, alice)); n != 1 {
		t.Fatalf("%s holds %d copies, want exactly 1", alice, n)
	}
	if id := queueIDOf(r); id == "" || pf.Messages(t, alice)[0].QueueID() != id {
		t.Errorf("the client's 250 %q does not carry the stored message's queue id", r.raw)
	}
}

// Unauthenticated sessions cannot take every backend connection. Twenty of
// them, from five addresses, drip a message to a local mailbox one line a
// second for 40 s, against a Postfix that runs at most 12 smtpd processes
// and tlsguard capped at 10 backend connections, 3 of them reserved for
// logged-in users. Meanwhile a logged-in client on the implicit-TLS port
// delivers and gets its 250. The drippers hold at most the unauthenticated
// share (7) at any time, as both tlsguard's gauge and the kernel's count of
// connections to Postfix show, and each dripped message is delivered once
// complete (spooled, then sent). Before the cap and the spool, the drippers
// held all 12 smtpd processes for the whole drip, and the logged-in client
// got 451 4.4.1 after backend.timeout.
func TestHardeningDripFloodLeavesBackendForLoggedIn(t *testing.T) {
	if testing.Short() {
		t.Skip("drips for 40 s")
	}
	t.Parallel()
	const (
		drippers   = 20
		dripFor    = 40 * time.Second
		maxConns   = 10
		reserved   = 3
		unauthCap  = maxConns - reserved
		postfixMax = 12
	)
	pf := startPostfix(t, fmt.Sprintf("default_process_limit = %d", postfixMax))
	admin := loopbackAddr(t)
	g := configKeyGuard(t, pf.Addr, fmt.Sprintf("admin:\n  address: %q\n", admin), "  timeout: 30s",
		fmt.Sprintf("  timeout: 30s\n  max_connections: %d\n  reserved_authenticated: %d", maxConns, reserved))
	metric := func(name string, labels ...string) float64 {
		_, body := httpGet(t, "http://"+admin+"/metrics")
		return metricValue(body, name, labels...)
	}
	_, port, _ := net.SplitHostPort(pf.Addr)
	// toPostfix counts established TCP connections to Postfix's port (the
	// client ends: tlsguard's), as the kernel sees them.
	toPostfix := func() int {
		out, err := exec.Command("ss", "-Htn", "state", "established", "dport", "= :"+port).Output()
		if err != nil {
			t.Errorf("ss: %v", err)
			return -1
		}
		return strings.Count(string(out), "\n")
	}

	// The drippers run as goroutines (parallel subtests would be held to
	// -parallel at a time); each reports its outcome on errs.
	var inData, done atomic.Int32
	errs := make(chan error, drippers)
	for i := range drippers {
		src := fmt.Sprintf("127.0.0.%d", 2+i%5)
		go func() {
			defer done.Add(1)
			errs <- dripMessage(src, g.MX, fmt.Sprintf("drip %d", i), dripFor, &inData)
		}()
	}
	var maxUnauth, maxToPostfix int
	sample := func() {
		maxUnauth = max(maxUnauth, int(metric("tlsguard_backend_connections_active", "class", "unauthenticated")))
		maxToPostfix = max(maxToPostfix, toPostfix())
	}
	waitUntil(t, "the drippers in DATA", 60*time.Second, func() bool { sample(); return inData.Load() >= postfixMax })
	time.Sleep(3 * time.Second) // past spool_after: the drip is under way
	sample()
	if done.Load() > 0 {
		t.Fatal("a dripper finished before the logged-in client tried: the flood was not on")
	}

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("laptop.example.net")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	c.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	c.cmd("RCPT TO:<"+bob+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: during the drip flood\r\n\r\nhello\r\n.\r\n")
	c.read().expect(t, 250)
	if done.Load() > 0 {
		t.Error("a dripper finished before the logged-in client's 250: the flood was not on throughout")
	}
	c.cmd("QUIT").expect(t, 221)

	for done.Load() < drippers {
		sample()
		time.Sleep(200 * time.Millisecond)
	}
	for range drippers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	pf.WaitMessages(t, bob, 1)
	pf.WaitMessages(t, alice, drippers)
	if n := maxUnauth; n > unauthCap || n < 1 {
		t.Errorf("unauthenticated sessions held up to %d backend connections, want 1..%d", n, unauthCap)
	}
	if n := maxToPostfix; n > maxConns {
		t.Errorf("up to %d connections to Postfix at once, want at most max_connections (%d)", n, maxConns)
	}
	if n := metric("tlsguard_messages_spooled_total", "listener", "mx", "result", "delivered"); n != drippers {
		t.Errorf("tlsguard_messages_spooled_total{result=delivered} = %v, want %d", n, drippers)
	}
	t.Logf("unauthenticated backend connections at most %d, connections to Postfix at most %d", maxUnauth, maxToPostfix)
}

// dripMessage sends one message from src to the MX listener at addr, carol to
// alice, one line a second for dripFor, and expects 250 for it. It counts
// itself in inData once DATA was accepted. It runs in its own goroutine, so
// it reports instead of failing the test.
func dripMessage(src, addr, subject string, dripFor time.Duration, inData *atomic.Int32) error {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: dial: %w", subject, err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	expect := func(code string) error {
		conn.SetReadDeadline(time.Now().Add(90 * time.Second))
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("%s: waiting for %s: %w", subject, code, err)
			}
			if len(line) < 4 || line[3] == '-' {
				continue
			}
			if !strings.HasPrefix(line, code) {
				return fmt.Errorf("%s: got %q, want %s", subject, strings.TrimSpace(line), code)
			}
			return nil
		}
	}
	send := func(s string) error {
		conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := conn.Write([]byte(s))
		return err
	}
	if err := expect("220"); err != nil {
		return err
	}
	for _, step := range [][2]string{{"EHLO drip.example.net\r\n", "250"}, {"MAIL FROM:<" + carol + ">\r\n", "250"},
		{"RCPT TO:<" + alice + ">\r\n", "250"}, {"DATA\r\n", "354"}} {
		if err := send(step[0]); err != nil {
			return err
		}
		if err := expect(step[1]); err != nil {
			return err
		}
	}
	inData.Add(1)
	if err := send("Subject: " + subject + "\r\n\r\n"); err != nil {
		return err
	}
	for end := time.Now().Add(dripFor); time.Now().Before(end); time.Sleep(time.Second) {
		if err := send("a slowly dripped line\r\n"); err != nil {
			return fmt.Errorf("%s: %w", subject, err)
		}
	}
	if err := send(".\r\n"); err != nil {
		return err
	}
	if err := expect("250"); err != nil {
		return err
	}
	send("QUIT\r\n")
	return nil
}
