package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/certs/pebbletest"
)

// The fleet: several tlsguard instances sharing their state through a real
// redis-server, behind HAProxy with the PROXY protocol (docs/scaling.md).

// fleetRedisUser is the ACL user the instances log in as: keys under the
// fleet's prefix only, no dangerous commands (docs/scaling.md).
const (
	fleetRedisUser = "tlsguard"
	fleetRedisPass = "redis-fleet-secret"
	fleetPrefix    = "fleet:"
)

// redisServer is a private redis-server on a loopback port.
type redisServer struct {
	Addr string
	dir  string
	tls  *testPKI // TLS only, with this certificate; nil: plaintext
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis runs redis-server without persistence, with an ACL user for
// the fleet and the default user off.
func startRedis(t testing.TB) *redisServer {
	t.Helper()
	return startRedisTLS(t, nil)
}

// startRedisTLS is startRedis speaking TLS only, with pki's certificate
// (for 127.0.0.1), if pki is not nil.
func startRedisTLS(t testing.TB, pki *testPKI) *redisServer {
	t.Helper()
	requireTool(t, "redis-server")
	r := &redisServer{Addr: loopbackAddr(t), dir: t.TempDir(), tls: pki}
	r.start(t)
	t.Cleanup(func() { r.kill() })
	return r
}

func (r *redisServer) start(t testing.TB) {
	t.Helper()
	_, port, _ := strings.Cut(r.Addr, ":")
	acl := filepath.Join(r.dir, "users.acl")
	// The sentinel user has what Redis Sentinel needs of a master.
	writeFile(t, acl, fmt.Sprintf("user default off\nuser %s on >%s ~%s* +@all -@dangerous\n"+
		"user sentinel on >%s allchannels +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill +script|kill\n",
		fleetRedisUser, fleetRedisPass, fleetPrefix, fleetRedisPass))
	args := []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"), "--aclfile", acl}
	if r.tls != nil {
		args = append(args, "--port", "0", "--tls-port", port, "--tls-cert-file", r.tls.CertFile, "--tls-key-file", r.tls.KeyFile,
			"--tls-ca-cert-file", r.tls.CAFile, "--tls-auth-clients", "no")
	}
	r.cmd = exec.Command("redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(r.cmd, r.done)
	if err := waitListening(r.Addr, r.done, 10*time.Second); err != nil {
		t.Fatalf("redis-server: %v\n%s", err, readFile(filepath.Join(r.dir, "redis.log")))
	}
}

// kill stops Redis at once (SIGKILL: no goodbye to the clients).
func (r *redisServer) kill() {
	select {
	case <-r.done:
		return
	default:
	}
	r.cmd.Process.Kill()
	<-r.done
}

// fleetMember is one instance of a fleet.
type fleetMember struct {
	*TLSGuard
	Direct string // implicit TLS, no PROXY header: for tests that pick the instance
	Admin  string
}

// fleet is instances sharing one Redis, one certificate, users and policy.
type fleet struct {
	members []*fleetMember
	redis   *redisServer
	pki     *testPKI
}

// fleetOptions vary the instances' config.
type fleetOptions struct {
	extra  string        // appended to tlsguard.yaml (limits:)
	policy string        // the policy file; default: example.org local
	tls    func() string // the tls: section's body; default: the test PKI's certificate
	share  string        // cluster.share; default: all
	redis  string        // how cluster.redis finds Redis (YAML lines); default: its address
	alone  bool          // the instances are expected not to reach Redis
}

// startFleet starts n instances against redis. Their "submissions"
// listener takes PROXY headers from 127.0.0.1 (HAProxy); "direct" takes
// clients as they come. extra is appended to each config (limits:,
// cluster: share).
func startFleet(t testing.TB, n int, pf *Postfix, redis *redisServer, o fleetOptions) *fleet {
	t.Helper()
	shared := t.TempDir()
	f := &fleet{redis: redis, pki: newTestPKI(t, shared)}
	users := writeHtpasswd(t, shared, map[string]string{aliceUser: alicePass, bobUser: bobPass})
	pol := filepath.Join(shared, "policy.yaml")
	policy := o.policy
	if policy == "" {
		policy = "local_domains: [example.org]\n"
	}
	writeFile(t, pol, policy)
	pass := filepath.Join(shared, "redis.secret")
	writeFile(t, pass, fleetRedisPass+"\n")
	key := filepath.Join(shared, "cluster.key")
	writeFile(t, key, "c2hhcmVkIGZsZWV0IGtleSBmb3IgdGhlIGUyZSB0ZXN0cw==\n")
	redisYAML := fmt.Sprintf("    address: %q", redis.Addr)
	if o.redis != "" {
		redisYAML = o.redis
	}
	share := ""
	if o.share != "" {
		share = "  share: " + o.share
	}
	for range n {
		tlsYAML := fmt.Sprintf("  certificates:\n    - {cert: %q, key: %q}", f.pki.CertFile, f.pki.KeyFile)
		if o.tls != nil {
			tlsYAML = o.tls()
		}
		dir := t.TempDir()
		m := &fleetMember{TLSGuard: &TLSGuard{Submissions: loopbackAddr(t), PKI: f.pki, Dir: dir,
			ConfigFile: filepath.Join(dir, "tlsguard.yaml"), LogFile: filepath.Join(dir, "tlsguard.log")},
			Direct: loopbackAddr(t), Admin: loopbackAddr(t)}
		writeFile(t, m.ConfigFile, fmt.Sprintf(`hostname: mail.example.org
state_dir: %q
listeners:
  - name: submissions
    address: %q
    tls: implicit
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
  - name: direct
    address: %q
    tls: implicit
tls:
%s
backend: {address: %q}
auth: {users_file: %q}
policy: %q
admin: {address: %q}
log: {level: debug}
cluster:
  redis:
%s
    username: %s
    password_file: %q
    key_prefix: %q
    timeout: 500ms
  key_file: %q
%s
%s`, filepath.Join(dir, "state"), m.Submissions, m.Direct, tlsYAML, pf.Addr, users, pol, m.Admin,
			redisYAML, fleetRedisUser, pass, fleetPrefix, key, share, o.extra))
		m.cmd, m.exited = runGuard(t, dir, m.ConfigFile, m.LogFile)
		f.members = append(f.members, m)
	}
	t.Cleanup(func() {
		for i, m := range f.members {
			m.stop(t)
			if t.Failed() {
				t.Logf("instance %d log:\n%s", i, m.Log())
			}
		}
	})
	for _, m := range f.members {
		if err := waitListening(m.Direct, m.exited, guardStartTimeout); err != nil {
			t.Fatalf("tlsguard: %v\n%s", err, m.Log())
		}
	}
	// An instance that found Redis slow at start shares within a second
	// (the probe): tests of sharing start once every instance does.
	if !o.alone {
		for _, m := range f.members {
			waitDegraded(t, m, 0)
		}
	}
	return f
}

// startHAProxy balances front round-robin over servers with a PROXY v2
// header each, from 127.0.0.1. A server that refuses a connection is
// skipped for the next (redispatch), as a load balancer in front of a
// fleet is set up.
func startHAProxy(t testing.TB, servers []string) string {
	t.Helper()
	haproxy := requireTool(t, "haproxy")
	dir := t.TempDir()
	front := loopbackAddr(t)
	var b strings.Builder
	fmt.Fprintf(&b, `global
  maxconn 200
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch 1
frontend smtps
  bind %s
  default_backend fleet
backend fleet
  balance roundrobin
`, front)
	for i, s := range servers {
		fmt.Fprintf(&b, "  server g%d %s send-proxy-v2 source 127.0.0.1\n", i, s)
	}
	runHAProxy(t, haproxy, dir, b.String(), front)
	return front
}

// runHAProxy runs haproxy with config text cfg in dir until the test ends,
// and waits for it to listen on front.
func runHAProxy(t testing.TB, haproxy, dir, cfg, front string) {
	t.Helper()
	path := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, path, cfg)
	hp := exec.Command(haproxy, "-db", "-f", path)
	hlog, _ := os.Create(filepath.Join(dir, "haproxy.log"))
	hp.Stdout, hp.Stderr = hlog, hlog
	if err := hp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hp.Process.Kill(); hp.Wait(); hlog.Close() })
	if err := waitListening(front, nil, 10*time.Second); err != nil {
		t.Fatalf("haproxy: %v\n%s", err, readFile(filepath.Join(dir, "haproxy.log")))
	}
}

// sessionsFrom counts the sessions an instance logged for a client address.
func sessionsFrom(m *fleetMember, ip string) int {
	n := 0
	for _, line := range strings.Split(m.Log(), "\n") {
		if containsAll(line, []string{`"msg":"session"`, `"client_ip":"` + ip + `"`}) {
			n++
		}
	}
	return n
}

// A password guesser whose connections HAProxy spreads round-robin over
// three instances is throttled after auth_max_failures failures in all,
// not three times that: the budget per address lives in Redis. The right
// password from that address is refused too, unchecked; the user logs in
// from elsewhere.
func TestFleetBruteForceThrottledAcrossInstances(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	redis := startRedis(t)
	f := startFleet(t, 3, pf, redis, fleetOptions{extra: "limits:\n  auth_max_failures: 3\n  auth_fail_delay: 100ms\n"})
	var servers []string
	for _, m := range f.members {
		servers = append(servers, m.Submissions)
	}
	front := startHAProxy(t, servers)

	const guesser = "127.0.0.5"
	var got []string
	for i := range 9 {
		c := dialImplicitTLSFrom(t, guesser, front, f.pki.clientTLS())
		c.ehlo("guesser.example.net")
		r := c.authPlain("", aliceUser, "wrong-"+strconv.Itoa(i))
		got = append(got, strconv.Itoa(r.code)+" "+r.enhanced())
		c.conn.Close()
	}
	want := []string{"535 5.7.8", "535 5.7.8", "421 4.7.0"}
	for len(want) < len(got) {
		want = append(want, "421 4.7.0")
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("replies to 9 guesses over 3 instances:\n got %q\nwant %q", got, want)
	}
	for i, m := range f.members {
		if n := sessionsFrom(m, guesser); n < 2 {
			t.Errorf("instance %d served %d of the guesser's sessions: HAProxy did not spread them", i, n)
		}
	}
	c := dialImplicitTLSFrom(t, guesser, front, f.pki.clientTLS())
	c.ehlo("guesser.example.net")
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "421 4.7.0 ")
	c = dialImplicitTLSFrom(t, "127.0.0.6", front, f.pki.clientTLS())
	c.ehlo("alice.example.net")
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
}

// A TLS session ticket issued by one instance resumes on another: the
// ticket keys are shared.
func TestFleetSessionTicketResumesOnAnotherInstance(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	redis := startRedis(t)
	f := startFleet(t, 2, pf, redis, fleetOptions{})
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		cfg := f.pki.clientTLS()
		cfg.MinVersion, cfg.MaxVersion = v, v
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		// The cache is keyed by ServerName: the session from A is offered
		// to B.
		a := dialImplicitTLSFrom(t, "127.0.0.2", f.members[0].Direct, cfg)
		if a.conn.(*tls.Conn).ConnectionState().DidResume {
			t.Fatal("first handshake resumed")
		}
		a.cmd("QUIT").expect(t, 221)
		b := dialImplicitTLSFrom(t, "127.0.0.2", f.members[1].Direct, cfg)
		if !b.conn.(*tls.Conn).ConnectionState().DidResume {
			t.Errorf("TLS %x: a ticket from instance A did not resume on instance B", v)
		}
		b.cmd("QUIT").expect(t, 221)
	}
}

// sendMessage logs in as alice at addr from src and sends one message; it
// returns what went wrong ("" if the message was accepted). It does not
// fail the test itself, so that load goroutines may call it.
func sendMessage(src, addr string, cfg *tls.Config, n int) string {
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := tls.DialWithDialer(&d, "tcp", addr, cfg)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	c := &smtpConn{conn: conn, r: bufio.NewReader(conn)}
	if r, err := c.tryRead(ioTimeout); err != nil || r.code != 220 {
		return fmt.Sprintf("greeting: %q %v", r.raw, err)
	}
	for _, step := range []struct {
		line string
		want int
	}{
		{"EHLO sender.example.net", 250},
		{"AUTH PLAIN " + b64("\x00"+aliceUser+"\x00"+alicePass), 235},
		{"MAIL FROM:<" + alice + ">", 250},
		{"RCPT TO:<" + dave + ">", 250},
		{"DATA", 354},
		{fmt.Sprintf("Subject: fleet %d\r\n\r\nmessage %d\r\n.", n, n), 250},
	} {
		conn.SetWriteDeadline(time.Now().Add(ioTimeout))
		if _, err := conn.Write([]byte(step.line + "\r\n")); err != nil {
			return err.Error()
		}
		if r, err := c.tryRead(ioTimeout); err != nil || r.code != step.want {
			return fmt.Sprintf("%s: %q %v", strings.Fields(step.line)[0], r.raw, err)
		}
	}
	conn.Write([]byte("QUIT\r\n"))
	return ""
}

// fleetGuess sends one wrong password to m from src and returns the reply code.
func fleetGuess(t testing.TB, m *fleetMember, pki *testPKI, src string) int {
	c := dialImplicitTLSFrom(t, src, m.Direct, pki.clientTLS())
	defer c.conn.Close()
	c.ehlo("guesser.example.net")
	return c.authPlain("", aliceUser, "wrong").code
}

// waitDegraded waits until m's tlsguard_cluster_degraded reads want.
func waitDegraded(t testing.TB, m *fleetMember, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := httpGet(t, "http://"+m.Admin+"/metrics")
		if v := metricValue(body, "tlsguard_cluster_degraded"); v == want {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("tlsguard_cluster_degraded = %v, want %v", v, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Redis killed while mail flows through two instances: no message is lost
// or refused, each instance says it is degraded (metric, readyz 200 with
// the reason), AUTH failures are still throttled, by each instance alone.
// Redis back: the instances share again by themselves.
func TestFleetRedisDownMailFlowsThrottleLocal(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	redis := startRedis(t)
	f := startFleet(t, 2, pf, redis, fleetOptions{extra: "limits:\n  auth_max_failures: 3\n  auth_fail_delay: 100ms\n"})
	waitDegraded(t, f.members[0], 0)

	const perWorker = 30
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	sent := make(chan int, 100)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := f.members[w]
			for i := range perWorker {
				n := w*perWorker + i
				if why := sendMessage("127.0.0.2", m.Direct, f.pki.clientTLS(), n); why != "" {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("message %d via instance %d: %s", n, w, why))
					mu.Unlock()
				}
				sent <- n
			}
		}()
	}
	// Kill Redis once a third of the load is through.
	for range 2 * perWorker / 3 {
		<-sent
	}
	redis.kill()
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d messages failed with Redis killed during the load:\n%s", len(failures), 2*perWorker, strings.Join(failures, "\n"))
	}
	pf.WaitMessages(t, dave, 2*perWorker)

	for i, m := range f.members {
		waitDegraded(t, m, 1)
		code, body := httpGet(t, "http://"+m.Admin+"/readyz")
		if code != 200 || !strings.Contains(body, "degraded") || !strings.Contains(body, "Redis") {
			t.Errorf("instance %d readyz with Redis down: %d %q, want 200 saying degraded", i, code, body)
		}
	}
	expectLogLine(t, f.members[0].TLSGuard, "Redis unreachable: acting alone (local throttles and rate counters, cached certificates, last ticket keys; no certificate issuance) until it answers again")

	// Throttled alone: instance A hangs up on the third failure, and B,
	// knowing nothing of A's count, still counts its own.
	a, b := f.members[0], f.members[1]
	codes := []int{fleetGuess(t, a, f.pki, "127.0.0.7"), fleetGuess(t, a, f.pki, "127.0.0.7"), fleetGuess(t, a, f.pki, "127.0.0.7"), fleetGuess(t, a, f.pki, "127.0.0.7")}
	if fmt.Sprint(codes) != "[535 535 421 421]" {
		t.Errorf("guesses at one instance with Redis down: %v, want [535 535 421 421]", codes)
	}
	if c := fleetGuess(t, b, f.pki, "127.0.0.7"); c != 535 {
		t.Errorf("guess at the other instance with Redis down: %d, want 535 (its own count)", c)
	}

	redis.start(t)
	for _, m := range f.members {
		waitDegraded(t, m, 0)
	}
	if code, body := httpGet(t, "http://"+a.Admin+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("readyz with Redis back: %d %q", code, body)
	}
	expectLogLine(t, a.TLSGuard, "Redis answers again: sharing state")
	// Shared again: two failures at A and one at B spend the budget.
	codes = []int{fleetGuess(t, a, f.pki, "127.0.0.8"), fleetGuess(t, a, f.pki, "127.0.0.8"), fleetGuess(t, b, f.pki, "127.0.0.8"), fleetGuess(t, a, f.pki, "127.0.0.8")}
	if fmt.Sprint(codes) != "[535 535 421 421]" {
		t.Errorf("guesses at two instances with Redis back: %v, want [535 535 421 421]", codes)
	}
	if why := sendMessage("127.0.0.2", b.Direct, f.pki.clientTLS(), 999); why != "" {
		t.Errorf("message after Redis came back: %s", why)
	}
}

// A user's rate limit holds across instances: three messages an hour for
// alice, sent at two instances in turn, and the fourth is refused at
// either with 450 4.7.1.
func TestFleetRateLimitAcrossInstances(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	redis := startRedis(t)
	f := startFleet(t, 2, pf, redis, fleetOptions{policy: `local_domains: [example.org]
rate_limits:
  - name: per-user
    per: user
    window: 1h
    messages: 3
`})
	var got []string
	for i := range 5 {
		why := sendMessage("127.0.0.2", f.members[i%2].Direct, f.pki.clientTLS(), i)
		if why == "" {
			why = "delivered"
		} else if strings.Contains(why, "450 4.7.1 ") {
			why = "450 4.7.1"
		}
		got = append(got, why)
	}
	want := []string{"delivered", "delivered", "delivered", "450 4.7.1", "450 4.7.1"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("five messages of alice at two instances, three an hour allowed:\n got %q\nwant %q", got, want)
	}
	pf.WaitMessages(t, dave, 3)
}

// Three instances started at once with an empty Redis order one
// certificate from the ACME CA between them (the others wait on the shared
// lock and load it from the shared storage), and all three serve it.
func TestFleetOneACMEOrder(t *testing.T) {
	t.Parallel()
	p := certsStartPebble(t, pebbletest.Options{})
	pf := startPostfix(t)
	redis := startRedis(t)
	f := startFleet(t, 3, pf, redis, fleetOptions{tls: func() string {
		return certsACMEYAML(t, p, "    profile: "+pebbletest.DefaultProfile+"\n")
	}})
	orders := 0
	serials := map[string]int{}
	for i, m := range f.members {
		orders += certsOrdersCompleted(m.Log())
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", m.Direct, certsInsecureTLS())
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
		chain := c.ConnectionState().PeerCertificates
		c.Close()
		if err := p.Verify(t, chain, certsHostname); err != nil {
			t.Errorf("instance %d serves %v", i, err)
		}
		serials[chain[0].SerialNumber.String()]++
	}
	if orders != 1 {
		t.Errorf("%d orders completed by 3 instances with one Redis, want 1", orders)
	}
	if n := strings.Count(p.Output(), "Issued certificate serial"); n != 1 {
		t.Errorf("Pebble issued %d certificates to the fleet, want 1", n)
	}
	if len(serials) != 1 {
		t.Errorf("the instances serve %d different certificates, want 1: %v", len(serials), serials)
	}
}

// An instance stopped with SIGTERM behind HAProxy finishes the sessions it
// holds, and new sessions go to the others: no message is lost.
func TestFleetInstanceStoppedBehindHAProxy(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	redis := startRedis(t)
	f := startFleet(t, 3, pf, redis, fleetOptions{})
	var servers []string
	for _, m := range f.members {
		servers = append(servers, m.Submissions)
	}
	front := startHAProxy(t, servers)

	// One session in the middle of DATA at each instance (round-robin).
	var open []*smtpConn
	for range 3 {
		c := dialImplicitTLSFrom(t, "127.0.0.2", front, f.pki.clientTLS())
		c.ehlo("client.example.net")
		c.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
		c.openData(t, alice, dave)
		open = append(open, c)
	}
	stopped := f.members[0]
	if err := stopped.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Wait until it no longer accepts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", stopped.Submissions, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the stopped instance still accepts connections")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 6 {
		if why := sendMessage("127.0.0.2", front, f.pki.clientTLS(), 100+i); why != "" {
			t.Errorf("new message %d through HAProxy with one instance stopping: %s", i, why)
		}
	}
	for _, c := range open {
		c.send("Subject: open session\r\n\r\nfinished after SIGTERM\r\n.\r\n")
		c.read().expectPrefix(t, "250 ")
		c.cmd("QUIT").expect(t, 221)
	}
	select {
	case <-stopped.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the stopped instance did not exit after its sessions ended")
	}
	if code := stopped.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the stopped instance exited with %d", code)
	}
	pf.WaitMessages(t, dave, 9)
}

// resumes reports whether a TLS session from instance a resumes on b.
func resumes(t testing.TB, f *fleet, a, b *fleetMember) bool {
	t.Helper()
	cfg := f.pki.clientTLS()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	c := dialImplicitTLSFrom(t, "127.0.0.2", a.Direct, cfg)
	c.cmd("QUIT").expect(t, 221)
	c = dialImplicitTLSFrom(t, "127.0.0.2", b.Direct, cfg)
	defer c.cmd("QUIT")
	return c.conn.(*tls.Conn).ConnectionState().DidResume
}

// cluster.share names what is shared, and only that: with
// [session_tickets], tickets resume across instances while each instance
// keeps its own AUTH budget.
func TestConfigKeyClusterShare(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	redis := startRedis(t)
	f := startFleet(t, 2, pf, redis, fleetOptions{share: "[session_tickets]",
		extra: "limits:\n  auth_max_failures: 2\n  auth_fail_delay: 100ms\n"})
	a, b := f.members[0], f.members[1]
	if !resumes(t, f, a, b) {
		t.Error("session_tickets shared, yet a ticket from A did not resume on B")
	}
	codes := []int{fleetGuess(t, a, f.pki, "127.0.0.9"), fleetGuess(t, a, f.pki, "127.0.0.9"), fleetGuess(t, b, f.pki, "127.0.0.9")}
	if fmt.Sprint(codes) != "[535 421 535]" {
		t.Errorf("guesses at A, A, B with auth_throttle not shared: %v, want [535 421 535]", codes)
	}
}

// cluster.redis.tls and ca_file: Redis speaking TLS only, its certificate
// checked against the CA file; the fleet shares through it.
func TestConfigKeyClusterRedisTLS(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	pki := newTestPKI(t, t.TempDir())
	redis := startRedisTLS(t, pki)
	f := startFleet(t, 2, pf, redis, fleetOptions{redis: fmt.Sprintf("    address: %q\n    tls: true\n    ca_file: %q", redis.Addr, pki.CAFile)})
	waitDegraded(t, f.members[0], 0)
	if !resumes(t, f, f.members[0], f.members[1]) {
		t.Error("a ticket from A did not resume on B through a TLS Redis")
	}
	// Without the CA, the instance cannot verify Redis and acts alone.
	g := startFleet(t, 1, pf, redis, fleetOptions{redis: fmt.Sprintf("    address: %q\n    tls: true", redis.Addr), alone: true})
	waitDegraded(t, g.members[0], 1)
	expectLogLine(t, g.members[0].TLSGuard, "Redis unreachable: acting alone (local throttles and rate counters, cached certificates, last ticket keys; no certificate issuance) until it answers again", "certificate")
}

// startSentinel runs one Redis Sentinel watching r as "fleetmaster".
func startSentinel(t testing.TB, r *redisServer) string {
	t.Helper()
	addr := loopbackAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	host, rport, _ := strings.Cut(r.Addr, ":")
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	writeFile(t, conf, fmt.Sprintf(`port %s
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor fleetmaster %s %s 1
sentinel auth-user fleetmaster sentinel
sentinel auth-pass fleetmaster %s
sentinel down-after-milliseconds fleetmaster 2000
`, port, dir, filepath.Join(dir, "sentinel.log"), host, rport, fleetRedisPass))
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	if err := waitListening(addr, done, 10*time.Second); err != nil {
		t.Fatalf("sentinel: %v\n%s", err, readFile(filepath.Join(dir, "sentinel.log")))
	}
	return addr
}

// cluster.redis.sentinel: the instances find the master through Redis
// Sentinel and share through it.
func TestConfigKeyClusterSentinel(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	redis := startRedis(t)
	sentinel := startSentinel(t, redis)
	f := startFleet(t, 2, pf, redis, fleetOptions{redis: fmt.Sprintf("    sentinel: {master: fleetmaster, addresses: [%q]}", sentinel),
		extra: "limits:\n  auth_max_failures: 2\n  auth_fail_delay: 100ms\n"})
	waitDegraded(t, f.members[0], 0)
	a, b := f.members[0], f.members[1]
	codes := []int{fleetGuess(t, a, f.pki, "127.0.0.9"), fleetGuess(t, b, f.pki, "127.0.0.9")}
	if fmt.Sprint(codes) != "[535 421]" {
		t.Errorf("guesses at A then B through Sentinel's master: %v, want [535 421]", codes)
	}
}

// A renewal is one order for the fleet too, and every instance serves the
// renewed certificate: with certificates living ten seconds, the instances
// come to serve one new certificate together.
func TestFleetACMERenewalSeenByAll(t *testing.T) {
	t.Parallel()
	p := certsStartPebble(t, pebbletest.Options{ShortValidity: 10 * time.Second})
	pf := startPostfix(t)
	redis := startRedis(t)
	f := startFleet(t, 3, pf, redis, fleetOptions{tls: func() string {
		return certsACMEYAML(t, p, fmt.Sprintf("    profile: %s\n    renew_check_interval: 1s\n", pebbletest.ShortProfile))
	}})
	served := func() []string {
		var out []string
		for i, m := range f.members {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", m.Direct, certsInsecureTLS())
			if err != nil {
				t.Fatalf("instance %d: %v", i, err)
			}
			out = append(out, c.ConnectionState().PeerCertificates[0].SerialNumber.String())
			c.Close()
		}
		return out
	}
	first := served()
	if first[0] != first[1] || first[1] != first[2] {
		t.Fatalf("the instances start with different certificates: %v", first)
	}
	seen := map[string]bool{first[0]: true}
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := served()
		for _, s := range now {
			seen[s] = true
		}
		if now[0] != first[0] && now[0] == now[1] && now[1] == now[2] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 30s the instances did not come to serve one renewed certificate: first %s, now %v", first[0], now)
		}
		time.Sleep(250 * time.Millisecond)
	}
	orders := 0
	for _, m := range f.members {
		orders += certsOrdersCompleted(m.Log())
	}
	issued := strings.Count(p.Output(), "Issued certificate serial")
	t.Logf("%d orders over the fleet, %d certificates issued by Pebble, %d served", orders, issued, len(seen))
	if orders > len(seen)+1 || issued > len(seen)+1 {
		t.Errorf("%d orders, %d issued, for %d certificates served: instances renewed on their own", orders, issued, len(seen))
	}
}
