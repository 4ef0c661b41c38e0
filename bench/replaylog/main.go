// Command replaylog writes a synthetic tlsguard JSON log of a given size
// for the "policy replay" benchmark (bench/replay.sh): transaction lines
// shaped as proxy/log.go writes them (local mail from the internet, relaying
// by logged-in users and a campus network, refusals by rules, limits, rate
// limits and syntax), interleaved with session lines, against the domains
// and users of policies/university.yaml. Deterministic for a given -seed.
//
//	go run ./bench/replaylog -size 1G -o /tmp/tlsguard.log
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	sizeFlag := flag.String("size", "200M", "bytes to write (K, M, G suffixes, 1024-based)")
	out := flag.String("o", "", "output file (default stdout)")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	size, err := parseSize(*sizeFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "replaylog:", err)
		os.Exit(2)
	}
	f := os.Stdout
	if *out != "" {
		if f, err = os.Create(*out); err != nil {
			fmt.Fprintln(os.Stderr, "replaylog:", err)
			os.Exit(2)
		}
	}
	w := bufio.NewWriterSize(f, 1<<20)
	n, lines := write(w, size, *seed)
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "replaylog:", err)
		os.Exit(1)
	}
	f.Close()
	fmt.Fprintf(os.Stderr, "replaylog: %d bytes, %d lines\n", n, lines)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want e.g. 200M or 1G", s)
	}
	return n * mult, nil
}

var (
	listeners = []string{"mx", "submission", "submissions"}
	users     = []string{"alice", "bob", "carol", "dave", "listserv"}
	foreign   = []string{"example.net", "foreign.test", "mail.example.com", "partner.test", "spam.example"}
	local     = []string{"uni.example", "cs.uni.example", "alumni.example"}
)

// write emits lines until size bytes are written; it returns the bytes and
// lines written.
func write(w *bufio.Writer, size int64, seed uint64) (int64, int64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	var n, lines int64
	var b []byte
	for i := 0; n < size; i++ {
		t = t.Add(time.Duration(r.IntN(400)) * time.Millisecond)
		b = b[:0]
		if i%3 == 2 {
			b = fmt.Appendf(b, `{"level":"info","ts":"%s","logger":"proxy","msg":"session","session":"s%08x","listener":"mx","client_ip":"198.51.100.%d","helo":"client.example.net","tls_version":"TLSv1.3","tls_cipher":"TLS_AES_128_GCM_SHA256","sni":"","user":"","transactions":1,"delivered":1,"bytes_in":5230,"bytes_out":612,"end":"","duration_ms":41.2}`+"\n",
				t.Format("2006-01-02T15:04:05.000Z0700"), i, r.IntN(250))
		} else {
			b = transaction(b, r, t, i)
		}
		w.Write(b)
		n += int64(len(b))
		lines++
	}
	return n, lines
}

func transaction(b []byte, r *rand.Rand, t time.Time, i int) []byte {
	listener := listeners[r.IntN(len(listeners))]
	user, ip, tls := "", fmt.Sprintf("198.51.%d.%d", r.IntN(8), r.IntN(250)), listener != "mx" || r.IntN(2) == 0
	from := fmt.Sprintf("u%d@%s", r.IntN(5000), foreign[r.IntN(len(foreign))])
	switch k := r.IntN(10); {
	case k < 3 && listener != "mx":
		user = users[r.IntN(len(users))]
		from = user + "@uni.example"
		if user == "listserv" {
			from = "announce@lists.uni.example"
		}
		tls = true
	case k < 5:
		ip = fmt.Sprintf("10.20.%d.%d", r.IntN(256), r.IntN(250))
		from = fmt.Sprintf("host%d@%s", r.IntN(300), local[r.IntN(len(local))])
	}
	var rcpts, rules []string
	type ref struct{ rcpt, rule, reply, check string }
	var refused []ref
	for j := range 1 + r.IntN(4) {
		to := fmt.Sprintf("r%d@%s", r.IntN(20000), local[r.IntN(len(local))])
		if r.IntN(3) == 0 {
			to = fmt.Sprintf("r%d@%s", r.IntN(20000), foreign[r.IntN(len(foreign))])
		}
		switch {
		case strings.HasSuffix(from, "@spam.example"):
			refused = append(refused, ref{to, "blocked-senders", "550 5.7.1 Mail from your domain is not accepted here; contact postmaster@uni.example", "rules"})
		case strings.HasSuffix(to, ".uni.example") || strings.HasSuffix(to, "@uni.example") || strings.HasSuffix(to, "alumni.example"):
			rcpts, rules = append(rcpts, to), append(rules, "local-mail")
		case strings.HasPrefix(ip, "10.20."):
			rcpts, rules = append(rcpts, to), append(rules, "campus-relay")
		case !tls:
			refused = append(refused, ref{to, "relay-needs-tls", "530 5.7.0 Must issue a STARTTLS command first", "rules"})
		case user != "":
			if j == 3 && r.IntN(4) == 0 {
				refused = append(refused, ref{to, "students-hourly", "450 4.7.1 Rate limit reached: too many recipients for user " + user + " (at most 500 per 1h), try again in 12m0s", "rate_limit"})
				continue
			}
			rcpts, rules = append(rcpts, to), append(rules, "relay-needs-login")
		default:
			refused = append(refused, ref{to, "relay-needs-login", "550 5.7.1 Relaying denied. Authentication required.", "rules"})
		}
	}
	b = fmt.Appendf(b, `{"level":"info","ts":"%s","logger":"proxy","msg":"transaction","session":"s%08x","listener":"%s","client_ip":"%s","tls":%t,"user":"%s","from":"%s","size":%d,"rcpts":[`,
		t.Format("2006-01-02T15:04:05.000Z0700"), i, listener, ip, tls, user, from, r.IntN(3)*2048)
	for j, rc := range rcpts {
		if j > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, rc)
	}
	b = append(b, `],"rules":[`...)
	for j, rc := range rules {
		if j > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, rc)
	}
	b = append(b, `],"refused":[`...)
	for j, f := range refused {
		if j > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"rcpt":%q,"rule":%q,"reply":%q,"check":%q,"before":%d}`, f.rcpt, f.rule, f.reply, f.check, len(rcpts))
	}
	delivered := len(rcpts) > 0
	result := "250 2.0.0 Ok: queued as 4XyZ1234"
	if !delivered {
		result = "no data (quit)"
	}
	b = fmt.Appendf(b, `],"delivered":%t,"result":%q,"bytes":%d,"duration_ms":35.7`, delivered, result, 5000+r.IntN(20000))
	if tls {
		b = append(b, `,"tls_version":"TLSv1.3","tls_cipher":"TLS_AES_128_GCM_SHA256","sni":"mail.uni.example"`...)
	}
	return append(b, "}\n"...)
}
