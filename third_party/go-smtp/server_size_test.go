package smtp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countingListener counts the bytes the server reads from its connections.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

const sizeTestLimit = 1000

// sizeServer starts a server with MaxMessageBytes = sizeTestLimit and
// returns a connection to it that is ready for DATA or BDAT (after EHLO,
// MAIL and RCPT unless noRcpt), and the count of bytes the server read.
func sizeServer(t *testing.T, noRcpt bool) (net.Conn, *bufio.Reader, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l}
	s := NewServer(startTLSBackend{})
	s.Domain = "localhost"
	s.MaxMessageBytes = sizeTestLimit
	go s.Serve(cl)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	readReply(t, r)
	io.WriteString(c, "EHLO localhost\r\nMAIL FROM:<a@example.org>\r\n")
	readReply(t, r)
	readReply(t, r)
	if !noRcpt {
		io.WriteString(c, "RCPT TO:<b@example.org>\r\n")
		readReply(t, r)
	}
	return c, r, &cl.n
}

// sendInBackground writes s to c without waiting for replies; the server
// may close the connection before it is all written.
func sendInBackground(c net.Conn, s string) {
	go func() {
		for len(s) > 0 {
			n := len(s)
			if n > 64<<10 {
				n = 64 << 10
			}
			if _, err := io.WriteString(c, s[:n]); err != nil {
				return
			}
			s = s[n:]
		}
	}()
}

// expectClosed reads what is left; the server must have closed the
// connection (EOF, or a reset since it left data unread).
func expectClosed(t *testing.T, r *bufio.Reader) {
	t.Helper()
	rest, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the 552: %v, want the connection closed", err)
	}
	if len(rest) != 0 {
		t.Errorf("after the 552 the server sent %q", rest)
	}
}

func expectReadAtMost(t *testing.T, n *atomic.Int64) {
	t.Helper()
	// The limit, the margin, the commands and one read buffer.
	max := int64(sizeTestLimit + dataDiscardMargin + 4096)
	if got := n.Load(); got > max {
		t.Errorf("the server read %d bytes, want at most %d", got, max)
	}
}

var sizeTestLine = strings.Repeat("x", 78) + "\r\n"

// A message far over the limit: 552 5.3.4, the connection is closed, and
// the server stopped reading shortly after the limit plus the margin.
func TestServerDataFarTooLargeCloses(t *testing.T) {
	c, r, n := sizeServer(t, false)
	io.WriteString(c, "DATA\r\n")
	readReply(t, r)
	sendInBackground(c, strings.Repeat(sizeTestLine, 4<<20/len(sizeTestLine))+".\r\n")
	if l := readReply(t, r); !strings.HasPrefix(l, "552 5.3.4 ") {
		t.Fatalf("4 MB message: got %q, want 552 5.3.4", l)
	}
	expectClosed(t, r)
	expectReadAtMost(t, n)
}

// A message over the limit by less than the margin is read to its end: 552
// 5.3.4 in step, and the session goes on.
func TestServerDataSlightlyTooLarge(t *testing.T) {
	c, r, _ := sizeServer(t, false)
	io.WriteString(c, "DATA\r\n")
	readReply(t, r)
	io.WriteString(c, strings.Repeat(sizeTestLine, 2*sizeTestLimit/len(sizeTestLine))+".\r\nNOOP\r\n")
	if l := readReply(t, r); !strings.HasPrefix(l, "552 5.3.4 ") {
		t.Fatalf("2 KB message: got %q, want 552 5.3.4", l)
	}
	if l := readReply(t, r); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("NOOP after a refused message: got %q, want 250", l)
	}
}

// A BDAT chunk far over the limit: 552 5.3.4 and the connection is closed
// without reading the chunk; one over the limit by less than the margin
// is read and dropped, and the session goes on.
func TestServerBdatFarTooLargeCloses(t *testing.T) {
	c, r, n := sizeServer(t, false)
	size := 4 << 20
	sendInBackground(c, fmt.Sprintf("BDAT %d LAST\r\n", size)+strings.Repeat("x", size))
	if l := readReply(t, r); !strings.HasPrefix(l, "552 5.3.4 ") {
		t.Fatalf("BDAT of 4 MB: got %q, want 552 5.3.4", l)
	}
	expectClosed(t, r)
	expectReadAtMost(t, n)

	c, r, _ = sizeServer(t, false)
	io.WriteString(c, fmt.Sprintf("BDAT %d LAST\r\n%s", 2*sizeTestLimit, strings.Repeat("x", 2*sizeTestLimit)))
	if l := readReply(t, r); !strings.HasPrefix(l, "552 5.3.4 ") {
		t.Fatalf("BDAT of 2 KB: got %q, want 552 5.3.4", l)
	}
	io.WriteString(c, "NOOP\r\n")
	if l := readReply(t, r); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("NOOP after a refused chunk: got %q, want 250", l)
	}
}

// A BDAT chunk without a recipient is refused and, when it is far over the
// limit, not read either: the connection is closed.
func TestServerBdatNoRcptFarTooLargeCloses(t *testing.T) {
	c, r, n := sizeServer(t, true)
	size := 4 << 20
	sendInBackground(c, fmt.Sprintf("BDAT %d LAST\r\n", size)+strings.Repeat("x", size))
	if l := readReply(t, r); !strings.HasPrefix(l, "502 ") {
		t.Fatalf("BDAT without RCPT: got %q, want 502", l)
	}
	expectClosed(t, r)
	expectReadAtMost(t, n)
}
