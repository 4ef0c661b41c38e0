package proxy_test

import (
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

// BenchmarkMessagePlainUnauth: one plaintext session, one unauthenticated
// 5 KB message to a local mailbox per iteration (the DATA path alone).
func BenchmarkMessagePlainUnauth(b *testing.B) {
	be := newFakeBackend(b, func(fb *fakeBackend) { fb.discard = true })
	e := newEnv(b, be, func(c *proxyConfig) { c.Logger = zap.NewNop() })
	var sb strings.Builder
	sb.WriteString("From: carol@foreign.test\r\nTo: bob@example.org\r\nSubject: benchmark\r\n\r\n")
	for sb.Len() < 5<<10 {
		sb.WriteString("The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n")
	}
	msg := sb.String()
	c, err := smtp.Dial(e.addr[lMX])
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.SendMail("carol@foreign.test", []string{"bob@example.org"}, strings.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}
