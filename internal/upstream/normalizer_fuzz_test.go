package upstream

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"strings"
	"testing"
)

// referenceNormalize is the contract in its simplest form: every CRLF, bare
// CR and bare LF becomes one CRLF; input stops at the first NUL (ErrNUL).
func referenceNormalize(in []byte) ([]byte, error) {
	var err error
	if i := bytes.IndexByte(in, 0); i >= 0 {
		in, err = in[:i], ErrNUL
	}
	s := strings.ReplaceAll(string(in), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return []byte(strings.ReplaceAll(s, "\n", "\r\n")), err
}

// referenceReject is the error reject mode must give: the first NUL, bare
// CR or bare LF, in input order (a trailing CR is bare).
func referenceReject(in []byte) error {
	for i := 0; i < len(in); i++ {
		switch in[i] {
		case 0:
			return ErrNUL
		case '\n':
			return ErrBareLineEnding
		case '\r':
			if i+1 < len(in) && in[i+1] == '\n' {
				i++
				continue
			}
			return ErrBareLineEnding
		}
	}
	return nil
}

// FuzzNormalizer checks the DATA normalizer (the SMTP smuggling defence)
// for any message bytes, split into writes at any points:
//   - output equals the reference normalisation, whatever the splits;
//     reject mode fails exactly when the input has a bare CR or LF, with
//     the right error; NUL always fails with 554 5.6.0;
//   - normalised output has no bare CR, bare LF or NUL;
//   - after dot-stuffing (as the backend client does) the stream has no
//     end-of-data look-alike a naive backend could end the message at
//     before the real one, and reads back as exactly the message.
func FuzzNormalizer(f *testing.F) {
	for _, s := range []string{
		"", "abc", "a\r\nb\r\n", "a\nb", "a\rb", "x\n.\ny", "x\r.\ry", "x\n.\r\ny", "x\r\n.\ny",
		"x\r.\r\ny", "x\r\n.\r", "end\r", "a\x00b", "\r\n.\r\nMAIL FROM:<a@b>\r\n", "..\r\n.\r\n",
		"\r\r\n.\r\r\n", "\n\n.\n\n", "\r\n\x00.\r\n",
	} {
		f.Add([]byte(s), []byte{1, 3}, false)
		f.Add([]byte(s), []byte{2}, true)
	}
	f.Fuzz(func(t *testing.T, in []byte, splits []byte, reject bool) {
		var out bytes.Buffer
		n := &normalizer{w: &out, reject: reject}
		var err error
		rest := in
		for i := 0; len(rest) > 0 && err == nil; i++ {
			k := len(rest)
			if i < len(splits) && int(splits[i]) < k {
				k = int(splits[i])
			}
			var m int
			m, err = n.Write(rest[:k])
			if m > k || (err == nil && m != k) {
				t.Fatalf("Write(%q) = %d, %v", rest[:k], m, err)
			}
			rest = rest[k:]
		}
		if err == nil {
			err = n.flush()
		}
		got := out.Bytes()

		if reject {
			if want := referenceReject(in); err != want {
				t.Fatalf("reject mode, %q: error %v, want %v (output %q)", in, err, want, got)
			}
		} else {
			want, wantErr := referenceNormalize(in)
			if err != wantErr {
				t.Fatalf("%q: error %v, want %v", in, err, wantErr)
			}
			if err == nil && !bytes.Equal(got, want) {
				t.Fatalf("%q split at %v: got %q, want %q", in, splits, got, want)
			}
			if err != nil && !bytes.HasPrefix(want, got[:max(0, len(got)-2)]) {
				t.Fatalf("%q: output before the NUL %q is not a prefix of %q", in, got, want)
			}
		}
		if err != nil {
			return // the reference checks above fixed which error
		}
		if bytes.IndexByte(got, 0) >= 0 || bytes.Count(got, []byte("\r")) != bytes.Count(got, []byte("\r\n")) ||
			bytes.Count(got, []byte("\n")) != bytes.Count(got, []byte("\r\n")) {
			t.Fatalf("%q normalised to %q: bare CR, LF or NUL left", in, got)
		}

		// What the backend gets: dot-stuffed and terminated.
		var wire bytes.Buffer
		dw := textproto.NewWriter(bufio.NewWriter(&wire)).DotWriter()
		dw.Write(got)
		dw.Close()
		stream := wire.Bytes()
		end := len(stream) - 3 // the final ".\r\n"
		for _, look := range []string{"\n.\n", "\n.\r\n", "\r.\r", "\r.\n", "\n.\r"} {
			if i := bytes.Index(stream, []byte(look)); i >= 0 && i+1 < end {
				t.Fatalf("%q: the backend stream %q has %q at %d, before the end at %d", in, stream, look, i, end)
			}
		}
		back, rerr := io.ReadAll(textproto.NewReader(bufio.NewReader(bytes.NewReader(stream))).DotReader())
		if rerr != nil {
			t.Fatalf("reading back %q: %v", stream, rerr)
		}
		// DotReader turns CRLF into LF.
		if want := bytes.ReplaceAll(got, []byte("\r\n"), []byte("\n")); len(got) > 0 && !bytes.Equal(back, want) && !bytes.Equal(back, append(want, '\n')) {
			t.Fatalf("%q: read back %q, want %q", in, back, want)
		}
	})
}
