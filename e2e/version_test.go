package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A plain `go build` in a checkout names its commit (Go's embedded VCS
// information), and "-dirty" when the checkout has changes; the image's
// -ldflags -X path is TestContainer's.
func TestVersionFromVCS(t *testing.T) {
	t.Parallel()
	git := requireTool(t, "git")
	clone := filepath.Join(t.TempDir(), "tlsguard")
	// A clone, because Go reads VCS information only where .git is a
	// folder (not in a git worktree).
	if out, err := exec.Command(git, "clone", "--quiet", "--no-local", "..", clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	head, err := exec.Command(git, "-C", clone, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(clone, "README.md"), append([]byte(readFile(filepath.Join(clone, "README.md"))), "\nlocal edit\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "tlsguard")
	// -buildvcs=true: a machine's go env may turn it off (GOFLAGS).
	cmd := exec.Command(goTool(), "build", "-trimpath", "-buildvcs=true", "-o", bin, "./cmd/tlsguard")
	cmd.Dir = clone
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"commit " + strings.TrimSpace(string(head)) + "-dirty", "go " + runtime.Version() + " linux/" + runtime.GOARCH}
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "tlsguard ") || lines[1] != want[0] || lines[2] != want[1] {
		t.Errorf("tlsguard version:\n%s\nwant the lines tlsguard VERSION, %q, %q", out, want[0], want[1])
	}
}
