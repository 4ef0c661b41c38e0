package e2e

// Resource abuse: slowloris, connection floods, overlong lines, recipient
// floods, oversized messages, stalled handshakes. In each, a well-behaved
// client sends a message during the abuse (a correctness check with a
// generous bound, not a performance assertion). Abusers use their own
// 127.0.x.y source addresses; the good client is 127.0.0.1.

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// goodClientDelivers sends one message through the MX listener from
// 127.0.0.1 and waits until the backend stored it.
func goodClientDelivers(t *testing.T, g *TLSGuard, pf *Postfix, subject string, n int) {
	t.Helper()
	c := dialSMTPFrom(t, "127.0.0.1", g.MX)
	c.ehlo("good.example.net")
	tryTransaction(t, c, "good@foreign.test", bob, "Subject: "+subject+"\r\n\r\nbody\r\n").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, bob, n)
}

// dripper sends s one byte at a time, every, until it is done, the
// connection fails, or stop is closed. It returns what the server sent.
func drip(conn net.Conn, s string, every time.Duration, stop <-chan struct{}) {
	for i := 0; i < len(s); i++ {
		select {
		case <-stop:
			return
		case <-time.After(every):
		}
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte{s[i]}); err != nil {
			return
		}
	}
}

// Slowloris slower than the timeouts: a byte every 1.5 s against
// command_timeout and data_timeout of 1 s. Each such session is told
// 421 4.4.2 and closed, in commands and in DATA, nothing is stored; a good
// client is served meanwhile.
func TestHardeningSlowlorisBeyondTimeout(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  command_timeout: 1s\n  data_timeout: 1s\n"))

	stop := make(chan struct{})
	defer close(stop)
	type result struct {
		name  string
		lines []string
		shut  bool
	}
	results := make(chan result, 8)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		inData := i%2 == 1
		src := fmt.Sprintf("127.0.3.%d", i+1)
		c := dialSMTPFrom(t, src, g.MX)
		if inData {
			c.ehlo("slow.example.net")
			c.openData(t, "slow@foreign.test", alice)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			go drip(c.conn, "EHLO slow.example.net\r\nSubject: slow\r\n\r\nx\r\n.\r\n", 1500*time.Millisecond, stop)
			lines, closed := c.readUntilClosed(10 * time.Second)
			results <- result{fmt.Sprintf("%s (in DATA: %v)", src, inData), lines, closed}
		}()
	}
	goodClientDelivers(t, g, pf, "during slowloris", 1)
	wg.Wait()
	close(results)
	for r := range results {
		if !r.shut {
			t.Errorf("%s: slowloris session still open after 10s; got %q", r.name, r.lines)
			continue
		}
		if len(r.lines) == 0 || !strings.HasPrefix(r.lines[len(r.lines)-1], "421 4.4.2 ") {
			t.Errorf("%s: closed with %q, want a last reply 421 4.4.2", r.name, r.lines)
		}
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
}

// Slowloris just under the timeouts (a byte every 0.4 s, timeouts 1 s): the
// sliding idle timeout lets such a session live (a slow but moving client is
// legitimate), so what bounds the attack is the per-IP session limit: one
// address holds at most max_sessions_per_ip sessions, the rest are turned
// away with 421 4.7.0, and a client at another address is served.
func TestHardeningSlowlorisUnderTimeoutBoundedPerIP(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  command_timeout: 1s\n  data_timeout: 1s\n  max_sessions_per_ip: 3\n"))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	admitted, refused := 0, 0
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 8; i++ {
		conn := dialFrom(t, "127.0.3.50", g.MX)
		c := newSMTPConn(t, conn)
		r, err := c.tryRead(5 * time.Second)
		switch {
		case err == nil && r.code == 220:
			admitted++
			wg.Add(1)
			go func() { defer wg.Done(); drip(conn, strings.Repeat("NOOP\r\n", 100), 400*time.Millisecond, stop) }()
		case err == nil && r.code == 421 && r.enhanced() == "4.7.0":
			refused++
		default:
			t.Errorf("session %d from one address: got %q (%v), want 220 or 421 4.7.0", i, r.raw, err)
		}
		if time.Now().After(deadline) {
			break
		}
	}
	if admitted != 3 || refused != 5 {
		t.Errorf("from one address: %d sessions admitted, %d refused; want 3 and 5 (max_sessions_per_ip: 3)", admitted, refused)
	}
	time.Sleep(1500 * time.Millisecond) // past the idle timeout: the drippers live on
	goodClientDelivers(t, g, pf, "during slowloris under the timeout", 1)
	close(stop)
	wg.Wait()
	expectLogLine(t, g, "connection refused", `"reason":"limit_per_ip"`, `"client_ip":"127.0.3.50"`)
}

// A connection flood over the per-IP and the global limits: the excess is
// refused with 421 4.7.0 (per-IP: a good client at another address still
// gets in; global: everyone waits, with a 4xx), and once the flood ends
// the slots are free again.
func TestHardeningConnectionFlood(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_sessions: 12\n  max_sessions_per_ip: 4\n"))

	open := func(src string, n int) (conns []*smtpConn, refused int) {
		for i := 0; i < n; i++ {
			c := newSMTPConn(t, dialFrom(t, src, g.MX))
			r, err := c.tryRead(5 * time.Second)
			if err == nil && r.code == 220 {
				conns = append(conns, c)
				continue
			}
			if err != nil || r.code != 421 || r.enhanced() != "4.7.0" {
				t.Errorf("flood from %s: refused with %q (%v), want 421 4.7.0", src, r.raw, err)
			}
			refused++
			c.conn.Close()
		}
		return conns, refused
	}
	// Per IP.
	flood, refused := open("127.0.4.1", 10)
	if len(flood) != 4 || refused != 6 {
		t.Errorf("one address: %d admitted, %d refused; want 4 and 6", len(flood), refused)
	}
	goodClientDelivers(t, g, pf, "during a per-IP flood", 1)

	// Global: two more addresses fill the remaining 8 slots (the good
	// client's session has ended), the next address is refused.
	for _, src := range []string{"127.0.4.2", "127.0.4.3"} {
		more, _ := open(src, 4)
		flood = append(flood, more...)
	}
	if len(flood) != 12 {
		t.Errorf("%d sessions admitted in all, want max_sessions 12", len(flood))
	}
	c := newSMTPConn(t, dialFrom(t, "127.0.0.1", g.MX))
	if r, err := c.tryRead(ioTimeout); err != nil || r.code != 421 || r.enhanced() != "4.7.0" {
		t.Errorf("at the global limit a new client got %q (%v), want 421 4.7.0", r.raw, err)
	}
	expectLogLine(t, g, "connection refused", `"reason":"limit_total"`)
	expectLogLine(t, g, "connection refused", `"reason":"limit_per_ip"`)

	// The flood ends; slots are released.
	for _, f := range flood {
		f.conn.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := newSMTPConn(t, dialFrom(t, "127.0.0.1", g.MX))
		r, err := c.tryRead(5 * time.Second)
		c.conn.Close()
		if err == nil && r.code == 220 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots not released 10s after the flood ended: %q %v", r.raw, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	goodClientDelivers(t, g, pf, "after the flood", 2)
}

// Overlong lines: a command line of 1 MB without a line end, and a DATA
// line past max_line_length. The first is cut off with 500 5.4.0 and a
// close (never buffered whole), the second refused, nothing stored, and the
// good client is served.
func TestHardeningOverlongLines(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_line_length: 1000\n"))

	c := dialSMTPFrom(t, "127.0.5.1", g.MX)
	go func() {
		chunk := []byte(strings.Repeat("A", 64<<10))
		for i := 0; i < 16; i++ {
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	got, closed := c.readUntilClosed(10 * time.Second)
	if !closed || len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "500 5.4.0") {
		t.Errorf("1 MB command line: closed=%v, replies %q; want 500 5.4.0 and a close", closed, got)
	}

	c = dialSMTPFrom(t, "127.0.5.2", g.MX)
	c.ehlo("long.example.net")
	r := tryTransaction(t, c, "long@foreign.test", alice, "Subject: long line\r\n\r\n"+strings.Repeat("x", 5000)+"\r\nMAIL FROM:<ceo@example.org>\r\n")
	if r.code/100 != 5 {
		t.Errorf("DATA line of 5000 bytes: got %q, want a 5xx", r.raw)
	}
	goodClientDelivers(t, g, pf, "during overlong lines", 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
}

// Thousands of RCPT, pipelined in one write: max_recipients are accepted,
// every other one gets 452 4.5.3 (one reply per command, in order), a
// flood of relay attempts gets 550 each, and the message goes once to the
// accepted recipients.
func TestHardeningRecipientFlood(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_recipients: 50\n"))

	c := dialSMTPFrom(t, "127.0.5.3", g.MX)
	c.ehlo("many.example.net")
	c.cmd("MAIL FROM:<many@foreign.test>").expect(t, 250)
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "RCPT TO:<carol+%d@foreign.test>\r\n", i) // relay attempts
	}
	for i := 0; i < 2000; i++ {
		to := []string{alice, bob}[i%2]
		fmt.Fprintf(&b, "RCPT TO:<%s>\r\n", to)
	}
	go c.conn.Write([]byte(b.String()))
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		r := c.read()
		key := fmt.Sprintf("%d %s", r.code, r.enhanced())
		counts[key]++
		switch {
		case i < 1000 && r.code != 550:
			t.Fatalf("relay attempt %d got %q, want 550", i, r.raw)
		case i >= 1000 && i < 1050 && r.code != 250:
			t.Fatalf("local RCPT %d got %q, want 250", i-1000, r.raw)
		case i >= 1050 && (r.code != 452 || r.enhanced() != "4.5.3"):
			t.Fatalf("local RCPT %d got %q, want 452 4.5.3", i-1000, r.raw)
		}
	}
	t.Logf("replies: %v", counts)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: recipient flood\r\n\r\nbody\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, alice, 1)
	pf.WaitMessages(t, bob, 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, carol)
}

// A message over the size limit, in DATA and in BDAT: 552 5.3.4, nothing
// stored, and a BDAT chunk refused for its declared size is still read
// whole, so its bytes never run as commands (one reply, then QUIT works).
// Each is over the limit by less than the 64 KB that is still read to stay
// in step with the client; far over it, see
// TestHardeningOversizedMessageClosed.
func TestHardeningOversizedMessage(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_message_size: 4k\n"))
	forged := "\r\nMAIL FROM:<ceo@example.org>\r\nRCPT TO:<" + victim + ">\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"

	// DATA: 40 KB in 1,280-byte writes; the reply comes after the end of
	// data.
	c := dialSMTPFrom(t, "127.0.5.4", g.MX)
	c.ehlo("big.example.net")
	c.openData(t, "big@foreign.test", alice)
	line := strings.Repeat("x", 78) + "\r\n"
	chunk := strings.Repeat(line, 16)
	c.send("Subject: big\r\n\r\n")
	for i := 0; i < 32; i++ {
		c.send(chunk)
	}
	c.send(".\r\n")
	c.read().expectPrefix(t, "552 5.3.4 ")
	c.cmd("QUIT").expect(t, 221)

	// BDAT: one chunk over the limit whose content looks like commands.
	body := "Subject: big bdat\r\n\r\n" + strings.Repeat(line, 60) + forged
	c = dialSMTPFrom(t, "127.0.5.4", g.MX)
	c.ehlo("big.example.net")
	c.cmd("MAIL FROM:<big@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
	c.read().expectPrefix(t, "552 5.3.4 ")
	c.cmd("QUIT").expect(t, 221)

	// BDAT: two chunks, the second passing the limit.
	c = dialSMTPFrom(t, "127.0.5.4", g.MX)
	c.ehlo("big.example.net")
	c.cmd("MAIL FROM:<big@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	first := "Subject: big bdat 2\r\n\r\n" + strings.Repeat(line, 30)
	c.send(fmt.Sprintf("BDAT %d\r\n%s", len(first), first))
	c.read().expect(t, 250)
	second := strings.Repeat(line, 30) + forged
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(second), second))
	c.read().expectPrefix(t, "552 5.3.4 ")
	c.cmd("QUIT").expect(t, 221)

	goodClientDelivers(t, g, pf, "during oversized messages", 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, alice, victim)
}

// A client that sends far more than the size limit, without SIZE=, in DATA
// and in BDAT: 552 5.3.4 and the connection is closed once tlsguard has read
// the limit and a 64 KB margin, not the 20 MB the client sends (RFC 5321
// 7.8: a server may close to defend itself). What was read is the session
// line's bytes_in.
func TestHardeningOversizedMessageClosed(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_message_size: 4k\n"))
	const sent = 20 << 20
	// The limit, the margin, the commands, and what the kernel and the read
	// buffers hold when tlsguard stops reading.
	const maxIn = 4<<10 + 64<<10 + 32<<10
	block := strings.Repeat(strings.Repeat("x", 78)+"\r\n", 800)

	// flood writes n bytes of block, then end, without waiting for replies;
	// its writes fail once tlsguard has closed the connection.
	flood := func(c *smtpConn, head string, n int, end string) {
		go func() {
			c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			if _, err := io.WriteString(c.conn, head); err != nil {
				return
			}
			for ; n > 0; n -= len(block) {
				if _, err := io.WriteString(c.conn, block[:min(n, len(block))]); err != nil {
					return
				}
			}
			io.WriteString(c.conn, end)
		}()
	}
	bytesIn := func(src string) float64 {
		r := waitLogRecord(t, g, "session", func(r logRecord) bool { return fieldIs(r, "client_ip", src) })
		v, _ := r["bytes_in"].(float64)
		return v
	}

	c := dialSMTPFrom(t, "127.0.5.5", g.MX)
	c.ehlo("flood.example.net")
	c.openData(t, "flood@foreign.test", alice)
	flood(c, "Subject: flood\r\n\r\n", sent, ".\r\n")
	c.read().expectPrefix(t, "552 5.3.4 ")
	c.expectClosed()
	if in := bytesIn("127.0.5.5"); in > maxIn {
		t.Errorf("DATA: tlsguard read %.0f bytes of a %d-byte flood, want at most %d", in, sent, maxIn)
	}

	c = dialSMTPFrom(t, "127.0.5.6", g.MX)
	c.ehlo("flood.example.net")
	c.cmd("MAIL FROM:<flood@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	flood(c, fmt.Sprintf("BDAT %d LAST\r\n", sent), sent, "")
	c.read().expectPrefix(t, "552 5.3.4 ")
	c.expectClosed()
	if in := bytesIn("127.0.5.6"); in > maxIn {
		t.Errorf("BDAT: tlsguard read %.0f bytes of a %d-byte chunk, want at most %d", in, sent, maxIn)
	}

	goodClientDelivers(t, g, pf, "during floods over the size limit", 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
}

// Many sessions that stop mid-handshake: TCP connections to the implicit
// TLS port that send nothing or half a ClientHello, STARTTLS sessions that
// never start their handshake, and plain sessions that never say EHLO. They
// are closed after handshake_timeout / command_timeout, they never hold the
// accept loop, and a good client is served meanwhile.
func TestHardeningStalledHandshakes(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  handshake_timeout: 1s\n  command_timeout: 2s\n  max_sessions_per_ip: 100\n"))

	var stalled []net.Conn
	for i := 0; i < 40; i++ {
		src := fmt.Sprintf("127.0.6.%d", i%10+1)
		switch i % 4 {
		case 0: // implicit TLS, silent
			stalled = append(stalled, dialFrom(t, src, g.Submissions))
		case 1: // implicit TLS, half a ClientHello
			conn := dialFrom(t, src, g.Submissions)
			conn.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03})
			stalled = append(stalled, conn)
		case 2: // STARTTLS, then nothing
			c := dialSMTPFrom(t, src, g.Submission)
			c.send("EHLO stall.example.net\r\nSTARTTLS\r\n")
			stalled = append(stalled, c.conn)
		case 3: // greeted, never EHLO
			stalled = append(stalled, dialFrom(t, src, g.MX))
		}
	}
	start := time.Now()
	// A good client over implicit TLS, while all of them hang.
	c := dialImplicitTLSFrom(t, "127.0.0.1", g.Submissions, g.PKI.clientTLS())
	c.ehlo("good.example.net")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	tryTransaction(t, c, alice, carol, "Subject: during stalled handshakes\r\n\r\nbody\r\n").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, carol, 1)

	// Each stalled connection is closed by the server within a bound.
	for i, conn := range stalled {
		conn.SetReadDeadline(start.Add(15 * time.Second))
		buf := make([]byte, 4096)
		for {
			_, err := conn.Read(buf)
			if err == nil {
				continue
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("stalled connection %d (kind %d) still open 15s later", i, i%4)
			}
			break
		}
	}
	// A TLS client still works after the storm.
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", g.Submissions, g.PKI.clientTLS())
	if err != nil {
		t.Fatalf("TLS after the storm: %v", err)
	}
	tc.Close()
}
