package auth

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// scripted serves one connection: greeting, then for each line read, the
// reply of the first rule whose prefix it has ("" ends the rules). It
// records the lines it read.
func scripted(t *testing.T, greeting string, rules [][2]string) (addr string, got chan []string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got = make(chan []string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(greeting + "\r\n"))
		r := bufio.NewReader(c)
		var lines []string
		defer func() { got <- lines }()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			lines = append(lines, line)
			for _, rule := range rules {
				if strings.HasPrefix(line, rule[0]) {
					if rule[1] != "" {
						c.Write([]byte(rule[1] + "\r\n"))
					}
					break
				}
			}
		}
	}()
	return l.Addr().String(), got
}

// Without AUTH=PLAIN, IMAP logs in with LOGIN and literals; with SASL-IR,
// PLAIN goes on the command line; LOGINDISABLED is no login at all.
func TestIMAPLoginVariants(t *testing.T) {
	ctx := context.Background()
	addr, got := scripted(t, "* OK legacy", [][2]string{
		{"a2 CAPABILITY", "* CAPABILITY IMAP4rev1\r\na2 OK done"},
		{"a3 LOGIN {5}", "+ go"},
		{`alice {4}`, "+ go"},
		{"pw\"x", "a3 OK logged in"},
		{"a9 LOGOUT", "* BYE\r\na9 OK"},
	})
	imap := NewIMAP(MailboxConfig{Address: addr, TLS: "none"})
	if _, err := imap.Authenticate(ctx, "alice", `pw"x`); err != nil {
		t.Fatalf("LOGIN: %v\n%q", err, <-got)
	}
	addr, got = scripted(t, "* OK", [][2]string{
		{"a2 CAPABILITY", "* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN\r\na2 OK"},
		{"a3 AUTHENTICATE PLAIN AGFsaWNlAHdyb25n", "a3 NO [AUTHENTICATIONFAILED] Authentication failed."},
	})
	imap = NewIMAP(MailboxConfig{Address: addr, TLS: "none"})
	if _, err := imap.Authenticate(ctx, "alice", "wrong"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("SASL-IR, wrong password: %v\n%q", err, <-got)
	}
	addr, _ = scripted(t, "* OK", [][2]string{
		{"a2 CAPABILITY", "* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN\r\na2 OK"},
		{"a3 AUTHENTICATE", "a3 NO [UNAVAILABLE] Temporary authentication failure."},
	})
	if _, err := NewIMAP(MailboxConfig{Address: addr, TLS: "none"}).Authenticate(ctx, "alice", "x"); !Temporary(err) {
		t.Fatalf("NO [UNAVAILABLE]: %v, want temporary", err)
	}
	addr, _ = scripted(t, "* OK", [][2]string{{"a2 CAPABILITY", "* CAPABILITY IMAP4rev1 LOGINDISABLED\r\na2 OK"}})
	if _, err := NewIMAP(MailboxConfig{Address: addr, TLS: "none"}).Authenticate(ctx, "alice", "x"); !Temporary(err) {
		t.Fatalf("LOGINDISABLED: %v, want temporary", err)
	}
}

// Without SASL PLAIN in CAPA (or without CAPA), POP3 uses USER/PASS;
// -ERR [SYS/TEMP] is temporary, another -ERR a wrong password.
func TestPOP3LoginVariants(t *testing.T) {
	ctx := context.Background()
	addr, got := scripted(t, "+OK legacy", [][2]string{
		{"CAPA", "-ERR unknown command"},
		{"USER alice", "+OK"},
		{"PASS pw", "+OK logged in"},
		{"QUIT", "+OK"},
	})
	if _, err := NewPOP3(MailboxConfig{Address: addr, TLS: "none"}).Authenticate(ctx, "alice", "pw"); err != nil {
		t.Fatalf("USER/PASS: %v\n%q", err, <-got)
	}
	addr, _ = scripted(t, "+OK", [][2]string{
		{"CAPA", "+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n."},
		{"AUTH PLAIN", "-ERR [AUTH] Authentication failed."},
	})
	if _, err := NewPOP3(MailboxConfig{Address: addr, TLS: "none"}).Authenticate(ctx, "alice", "x"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("AUTH PLAIN -ERR [AUTH]: %v", err)
	}
	addr, _ = scripted(t, "+OK", [][2]string{
		{"CAPA", "+OK\r\nSASL PLAIN\r\n."},
		{"AUTH PLAIN", "-ERR [SYS/TEMP] Temporary authentication failure."},
	})
	if _, err := NewPOP3(MailboxConfig{Address: addr, TLS: "none"}).Authenticate(ctx, "alice", "x"); !Temporary(err) {
		t.Fatalf("-ERR [SYS/TEMP]: %v, want temporary", err)
	}
}
