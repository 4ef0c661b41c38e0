package mailbox

import (
	"bufio"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// pipeSession is a session over net.Pipe, inside TLS or not, with the
// client's side returned.
func pipeSession(t *testing.T, inTLS bool) (*session, net.Conn) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	s := NewServer(Config{CommandTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	ss := newSession(s, Conn{Conn: server, Protocol: IMAP})
	if inTLS {
		ss.tls = "1.3"
	}
	return ss, client
}

func TestReadIMAP(t *testing.T) {
	for _, tc := range []struct {
		name, in  string
		inTLS     bool
		tag, cmd  string
		args      []string
		err       error
		continues int // "+" continuations the client must see
	}{
		{name: "atoms", in: "a1 login alice secret\r\n", tag: "a1", cmd: "LOGIN", args: []string{"alice", "secret"}},
		{name: "quoted", in: `a2 LOGIN "al ice" "se\"c\\ret"` + "\r\n", tag: "a2", cmd: "LOGIN", args: []string{"al ice", `se"c\ret`}},
		{name: "sync literal in TLS", in: "a3 LOGIN {5}\r\nalice {3}\r\npw!\r\n", inTLS: true, tag: "a3", cmd: "LOGIN", args: []string{"alice", "pw!"}, continues: 2},
		{name: "non-sync literal", in: "a4 LOGIN alice {3+}\r\npw!\r\n", tag: "a4", cmd: "LOGIN", args: []string{"alice", "pw!"}},
		{name: "sync literal before TLS", in: "a5 LOGIN {5}\r\n", tag: "a5", cmd: "LOGIN", err: errSyncLiteral},
		{name: "literal too large", in: "a6 LOGIN {5000+}\r\n", inTLS: true, err: errLiteralTooLarge},
		{name: "ID list", in: `i1 ID ("name" "Thunderbird" "version" "115.0" "os" "Linux" "vendor" "Mozilla" "support-url" "x" "a" "b")` + "\r\n", tag: "i1", cmd: "ID",
			args: []string{"(\"name\"", "Thunderbird", "version", "115.0", "os", "Linux", "vendor", "Mozilla", "support-url", "x", "a", "b", ")"}},
		{name: "bad tag", in: "a*b NOOP\r\n", err: errSyntax},
		{name: "http", in: "GET / HTTP/1.1\r\n", err: errSyntax},
		{name: "http with a word", in: "GET index HTTP/1.1\r\n", err: errSyntax},
		{name: "unterminated quote", in: "a7 LOGIN \"alice\r\n", err: errSyntax},
		{name: "too long", in: "a8 LOGIN " + strings.Repeat("x", maxLine) + "\r\n", err: errLineTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss, client := pipeSession(t, tc.inTLS)
			go func() {
				client.Write([]byte(tc.in))
			}()
			seen := make(chan int)
			go func() {
				n := 0
				r := bufio.NewReader(client)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						seen <- n
						return
					}
					if strings.HasPrefix(l, "+") {
						n++
					}
				}
			}()
			tag, cmd, args, err := ss.readIMAP()
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if tc.err == nil && (tag != tc.tag || cmd != tc.cmd || !reflect.DeepEqual(args, tc.args)) {
				t.Errorf("got %q %q %q, want %q %q %q", tag, cmd, args, tc.tag, tc.cmd, tc.args)
			}
			ss.conn.Close()
			if n := <-seen; n != tc.continues {
				t.Errorf("%d continuation requests, want %d", n, tc.continues)
			}
		})
	}
}

func TestFilterCaps(t *testing.T) {
	for in, want := range map[string]string{
		"OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED] Logged in": "OK [CAPABILITY IMAP4rev1 SASL-IR] Logged in",
		"* CAPABILITY IMAP4rev1 STARTTLS IDLE":                               "* CAPABILITY IMAP4rev1 IDLE",
		"OK Logged in":                                                       "OK Logged in",
		"* 3 EXISTS":                                                         "* 3 EXISTS",
	} {
		if got := filterCaps(in); got != want {
			t.Errorf("filterCaps(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecodePlain(t *testing.T) {
	if id, u, p, ok := decodePlain("AGFsaWNlAHNlY3JldA=="); !ok || id != "" || u != "alice" || p != "secret" {
		t.Errorf("got %q %q %q %v", id, u, p, ok)
	}
	for _, bad := range []string{"=", "!!", "YWxpY2U=", "AGFsaWNlAA=="} {
		if _, _, _, ok := decodePlain(bad); ok {
			t.Errorf("decodePlain(%q) accepted", bad)
		}
	}
}

// copyIdle copies what the reader holds, then everything the connection
// brings, waiting in between, and ends cleanly at EOF; over TCP (waiting
// for the socket without a buffer) and over a pipe (one byte, then the
// rest).
func TestCopyIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		c.Write([]byte(strings.Repeat("x", 100000)))
		time.Sleep(50 * time.Millisecond)
		c.Write([]byte("y"))
		c.Close()
	}()
	tcp, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	go func() {
		b.Write([]byte(strings.Repeat("x", 1000)))
		b.Close()
	}()
	for name, conn := range map[string]net.Conn{"tcp": tcp, "pipe": a} {
		var sb strings.Builder
		pending := bufio.NewReader(strings.NewReader("held"))
		pending.Peek(4)
		n, err := copyIdle(&sb, pending, conn, time.Second)
		want := map[string]int{"tcp": 100005, "pipe": 1004}[name]
		if err != nil || n != int64(want) || sb.Len() != want || !strings.HasPrefix(sb.String(), "heldx") {
			t.Errorf("%s: copied %d (%d), err %v", name, n, sb.Len(), err)
		}
	}
}
