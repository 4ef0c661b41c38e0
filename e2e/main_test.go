// Package e2e starts the real tlsguard binary against real software: a
// private Postfix as the legacy backend, and swaks, Python's smtplib and raw
// protocol clients in front. Nothing a user would have for real is mocked.
//
// The tools come from Debian (see .ci/run). Locally a test whose tool is
// missing is skipped; with CI set it fails, so CI cannot pass by skipping.
package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string // holds the tlsguard binary built for this run
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	reapOrphanPostfixes()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// tlsguardBinary builds ./cmd/tlsguard once per test run (on first use, so
// that tests without it do not wait for the build) and returns its path.
func tlsguardBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tlsguard-e2e-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "tlsguard")
		cmd := exec.Command(goTool(), "build", "-o", binPath, "./cmd/tlsguard")
		cmd.Dir = ".." // the module root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/tlsguard: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// goTool is the go command that runs this test (go test puts its GOROOT in
// the environment), else the one on PATH.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" && isExecutable(filepath.Join(root, "bin", "go")) {
		return filepath.Join(root, "bin", "go")
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// requireTool returns the path of a tool the test needs. Without it the test
// is skipped locally and fails under CI (env CI set).
func requireTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); isExecutable(p) {
		return p
	}
	msg := fmt.Sprintf("%s is not installed (Debian: see .ci/run)", name)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The kernel may hand a just-closed port out again; never give the
		// same one twice in this run (two listeners of one config collided).
		if !portsGiven[port] {
			portsGiven[port] = true
			return port
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// waitGreeting waits until addr answers with a 220 greeting, the process
// behind it exits (exited closed), or the timeout passes.
func waitGreeting(addr string, exited <-chan struct{}, timeout time.Duration) error {
	return pollAddr(addr, exited, timeout, "no 220 greeting", func(c net.Conn) bool {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("QUIT\r\n"))
		return err == nil && strings.HasPrefix(line, "220")
	})
}

// waitListening waits until addr accepts TCP connections.
func waitListening(addr string, exited <-chan struct{}, timeout time.Duration) error {
	return pollAddr(addr, exited, timeout, "not listening", func(net.Conn) bool { return true })
}

// pollAddr connects to addr every 50 ms until ready says yes on a
// connection (which it then closes), the process behind addr exits (exited
// closed), or the timeout passes; what names the failure.
func pollAddr(addr string, exited <-chan struct{}, timeout time.Duration, what string, ready func(net.Conn) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exited:
			return errors.New("process exited before listening")
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			ok := ready(c)
			c.Close()
			if ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s within %v (last error: %v)", addr, what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// terminate sends SIGTERM to cmd unless it has already exited (exited is
// closed when its Wait returns), waits up to within, and kills it after
// that. It reports whether it had to kill.
func terminate(cmd *exec.Cmd, exited <-chan struct{}, within time.Duration) (killed bool) {
	select {
	case <-exited:
		return false
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return false
	case <-time.After(within):
		cmd.Process.Kill()
		<-exited
		return true
	}
}
