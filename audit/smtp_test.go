package audit

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
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// selfSigned returns a throwaway certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fakeSMTP is a tiny SMTP server with STARTTLS. With injectable set it has
// the CVE-2011-0411 bug: plaintext buffered behind STARTTLS is executed
// inside the TLS session.
func fakeSMTP(t *testing.T, injectable bool) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveFakeSMTP(c, cfg, injectable)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func serveFakeSMTP(c net.Conn, cfg *tls.Config, injectable bool) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var out io.Writer = c
	br := bufio.NewReader(c)
	reply := func(s string) { io.WriteString(out, strings.ReplaceAll(s, "\n", "\r\n")+"\r\n") }
	reply("220 fake ESMTP")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(line)), " ")
		switch verb {
		case "EHLO":
			reply("250-fake\n250-STARTTLS\n250 PIPELINING")
		case "STARTTLS":
			reply("220 go ahead")
			left, _ := br.Peek(br.Buffered())
			tc := tls.Server(c, cfg)
			if tc.Handshake() != nil {
				return
			}
			out = tc
			if injectable {
				br = bufio.NewReader(io.MultiReader(bytes.NewReader(left), tc))
			} else {
				br = bufio.NewReader(tc)
			}
		case "NOOP", "RSET", "MAIL":
			reply("250 ok")
		case "RCPT":
			reply("550 5.7.1 relaying denied")
		case "AUTH":
			reply("530 5.7.0 Must issue a STARTTLS command first")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 5.5.2 unknown command")
		}
	}
}

func findingNamed(t *testing.T, r *Report, check string) Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Check == check {
			return f
		}
	}
	var b strings.Builder
	r.WriteText(&b)
	t.Fatalf("no finding %q:\n%s", check, b.String())
	return Finding{}
}

func TestAuditSTARTTLSInjection(t *testing.T) {
	for _, injectable := range []bool{false, true} {
		port := fakeSMTP(t, injectable)
		r, err := Run(context.Background(), Config{
			Host:     "127.0.0.1",
			Services: []Service{{Name: "smtp", Port: port, Kind: SMTP}},
			Timeout:  3 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		check := "smtp/" + itoa(port)
		f := findingNamed(t, r, check+" starttls injection")
		want := OK
		if injectable {
			want = Fail
		}
		if f.Grade != want {
			t.Errorf("injectable=%v: %s %q, want %s", injectable, f.Grade, f.Detail, want)
		}
		if g := findingNamed(t, r, check+" open relay").Grade; g != OK {
			t.Errorf("open relay: %s, want ok", g)
		}
		if g := findingNamed(t, r, check+" certificate").Grade; g != Fail {
			t.Errorf("self-signed certificate graded %s", g)
		}
	}
}

func TestAuditSilentPortTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := make(chan net.Conn, 16) // keeps accepted connections open
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held <- c // accept, never greet
		}
	}()
	defer func() {
		for len(held) > 0 {
			(<-held).Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	start := time.Now()
	r, err := Run(context.Background(), Config{
		Host: "127.0.0.1",
		Services: []Service{
			{Name: "smtp", Port: port, Kind: SMTP},
			{Name: "imap", Port: port, Kind: IMAP},
			{Name: "pop3s", Port: port, Kind: POP3S},
			{Name: "submission", Port: closedPort, Kind: SMTP},
		},
		Timeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 10*time.Second { // about 1.5 s: 5 handshakes in a row on pop3s
		t.Errorf("audit of silent ports took %s with a 300ms timeout", el)
	}
	for _, check := range []string{"smtp/" + itoa(port) + " smtp", "imap/" + itoa(port) + " imap"} {
		if f := findingNamed(t, r, check); f.Grade != Warning || !strings.Contains(f.Detail, "timeout") {
			t.Errorf("%s: %s %q, want a timeout warning", check, f.Grade, f.Detail)
		}
	}
	if f := findingNamed(t, r, "pop3s/"+itoa(port)+" tls"); f.Grade != Fail {
		t.Errorf("silent implicit-TLS port: %s %q", f.Grade, f.Detail)
	}
	if f := findingNamed(t, r, "submission/"+itoa(closedPort)+" port"); f.Grade != Info || !strings.Contains(f.Detail, "closed") {
		t.Errorf("closed port: %s %q", f.Grade, f.Detail)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
