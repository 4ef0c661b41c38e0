// Package pebbletest starts a real Pebble ACME test CA on loopback for tests,
// in the way net/http/httptest starts a server.
//
// Pebble is installed with
//
//	go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1
//
// A test that calls Start is skipped with a clear message when `pebble` is
// not on PATH, unless TLSGUARD_REQUIRE_PEBBLE is set (as CI does), in which
// case it fails.
//
// Each Pebble gets free loopback ports, its own JSON config with absolute
// paths to its test certificates in the module cache, and
// PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 so
// orders complete at once without really checking challenges (unless
// Options.RealValidation asks for real checks).
package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the Pebble release the tests are written against.
const Version = "v2.10.1"

// RequireEnv is the environment variable that turns a missing Pebble from a
// skip into a failure.
const RequireEnv = "TLSGUARD_REQUIRE_PEBBLE"

// Certificate profiles this CA offers. Pebble picks a RANDOM profile for an
// order that names none, so a test that cares about validity must set the
// profile (tls.acme.profile) explicitly.
const (
	// DefaultProfile issues 90-day certificates.
	DefaultProfile = "default"
	// ShortProfile issues certificates valid for Options.ShortValidity.
	ShortProfile = "shortlived"
)

// BlockedName is a name this CA refuses to issue for, to test failures.
const BlockedName = "blocked.example.test"

// Options tune the CA. The zero value is a CA issuing 90-day certificates by
// default and 30-second ones under ShortProfile.
type Options struct {
	// ShortValidity is the lifetime of certificates ordered with profile
	// ShortProfile. Default 30s.
	ShortValidity time.Duration
	// RealValidation leaves PEBBLE_VA_ALWAYS_VALID off: Pebble really
	// checks each challenge, connecting to 127.0.0.1-style addresses it
	// resolves through DNSServer, on HTTPPort (http-01) and TLSPort
	// (tls-alpn-01), and reading TXT records (dns-01) from DNSServer.
	RealValidation bool
	// DNSServer is the resolver Pebble's validator uses (host:port, UDP).
	// Needed with RealValidation, since test names do not resolve.
	DNSServer string
	// HTTPPort and TLSPort are where the validator connects for http-01
	// and tls-alpn-01. Default: free ports (see Pebble.HTTPPort).
	HTTPPort, TLSPort int
	// EABKeys, when set, makes an External Account Binding required and
	// lists the accepted key ids with their base64url MAC keys.
	EABKeys map[string]string
}

// Pebble is a running Pebble CA.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:PORT/dir.
	DirectoryURL string
	// ManagementURL is the management interface, https://127.0.0.1:PORT.
	ManagementURL string
	// HTTPPort and TLSPort are where the validator connects for http-01
	// and tls-alpn-01 (relevant with Options.RealValidation).
	HTTPPort, TLSPort int
	// CARootFile is the PEM file of the root that signed the ACME
	// endpoint's own TLS certificate (Pebble's minica): the ca_root to
	// configure, not the root of issued certificates (see IssuerRoot).
	CARootFile string

	cmd    *exec.Cmd
	out    *syncBuffer
	client *http.Client
	waited chan struct{}
}

// Start starts Pebble and stops it when the test ends. It skips or fails t
// when the pebble binary is missing (see RequireEnv).
func Start(t testing.TB, opts Options) *Pebble {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		msg := "pebble not on PATH; install it with: go install github.com/letsencrypt/pebble/v2/cmd/pebble@" + Version
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("%s is set but %s", RequireEnv, msg)
		}
		t.Skip(msg)
	}
	src, err := sourceDir()
	if err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	if opts.ShortValidity <= 0 {
		opts.ShortValidity = 30 * time.Second
	}
	minica := filepath.Join(src, "test", "certs", "pebble.minica.pem")
	ports := freePorts(t, 4)
	if opts.HTTPPort != 0 {
		ports[2] = opts.HTTPPort
	}
	if opts.TLSPort != 0 {
		ports[3] = opts.TLSPort
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  "127.0.0.1:" + strconv.Itoa(ports[0]),
		"managementListenAddress":        "127.0.0.1:" + strconv.Itoa(ports[1]),
		"certificate":                    filepath.Join(src, "test", "certs", "localhost", "cert.pem"),
		"privateKey":                     filepath.Join(src, "test", "certs", "localhost", "key.pem"),
		"httpPort":                       ports[2],
		"tlsPort":                        ports[3],
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": len(opts.EABKeys) > 0,
		"externalAccountMACKeys":         opts.EABKeys,
		"keyAlgorithm":                   "ecdsa",
		"domainBlocklist":                []string{BlockedName},
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{
			DefaultProfile: map[string]any{"description": "90 days", "validityPeriod": 90 * 24 * 3600},
			ShortProfile:   map[string]any{"description": "short, for renewal tests", "validityPeriod": int(opts.ShortValidity / time.Second)},
		},
	}}
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "pebble-config.json")
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(cfgFile, b, 0o644); err != nil {
		t.Fatal(err)
	}

	p := &Pebble{
		DirectoryURL:  fmt.Sprintf("https://127.0.0.1:%d/dir", ports[0]),
		ManagementURL: fmt.Sprintf("https://127.0.0.1:%d", ports[1]),
		CARootFile:    minica,
		HTTPPort:      ports[2],
		TLSPort:       ports[3],
		out:           &syncBuffer{},
		waited:        make(chan struct{}),
	}
	pool := x509.NewCertPool()
	if pemBytes, err := os.ReadFile(minica); err != nil || !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("pebbletest: %s: cannot load (%v)", minica, err)
	}
	p.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		Proxy:           nil, // loopback only, whatever the environment says
	}}

	args := []string{"-config", cfgFile}
	if opts.DNSServer != "" {
		args = append(args, "-dnsserver", opts.DNSServer)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
	)
	if !opts.RealValidation {
		p.cmd.Env = append(p.cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("pebbletest: starting %s: %v", bin, err)
	}
	go func() { p.cmd.Wait(); close(p.waited) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("pebble output:\n%s", p.out.String())
		}
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := p.client.Get(p.DirectoryURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-p.waited:
			t.Fatalf("pebbletest: pebble exited at start:\n%s", p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebbletest: %s not ready after 15s (%v):\n%s", p.DirectoryURL, err, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// Stop ends Pebble; it is called by the test's cleanup and may be called
// earlier.
func (p *Pebble) Stop() {
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
	}
	<-p.waited
}

// Output is what Pebble logged so far.
func (p *Pebble) Output() string { return p.out.String() }

// IssuerRoot fetches the root that signs issued certificates, from the
// management interface's /roots/0. Pebble makes a new one at every start.
func (p *Pebble) IssuerRoot(t testing.TB) *x509.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.ManagementURL+"/roots/0", nil)
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("pebbletest: fetching root: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebbletest: fetching root: %s %v", resp.Status, err)
	}
	blk, _ := pem.Decode(body)
	if blk == nil {
		t.Fatalf("pebbletest: /roots/0 is not PEM: %q", body)
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("pebbletest: /roots/0: %v", err)
	}
	return root
}

// Verify checks that chain (leaf first, as served in a TLS handshake) is
// valid for name and chains to Pebble's issuing root.
func (p *Pebble) Verify(t testing.TB, chain []*x509.Certificate, name string) error {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(p.IssuerRoot(t))
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	return err
}

// sourceDir finds Pebble's module source (for its test certificates) in the
// module cache.
func sourceDir() (string, error) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMODCACHE: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "github.com", "letsencrypt", "pebble", "v2@"+Version)
	if _, err := os.Stat(filepath.Join(dir, "test", "certs", "pebble.minica.pem")); err != nil {
		return "", fmt.Errorf("pebble %s source not in the module cache (%v); run: go install github.com/letsencrypt/pebble/v2/cmd/pebble@%s", Version, err, Version)
	}
	return dir, nil
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1. A port may be
// taken by someone else between this call and its use; tests accept that
// small race.
func FreePorts(t testing.TB, n int) []int { t.Helper(); return freePorts(t, n) }

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
