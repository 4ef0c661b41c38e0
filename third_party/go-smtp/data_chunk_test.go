package smtp

import (
	"bufio"
	"bytes"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"
)

// refData is dataReader's contract byte by byte: a line starts only after CRLF; a "." starting a line is removed; a line that
// is "." then CRLF ends the data. It returns the message, what follows the
// end (nil if no end was found) and whether the end was found.
func refData(in []byte) (msg, rest []byte, end bool) {
	bol := true
	for i := 0; i < len(in); i++ {
		c := in[i]
		if bol && c == '.' {
			if i+2 < len(in)+0 && in[i+1] == '\r' && in[i+2] == '\n' {
				return msg, in[i+3:], true
			}
			bol = false
			continue
		}
		bol = false
		msg = append(msg, c)
		if c == '\n' && len(msg) >= 2 && msg[len(msg)-2] == '\r' {
			bol = true
		}
	}
	return msg, nil, false
}

func readAllData(t *testing.T, in []byte, src func(io.Reader) io.Reader, bufSize, chunk int) ([]byte, []byte, error) {
	br := bufio.NewReaderSize(src(bytes.NewReader(in)), bufSize)
	dr := &dataReader{r: br}
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := dr.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if err == io.EOF {
				rest, _ := io.ReadAll(br)
				return out, rest, nil
			}
			return out, nil, err
		}
	}
}

func TestDataReaderChunked(t *testing.T) {
	cases := []string{
		"", ".\r\n", "a\r\n.\r\n", "..\r\n.\r\n", ".a\r\n.\r\nMAIL", "a\r\n.\rX\r\n.\r\n", "a\r\n.\r\r\n.\r\n",
		"a\r\r\n.\r\nrest", "a\n.\r\n.\r\n", "a\r\n.\n.\r\n", "\r\r\r\n..\r\n.\r\n", ".\r", "a\r\n.\r",
		"x\r\n.\r\r\n", "\r\n.\r\n",
	}
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte("..\r\r\n\nab")
	for i := 0; i < 3000; i++ {
		b := make([]byte, rng.Intn(40))
		for j := range b {
			b[j] = alphabet[rng.Intn(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	srcs := map[string]func(io.Reader) io.Reader{
		"whole": func(r io.Reader) io.Reader { return r },
		"1byte": iotest.OneByteReader,
		"half":  iotest.HalfReader,
	}
	for _, c := range cases {
		wantMsg, wantRest, end := refData([]byte(c))
		for name, src := range srcs {
			for _, chunk := range []int{1, 3, 64} {
				msg, rest, err := readAllData(t, []byte(c), src, 16, chunk)
				if !end {
					// A held ".\r" at the cut may be missing: the data failed.
					if err != io.ErrUnexpectedEOF || !bytes.HasPrefix(wantMsg, msg) || len(wantMsg)-len(msg) > 1 {
						t.Fatalf("%q (%s, %d): got %q, %v; want %q, unexpected EOF", c, name, chunk, msg, err, wantMsg)
					}
					continue
				}
				if err != nil || !bytes.Equal(msg, wantMsg) || !bytes.Equal(rest, wantRest) {
					t.Fatalf("%q (%s, %d): got %q rest %q, %v; want %q rest %q", c, name, chunk, msg, rest, err, wantMsg, wantRest)
				}
			}
		}
	}
}

func TestLineLimitReaderChunked(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 3000; i++ {
		b := make([]byte, rng.Intn(60))
		for j := range b {
			if rng.Intn(8) == 0 {
				b[j] = '\n'
			} else {
				b[j] = 'x'
			}
		}
		limit := 1 + rng.Intn(12)
		// Reference: the upstream byte loop.
		cur, want := 0, true
		for _, chr := range b {
			if chr == '\n' {
				cur = 0
			}
			cur++
			if cur > limit {
				want = false
				break
			}
		}
		r := &lineLimitReader{R: iotest.HalfReader(bytes.NewReader(b)), LineLimit: limit}
		_, err := io.ReadAll(r)
		if got := err == nil; got != want {
			t.Fatalf("%q limit %d: err %v, want ok=%v", b, limit, err, want)
		}
	}
}
