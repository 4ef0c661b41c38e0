package e2e

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// certsNmapRun is the part of `nmap -oX` output that ssl-enum-ciphers fills:
// a table per TLS version with its ciphers.
type certsNmapRun struct {
	Ports []struct {
		Scripts []struct {
			ID     string           `xml:"id,attr"`
			Output string           `xml:"output,attr"`
			Tables []certsNmapTable `xml:"table"`
		} `xml:"script"`
	} `xml:"host>ports>port"`
}

type certsNmapTable struct {
	Key    string           `xml:"key,attr"`
	Tables []certsNmapTable `xml:"table"`
	Elems  []struct {
		Key   string `xml:"key,attr"`
		Value string `xml:",chardata"`
	} `xml:"elem"`
}

// TestCertsTLSScan runs nmap's ssl-enum-ciphers against the implicit TLS
// (465 role) and STARTTLS (587 role) listeners, as a security reviewer
// would: no SSLv3, TLS 1.0 or 1.1; for TLS 1.2 only ECDHE with AEAD.
func TestCertsTLSScan(t *testing.T) {
	nmap := requireTool(t, "nmap")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certsNewPair(t).install(t, certFile, keyFile)
	g := certsStartGuard(t, dir, certsStaticYAML(certFile, keyFile, "5s"))

	t.Run("465 implicit TLS", func(t *testing.T) {
		versions := certsNmapCiphers(t, nmap, g.Submissions, nil)
		certsCheckScan(t, versions)
		if len(versions["TLSv1.2"]) == 0 || len(versions["TLSv1.3"]) == 0 {
			t.Errorf("want TLS 1.2 and 1.3 offered, scan found %v", versions)
		}
	})

	t.Run("587 STARTTLS", func(t *testing.T) {
		// nmap's SMTP STARTTLS helper takes whatever one read returns as
		// the whole EHLO reply, and go-smtp writes each reply line with
		// its own write: under load some probes read EHLO's tail as the
		// answer to STARTTLS and give up, so TLS 1.2 or 1.3 goes missing
		// from the report at random. A relay that coalesces the server's
		// writes (bytes unchanged) makes the scan deterministic.
		relay := certsCoalescingRelay(t, g.Submission)
		versions := certsNmapCiphers(t, nmap, relay, []string{"--datadir", certsSMTPServiceDB(t, relay)})
		certsCheckScan(t, versions)
		if len(versions["TLSv1.2"]) == 0 || len(versions["TLSv1.3"]) == 0 {
			t.Errorf("want TLS 1.2 and 1.3 offered after STARTTLS, scan found %v", versions)
		}
		// The refusals, checked directly too (Go's client still speaks
		// TLS 1.0 and 1.1 when asked).
		for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
			c := dialSMTP(t, g.Submission)
			c.ehlo("client.example")
			c.cmd("STARTTLS").expect(t, 220)
			tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err == nil {
				t.Errorf("%s accepted after STARTTLS", tls.VersionName(v))
			}
			c.conn.Close()
		}
	})
}

// certsNmapCiphers runs ssl-enum-ciphers on addr and returns the cipher names
// per TLS version.
func certsNmapCiphers(t *testing.T, nmap, addr string, extra []string) map[string][]string {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	args := append([]string{"-Pn", "-n", "-p", port, "--script", "ssl-enum-ciphers", "-oX", "-"}, extra...)
	start := time.Now()
	out, err := exec.CommandContext(ctx, nmap, append(args, "127.0.0.1")...).Output()
	if err != nil {
		t.Fatalf("nmap: %v\n%s", err, out)
	}
	var run certsNmapRun
	if err := xml.Unmarshal(out, &run); err != nil {
		t.Fatalf("nmap XML: %v\n%s", err, out)
	}
	versions := map[string][]string{}
	for _, p := range run.Ports {
		for _, s := range p.Scripts {
			if s.ID != "ssl-enum-ciphers" {
				continue
			}
			t.Logf("nmap ssl-enum-ciphers on %s (%v):%s", addr, time.Since(start).Round(time.Millisecond), s.Output)
			for _, v := range s.Tables {
				for _, sub := range v.Tables {
					if sub.Key != "ciphers" {
						continue
					}
					for _, c := range sub.Tables {
						for _, e := range c.Elems {
							if e.Key == "name" {
								versions[v.Key] = append(versions[v.Key], e.Value)
							}
						}
					}
				}
			}
		}
	}
	return versions
}

// certsCheckScan fails on any version below TLS 1.2 and on any TLS 1.2 suite
// that is not ECDHE with an AEAD cipher.
func certsCheckScan(t *testing.T, versions map[string][]string) {
	t.Helper()
	for v, ciphers := range versions {
		switch v {
		case "TLSv1.2":
			for _, c := range ciphers {
				if !strings.HasPrefix(c, "TLS_ECDHE_") || !(strings.Contains(c, "_GCM_") || strings.Contains(c, "CHACHA20_POLY1305")) {
					t.Errorf("TLS 1.2 offers %s: want ECDHE with AEAD only", c)
				}
			}
		case "TLSv1.3":
		default:
			t.Errorf("%s offered (ciphers %v): want TLS 1.2 and 1.3 only", v, ciphers)
		}
	}
}

// certsSMTPServiceDB writes an nmap data folder whose services file names
// addr's port smtp, so ssl-enum-ciphers speaks STARTTLS first; nmap takes
// its other data files from the default place. (--servicedb would do, but
// it implies -F, which refuses -p; -sV would do, but its probes take 25 s.)
func certsSMTPServiceDB(t testing.TB, addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "nmap-services"), "smtp\t"+port+"/tcp\t0.5\t# tlsguard STARTTLS listener\n")
	return dir
}

// certsCoalescingRelay forwards connections from a new loopback port to target,
// passing bytes unchanged but gathering what the server writes within a
// few milliseconds into one write. It returns the relay's address.
func certsCoalescingRelay(t testing.TB, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer s.Close()
				go func() {
					io.Copy(s, c)
					s.(*net.TCPConn).CloseWrite()
				}()
				buf := make([]byte, 64<<10)
				for {
					s.SetReadDeadline(time.Time{})
					n, err := s.Read(buf)
					for n > 0 && n < len(buf) && err == nil {
						s.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
						var m int
						m, err = s.Read(buf[n:])
						n += m
					}
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
