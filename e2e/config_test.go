package e2e

// A broken config stops tlsguard before it listens, naming file:line:key.

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestConfigErrorExitsBeforeListening(t *testing.T) {
	t.Parallel()
	bin := tlsguardBinary(t)

	cases := []struct {
		name, backend string
		line          int    // of the bad key in the file below
		key           string // must be named
	}{
		{"unknown key", "  address: \"127.0.0.1:2525\"\n  timout: 30s\n", 13, "timout"},
		{"wrong type", "  address: \"127.0.0.1:2525\"\n  timeout: soon\n", 13, "timeout"},
		{"bad enum", "  address: \"127.0.0.1:2525\"\n  tls: maybe\n", 13, "tls"},
		{"negative pool size", "  address: \"127.0.0.1:2525\"\n  pool_size: -1\n", 13, "pool_size"},
		{"pool idle too long", "  address: \"127.0.0.1:2525\"\n  pool_idle: 10m\n", 13, "pool_idle"},
		{"final reply wait under timeout", "  address: \"127.0.0.1:2525\"\n  data_done_timeout: 10s\n", 13, "data_done_timeout"},
		{"no backend connections", "  address: \"127.0.0.1:2525\"\n  max_connections: 0\n", 13, "max_connections"},
		{"all backend connections reserved", "  address: \"127.0.0.1:2525\"\n  reserved_authenticated: 100\n", 13, "reserved_authenticated"},
		{"negative spool_after", "  address: \"127.0.0.1:2525\"\n  spool_after: -1s\n", 13, "spool_after"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			listen := loopbackAddr(t)
			// Line numbers matter: the backend section's second line is 13.
			cfg := minimalConfig(t, dir, listen, tc.backend)
			file := filepath.Join(dir, "tlsguard.yaml")
			writeFile(t, file, cfg)
			if got := strings.Split(cfg, "\n")[tc.line-1]; !strings.Contains(got, tc.key) {
				t.Fatalf("test bug: line %d is %q", tc.line, got)
			}

			// Watch the listener's port for as long as the process runs.
			var listened atomic.Bool
			watchCtx, stopWatch := context.WithCancel(context.Background())
			watched := make(chan struct{})
			defer stopWatch()
			go func() {
				defer close(watched)
				for watchCtx.Err() == nil {
					if c, err := net.DialTimeout("tcp", listen, 100*time.Millisecond); err == nil {
						c.Close()
						listened.Store(true)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "--config", file)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			stopWatch()
			<-watched
			if ctx.Err() != nil {
				t.Fatalf("tlsguard serve did not exit within 30s on a bad config:\n%s", out)
			}
			if err == nil {
				t.Fatalf("tlsguard serve exited 0 on a bad config:\n%s", out)
			}
			want := fmt.Sprintf("tlsguard.yaml:%d", tc.line)
			if !strings.Contains(string(out), want) || !strings.Contains(string(out), tc.key) {
				t.Errorf("error output does not name %s and key %q:\n%s", want, tc.key, out)
			}
			if listened.Load() {
				t.Errorf("tlsguard listened on %s before refusing its config", listen)
			}
		})
	}
}
