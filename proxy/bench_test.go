package proxy_test

import (
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

// BenchmarkSessionSTARTTLS is one whole client session per iteration:
// connect to the STARTTLS listener, EHLO, STARTTLS, EHLO, AUTH PLAIN, one
// 5 KB message relayed to the in-process fake backend, QUIT. Client, proxy
// and fake backend run in this process, so allocations and CPU include all
// three: compare runs with each other, not with nginx.
func BenchmarkSessionSTARTTLS(b *testing.B) {
	be := newFakeBackend(b, func(fb *fakeBackend) { fb.discard = true })
	e := newEnv(b, be, func(c *proxyConfig) { c.Logger = zap.NewNop() })
	addr := e.addr[lSubmission]
	tlsCfg := clientTLSConfig(b)
	var sb strings.Builder
	sb.WriteString("From: alice@example.org\r\nTo: r@foreign.test\r\nSubject: benchmark\r\n\r\n")
	for sb.Len() < 5<<10 {
		sb.WriteString("The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n")
	}
	msg := sb.String()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, err := smtp.DialStartTLS(addr, tlsCfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Auth(sasl.NewPlainClient("", testUser, testPass)); err != nil {
			b.Fatal(err)
		}
		if err := c.SendMail(testUser, []string{"r@foreign.test"}, strings.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.StopTimer()
	if n := be.delivered.Load(); n < int64(b.N) {
		b.Fatalf("backend got %d of %d messages", n, b.N)
	}
}
