package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// runNormalizer feeds in to a normalizer in the given pieces and returns
// what it wrote and the first error.
func runNormalizer(reject bool, pieces ...string) (string, error) {
	var out bytes.Buffer
	n := &normalizer{w: &out, reject: reject}
	for _, p := range pieces {
		m, err := n.Write([]byte(p))
		if err != nil {
			return out.String(), err
		}
		if m != len(p) {
			return out.String(), fmt.Errorf("short write: %d of %d without error", m, len(p))
		}
	}
	err := n.flush()
	return out.String(), err
}

var normalizeCases = []struct {
	in, want string
	err      error // in normalize mode
}{
	{"", "", nil},
	{"abc", "abc", nil},
	{"a\r\nb\r\n", "a\r\nb\r\n", nil},
	{"a\nb", "a\r\nb", nil},
	{"a\rb", "a\r\nb", nil},
	{"\n", "\r\n", nil},
	{"\r", "\r\n", nil},
	{"\r\r", "\r\n\r\n", nil},
	{"\n\n", "\r\n\r\n", nil},
	{"\n\r", "\r\n\r\n", nil},
	{"a\r\r\nb", "a\r\n\r\nb", nil},
	{"a\n\r\nb", "a\r\n\r\nb", nil},
	{"x\n.\ny", "x\r\n.\r\ny", nil},
	{"x\r.\ry", "x\r\n.\r\ny", nil},
	{"x\n.\r\ny", "x\r\n.\r\ny", nil},
	{"x\r\n.\ny", "x\r\n.\r\ny", nil},
	{"x\r.\r\ny", "x\r\n.\r\ny", nil},
	{"x\r\n.\r", "x\r\n.\r\n", nil},
	{"end\r", "end\r\n", nil},
	{"a\x00b", "a", ErrNUL},
	{"\x00", "", ErrNUL},
	{"a\r\x00", "a\r\n", ErrNUL},
}

// Every case, split at every byte boundary, and byte by byte, gives the
// same output: the normalizer keeps its state across writes.
func TestNormalizer(t *testing.T) {
	for _, tc := range normalizeCases {
		check := func(how string, pieces ...string) {
			t.Helper()
			got, err := runNormalizer(false, pieces...)
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Errorf("%q %s: err %v, want %v", tc.in, how, err, tc.err)
				return
			}
			if tc.err == nil && got != tc.want {
				t.Errorf("%q %s: got %q, want %q", tc.in, how, got, tc.want)
			}
			if tc.err != nil && !strings.HasPrefix(tc.want, got) && got != tc.want {
				t.Errorf("%q %s: wrote %q before failing, want at most %q", tc.in, how, got, tc.want)
			}
		}
		check("whole", tc.in)
		for i := 0; i <= len(tc.in); i++ {
			check(fmt.Sprintf("split at %d", i), tc.in[:i], tc.in[i:])
		}
		var bytewise []string
		for i := 0; i < len(tc.in); i++ {
			bytewise = append(bytewise, tc.in[i:i+1])
		}
		check("byte by byte", bytewise...)
	}
}

// Output never contains a bare CR or LF, for all short inputs over the
// interesting alphabet.
func TestNormalizerExhaustive(t *testing.T) {
	alphabet := []byte{'a', '.', '\r', '\n'}
	var gen func(prefix []byte, depth int)
	gen = func(prefix []byte, depth int) {
		in := string(prefix)
		for i := 0; i <= len(in); i++ {
			got, err := runNormalizer(false, in[:i], in[i:])
			if err != nil {
				t.Fatalf("%q: %v", in, err)
			}
			if !crlfOnly(got) {
				t.Fatalf("%q split at %d: bare CR/LF in %q", in, i, got)
			}
			if strings.ReplaceAll(strings.ReplaceAll(got, "\r", ""), "\n", "") != strings.ReplaceAll(strings.ReplaceAll(in, "\r", ""), "\n", "") {
				t.Fatalf("%q: text changed: %q", in, got)
			}
		}
		if depth == 0 {
			return
		}
		for _, c := range alphabet {
			gen(append(prefix, c), depth-1)
		}
	}
	gen(nil, 6)
}

func crlfOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\r':
			if i+1 >= len(s) || s[i+1] != '\n' {
				return false
			}
			i++
		case '\n':
			return false
		}
	}
	return true
}

func TestNormalizerRejectMode(t *testing.T) {
	ok := []string{"", "abc", "a\r\nb\r\n", "\r\n\r\n"}
	bad := []string{"a\nb", "a\rb", "\r", "a\r\r\n", "x\r\n.\ny", "end\r"}
	for _, in := range ok {
		for i := 0; i <= len(in); i++ {
			if got, err := runNormalizer(true, in[:i], in[i:]); err != nil || got != in {
				t.Errorf("reject mode %q split %d: %q %v", in, i, got, err)
			}
		}
	}
	for _, in := range bad {
		for i := 0; i <= len(in); i++ {
			_, err := runNormalizer(true, in[:i], in[i:])
			if err != ErrBareLineEnding {
				t.Errorf("reject mode %q split %d: err %v, want ErrBareLineEnding", in, i, err)
			}
		}
	}
	if _, err := runNormalizer(true, "a\x00"); err != ErrNUL {
		t.Errorf("NUL in reject mode: %v", err)
	}
	// The errors are bare *smtp.SMTPError values with the contract's codes.
	if ErrBareLineEnding.Code != 550 || ErrBareLineEnding.EnhancedCode != (smtp.EnhancedCode{5, 5, 2}) {
		t.Errorf("ErrBareLineEnding = %v", ErrBareLineEnding)
	}
	if ErrNUL.Code/100 != 5 {
		t.Errorf("ErrNUL = %v", ErrNUL)
	}
}

func BenchmarkNormalizer(b *testing.B) {
	var msg []byte
	for len(msg) < 5<<10 {
		msg = append(msg, "Lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n"...)
		msg = append(msg, "bare lf line\nbare cr line\r"...)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		n := &normalizer{w: io.Discard}
		// In 4 KB pieces, as io.Copy hands them over.
		for p := msg; len(p) > 0; {
			k := min(len(p), 4096)
			if _, err := n.Write(p[:k]); err != nil {
				b.Fatal(err)
			}
			p = p[k:]
		}
		n.flush()
	}
}
