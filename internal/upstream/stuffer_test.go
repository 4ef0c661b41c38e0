package upstream

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// stuffWire is what the backend gets from Tx.Data for a CRLF-only message
// written in the given pieces: the stuffer's output, then its end (the held
// CRLF and the dot), as Data sends them in one write.
func stuffWire(t testing.TB, pieces ...[]byte) []byte {
	t.Helper()
	var wire bytes.Buffer
	bw := bufio.NewWriterSize(&wire, 64)
	st := &stuffer{w: bw}
	for _, p := range pieces {
		if n, err := st.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if err := st.end(); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	return wire.Bytes()
}

// dotWire is the reference: the whole message through a DotWriter, as
// go-smtp's client sends it.
func dotWire(msg []byte) []byte {
	var wire bytes.Buffer
	dw := textproto.NewWriter(bufio.NewWriter(&wire)).DotWriter()
	dw.Write(msg)
	dw.Close()
	return wire.Bytes()
}

var stufferCases = []string{
	"", "a", "\r\n", ".", ".\r\n", "..\r\n", "\r\n.\r\n", "a\r\n.b\r\n..c\r\n.\r\n",
	"Received: x\r\n\r\n.\r\n.", "x\r\n\r\n", "x\r\n.", ". .\r\n.\r\n\r\n.",
}

// The stuffer and the held CRLF give exactly the bytes go-smtp's DotWriter
// gives, split at every point, and byte by byte.
func TestStuffer(t *testing.T) {
	for _, c := range stufferCases {
		msg := []byte(c)
		want := dotWire(msg)
		if got := stuffWire(t, msg); !bytes.Equal(got, want) {
			t.Errorf("%q: got %q, want %q", c, got, want)
		}
		for i := 0; i <= len(msg); i++ {
			if got := stuffWire(t, msg[:i], msg[i:]); !bytes.Equal(got, want) {
				t.Errorf("%q split at %d: got %q, want %q", c, i, got, want)
			}
		}
		var bytewise [][]byte
		for i := range msg {
			bytewise = append(bytewise, msg[i:i+1])
		}
		if got := stuffWire(t, bytewise...); !bytes.Equal(got, want) {
			t.Errorf("%q byte by byte: got %q, want %q", c, got, want)
		}
	}
}

// Random CRLF-only messages of lines that often start with dots, in random
// pieces.
func TestStufferRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var b []byte
		for range rng.IntN(12) {
			b = append(b, strings.Repeat(".", rng.IntN(3))...)
			b = append(b, "ab\r"[:rng.IntN(3)]...)
			if rng.IntN(4) > 0 {
				b = append(b, crlf...)
			}
		}
		b = bytes.ReplaceAll(b, []byte("\r\r"), []byte("\r")) // CRLF-only, as
		b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) // the normalizer
		b = bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))   // guarantees
		b = bytes.ReplaceAll(b, []byte("\n"), crlf)
		var pieces [][]byte
		for p := b; len(p) > 0; {
			k := min(len(p), 1+rng.IntN(5))
			pieces, p = append(pieces, p[:k]), p[k:]
		}
		if got, want := stuffWire(t, pieces...), dotWire(b); !bytes.Equal(got, want) {
			t.Fatalf("%q in %q: got %q, want %q", b, pieces, got, want)
		}
	}
}

// A backend that sends plaintext behind its "220" to STARTTLS is refused
// before the handshake (STARTTLS command injection).
func TestBackendStartTLSInjection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		io.WriteString(c, "220 backend ESMTP\r\n")
		r.ReadString('\n')
		io.WriteString(c, "250-backend\r\n250 STARTTLS\r\n")
		r.ReadString('\n')
		io.WriteString(c, "220 go ahead\r\n250 injected\r\n")
		r.ReadString('\n')
	}()
	b := New(Config{Address: ln.Addr().String(), Hostname: "mx.test", TLS: TLSStartTLS, Timeout: 3 * time.Second}, nil, nil)
	_, err = b.dial(t.Context())
	if err == nil || !strings.Contains(err.Error(), "plaintext after the 220") {
		t.Fatalf("dial: %v, want the injection refused", err)
	}
}

// benchMessage is a message of about size bytes in 78-character lines, some
// starting with a dot.
func benchMessage(size int) []byte {
	var b []byte
	b = append(b, "From: a@example.org\r\nTo: b@example.org\r\nSubject: bench\r\n\r\n"...)
	for i := 0; len(b) < size; i++ {
		if i%50 == 0 {
			b = append(b, ".a line that starts with a dot\r\n"...)
		}
		b = append(b, "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrst\r\n"...)
	}
	return b
}

// BenchmarkForward is Data's body path: the client's message (as go-smtp
// hands it over) through the normalizer and the stuffer into the pooled
// buffered writer; the backend is io.Discard. BenchmarkForwardDotWriter is
// the path it replaced: the normalizer into a textproto DotWriter (go-smtp's
// client DATA writer) with io.Copy.
func BenchmarkForward(b *testing.B) {
	for _, sz := range []struct {
		name string
		n    int
	}{{"5KB", 5000}, {"25MB", 25_000_000}} {
		msg := benchMessage(sz.n)
		b.Run(sz.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				bufs := dataBufPool.Get().(*dataBufs)
				bufs.bw.Reset(io.Discard)
				st := &stuffer{w: bufs.bw}
				nw := &normalizer{w: st}
				if _, err := io.CopyBuffer(nw, onlyReader{bytes.NewReader(msg)}, bufs.copy); err != nil {
					b.Fatal(err)
				}
				nw.flush()
				bufs.bw.Flush()
				bufs.bw.Reset(nil)
				dataBufPool.Put(bufs)
			}
		})
	}
}

func BenchmarkForwardDotWriter(b *testing.B) {
	for _, sz := range []struct {
		name string
		n    int
	}{{"5KB", 5000}, {"25MB", 25_000_000}} {
		msg := benchMessage(sz.n)
		b.Run(sz.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				dw := textproto.NewWriter(bufio.NewWriter(io.Discard)).DotWriter()
				nw := &normalizer{w: dw}
				if _, err := io.Copy(nw, onlyReader{bytes.NewReader(msg)}); err != nil {
					b.Fatal(err)
				}
				nw.flush()
				dw.Close()
			}
		})
	}
}

// onlyReader hides bytes.Reader's WriterTo, as go-smtp's data reader has none.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
