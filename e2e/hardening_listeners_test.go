package e2e

// Sessions across listeners and over time: a flood on the MX listener
// cannot take the submission listeners' sessions (listeners[].max_sessions),
// a client that trickles bytes without ever finishing a command is cut off
// at command_timeout, and a client that uses exactly max_sessions_per_ip
// and reconnects right after QUIT always finds its slot free.

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A flood of idle and trickling plaintext connections from many addresses
// on the MX listener fills that listener's own cap (max_sessions: 20 of
// limits.max_sessions: 30); the excess is refused 421 4.7.0, counted as
// limit_listener; and a client on the implicit-TLS listener still gets its
// greeting, logs in and delivers.
func TestHardeningListenerCapMXFlood(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	admin := loopbackAddr(t)
	g := configKeyGuard(t, pf.Addr,
		fmt.Sprintf("limits:\n  max_sessions: 30\n  max_sessions_per_ip: 4\nadmin:\n  address: %q\n", admin),
		"    auth: false", "    auth: false\n    max_sessions: 20")

	stop := make(chan struct{})
	defer close(stop)
	admitted, refused := 0, 0
	for i := 0; i < 40; i++ { // 10 addresses, 4 each: twice the listener's cap
		src := fmt.Sprintf("127.0.12.%d", i/4+1)
		c := newSMTPConn(t, dialFrom(t, src, g.MX))
		r, err := c.tryRead(ioTimeout)
		switch {
		case err == nil && r.code == 220:
			admitted++
			if i%2 == 0 {
				go drip(c.conn, strings.Repeat("x", 600), time.Second, stop) // never a CRLF
			}
		case err == nil && r.code == 421 && r.enhanced() == "4.7.0":
			refused++
			c.conn.Close()
		default:
			t.Fatalf("flood connection %d from %s: got %q (%v), want 220 or 421 4.7.0", i, src, r.raw, err)
		}
	}
	if admitted != 20 || refused != 20 {
		t.Errorf("MX flood: %d admitted, %d refused; want 20 and 20 (listeners[mx].max_sessions: 20)", admitted, refused)
	}

	c := dialImplicitTLSFrom(t, "127.0.0.1", g.Submissions, g.PKI.clientTLS())
	c.ehlo("good.example.net")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	tryTransaction(t, c, alice, carol, "Subject: during an MX flood\r\n\r\nbody\r\n").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, carol, 1)

	expectLogLine(t, g, "connection refused", `"reason":"limit_listener"`, `"listener":"mx"`)
	_, body := httpGet(t, "http://"+admin+"/metrics")
	if n := metricValue(body, "tlsguard_connections_refused_total", "listener", "mx", "reason", "limit_listener"); n != 20 {
		t.Errorf("tlsguard_connections_refused_total{listener=mx,reason=limit_listener} = %v, want 20", n)
	}
}

// A client that trickles one byte a second and never sends a line end is
// told 421 4.4.2 and disconnected once command_timeout has passed since the
// command began: each byte does not buy more time. The same before the
// first command (right after the greeting), after a completed EHLO, and
// inside implicit TLS (one byte per TLS record).
func TestHardeningTrickledCommandTimesOut(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  command_timeout: 3s\n"))

	stop := make(chan struct{})
	defer close(stop)
	cases := []struct {
		name string
		dial func() *smtpConn
	}{
		{"first command after the greeting", func() *smtpConn { return dialSMTPFrom(t, "127.0.13.1", g.MX) }},
		{"after EHLO", func() *smtpConn {
			c := dialSMTPFrom(t, "127.0.13.2", g.MX)
			c.ehlo("trickle.example.net")
			return c
		}},
		{"implicit TLS, after EHLO", func() *smtpConn {
			c := dialImplicitTLSFrom(t, "127.0.13.3", g.Submissions, g.PKI.clientTLS())
			c.ehlo("trickle.example.net")
			return c
		}},
	}
	var wg sync.WaitGroup
	for _, tc := range cases {
		c := tc.dial()
		wg.Add(1)
		go func() {
			defer wg.Done()
			go drip(c.conn, "MAIL FROM:<trickle@foreign.test>"+strings.Repeat(" ", 200), time.Second, stop)
			// The bound only ends the test; the old behaviour kept such a
			// client for as long as it dripped (over 3 minutes here).
			lines, closed := c.readUntilClosed(20 * time.Second)
			if !closed {
				t.Errorf("%s: a client trickling a command without CRLF is still connected after 20s (command_timeout 3s); got %q", tc.name, lines)
				return
			}
			// The half line is never run as a command: no reply but the 421.
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "421 4.4.2 ") {
				t.Errorf("%s: closed with %q, want one reply 421 4.4.2", tc.name, lines)
			}
		}()
	}
	wg.Wait()
	expectLogLine(t, g, "session", `"client_ip":"127.0.13.1"`)
}

// A client that keeps exactly max_sessions_per_ip sessions open and opens
// the next one as soon as one ends with QUIT (after reading the 221) is
// never refused: the slot is free before the 221 leaves tlsguard.
func TestHardeningPerIPSlotFreeAfterQUIT(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	const perIP, sessions = 10, 3000
	g := startTLSGuard(t, pf, withConfig(fmt.Sprintf("limits:\n  max_sessions_per_ip: %d\n", perIP)))

	var next, refused atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for w := 0; w < perIP; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= sessions {
				greeting, err := quitSession("127.0.14.1", g.MX)
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					return
				}
				if !strings.HasPrefix(greeting, "220 ") {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("sessions failed: %q", failures)
	}
	if n := refused.Load(); n > 0 {
		t.Errorf("%d of %d sessions refused at exactly max_sessions_per_ip (%d) concurrent sessions, want none", n, sessions, perIP)
	}
}

// quitSession connects from src, reads the greeting and, if it is a 220,
// says QUIT, reads the 221 and closes. It returns the greeting.
func quitSession(src, addr string) (string, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(ioTimeout))
	r := bufio.NewReader(conn)
	greeting, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(greeting, "220 ") {
		return greeting, nil // refused: a 421 and a close
	}
	if _, err := conn.Write([]byte("QUIT\r\n")); err != nil {
		return greeting, err
	}
	bye, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(bye, "221 ") {
		return greeting, fmt.Errorf("QUIT: got %q (%v), want 221", bye, err)
	}
	return greeting, nil
}
