package e2e

// The image and docker-compose.yml for real: a Docker engine of the test's
// own (dockerd from Debian's docker.io, no bridge, no iptables, host
// networking only), base images the test builds itself because no image
// registry can be reached, the Dockerfile as it is, and Compose as Debian
// ships it. Slow (a Debian root, a Go build in the image, a Postfix image):
// it runs only with TLSGUARD_SLOW=1, which .ci/run sets in its own step.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const (
	// Kept between runs: the debootstrapped root and the engine's data
	// (base images, build cache), so that a second run skips the slow parts.
	containerCache = "/var/cache/tlsguard-e2e"
	// The names the Dockerfile's FROM lines use; the test provides them.
	imageDebian     = "debian:bookworm-slim"
	imageGo         = "golang:1.26-bookworm"
	imageDistroless = "gcr.io/distroless/static-debian12:nonroot"
	imageTLSGuard   = "tlsguard:e2e"
	// The admin address of the image's HEALTHCHECK; with host networking it
	// is the host's loopback port.
	containerAdmin = "127.0.0.1:9587"
)

// dockerEngine is a dockerd the test started, and the client to talk to it.
type dockerEngine struct {
	client string // the docker CLI
	host   string // DOCKER_HOST
	dir    string // exec root, socket, log
}

// slowSuite skips the test unless TLSGUARD_SLOW is set.
func slowSuite(t *testing.T) {
	t.Helper()
	if os.Getenv("TLSGUARD_SLOW") == "" {
		t.Skip("slow test: set TLSGUARD_SLOW=1 to run it (.ci/run does, after the default suite)")
	}
}

// engineUnavailable skips the test, or fails it under CI.
func engineUnavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := "no Docker engine can start here: " + fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// startDockerEngine starts a private dockerd with the cached data root. A
// lock on the cache keeps two test runs from sharing it.
func startDockerEngine(t *testing.T) *dockerEngine {
	t.Helper()
	if os.Geteuid() != 0 {
		engineUnavailable(t, "dockerd needs root")
	}
	dockerd := requireTool(t, "dockerd")
	client := "/usr/bin/docker" // Debian's, of the engine's version
	if !isExecutable(client) {
		client = requireTool(t, "docker")
	}
	if err := os.MkdirAll(containerCache, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(containerCache, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	dir, err := os.MkdirTemp("", "tlsguard-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// dockerd leaves its network namespace mounted in the exec root.
		syscall.Unmount(filepath.Join(dir, "exec", "netns", "default"), syscall.MNT_DETACH)
		os.RemoveAll(dir)
	})
	d := &dockerEngine{client: client, host: "unix://" + filepath.Join(dir, "docker.sock"), dir: dir}
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dockerd, "--iptables=false", "--ip6tables=false", "--bridge=none",
		"--data-root", filepath.Join(containerCache, "docker"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", d.host)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		engineUnavailable(t, "%v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		if !terminate(cmd, exited, 60*time.Second) {
			return
		}
		t.Errorf("dockerd did not stop within 60s of SIGTERM")
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := d.run(t, nil, "version"); err == nil {
			return d
		}
		select {
		case <-exited:
			engineUnavailable(t, "dockerd exited:\n%s", readFile(filepath.Join(dir, "dockerd.log")))
		default:
		}
		if time.Now().After(deadline) {
			engineUnavailable(t, "dockerd did not answer within 90s:\n%s", readFile(filepath.Join(dir, "dockerd.log")))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// env is the environment of a client command: this engine, BuildKit (the
// Dockerfile's $BUILDPLATFORM needs it) and Debian's client first in PATH.
func (d *dockerEngine) env() []string {
	return append(os.Environ(), "DOCKER_HOST="+d.host, "DOCKER_BUILDKIT=1", "COMPOSE_DOCKER_CLI_BUILD=1",
		"PATH=/usr/bin:/usr/sbin:"+os.Getenv("PATH"))
}

// run runs the docker client with stdin and returns its combined output.
func (d *dockerEngine) run(t *testing.T, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.client, args...)
	cmd.Env, cmd.Stdin = d.env(), stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs the docker client and fails the test on an error.
func (d *dockerEngine) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.run(t, nil, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// label returns an image's label, "" if the image or label is missing.
func (d *dockerEngine) label(t *testing.T, image, key string) string {
	out, err := d.run(t, nil, "image", "inspect", "-f", fmt.Sprintf("{{index .Config.Labels %q}}", key), image)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// debianRoot returns a tar of a minimal Debian bookworm root, made once by
// debootstrap and cached.
func debianRoot(t *testing.T) string {
	t.Helper()
	tarball := filepath.Join(containerCache, "bookworm-minbase.tar")
	if _, err := os.Stat(tarball); err == nil {
		return tarball
	}
	debootstrap := requireTool(t, "debootstrap")
	root, err := os.MkdirTemp("", "tlsguard-debootstrap-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, debootstrap, "--variant=minbase", "bookworm", root, "http://deb.debian.org/debian").CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, out)
	}
	tmp := tarball + ".tmp"
	if out, err := exec.Command("tar", "-C", root, "-cf", tmp, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		t.Fatal(err)
	}
	return tarball
}

// baseImages provides the Dockerfiles' FROM images under their names:
// Debian from debootstrap, the Go image as that plus this machine's Go
// toolchain and CA certificates (for the module proxy), and a stand-in for
// distroless (below). Each carries a label saying what it was made from,
// so a cached one is rebuilt only when that changes.
func (d *dockerEngine) baseImages(t *testing.T) {
	t.Helper()
	root := debianRoot(t)
	st, err := os.Stat(root)
	if err != nil {
		t.Fatal(err)
	}
	rootKey := fmt.Sprintf("%d-%d", st.Size(), st.ModTime().Unix())
	if d.label(t, imageDebian, "tlsguard.e2e") != rootKey {
		f, err := os.Open(root)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if out, err := d.run(t, f, "import", "--change", "LABEL tlsguard.e2e="+rootKey,
			"--change", "CMD [\"bash\"]", "-", imageDebian); err != nil {
			t.Fatalf("docker import %s: %v\n%s", imageDebian, err, out)
		}
	}
	goRoot := filepath.Dir(filepath.Dir(goTool())) // this machine's toolchain
	goKey := rootKey + "-" + runtime.Version()
	if d.label(t, imageGo, "tlsguard.e2e") != goKey {
		// The Debian root with the toolchain and CA bundle added, as one tar.
		pr, pw := io.Pipe()
		go func() {
			pw.CloseWithError(func() error {
				f, err := os.Open(root)
				if err != nil {
					return err
				}
				defer f.Close()
				tw := tar.NewWriter(pw)
				tr := tar.NewReader(f)
				for {
					h, err := tr.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						return err
					}
					if err := tw.WriteHeader(h); err != nil {
						return err
					}
					if _, err := io.Copy(tw, tr); err != nil {
						return err
					}
				}
				if err := tarTree(tw, goRoot, "usr/local/go"); err != nil {
					return err
				}
				if err := tarTree(tw, "/etc/ssl/certs/ca-certificates.crt", "etc/ssl/certs/ca-certificates.crt"); err != nil {
					return err
				}
				return tw.Close()
			}())
		}()
		out, err := d.run(t, pr, "import", "--change", "LABEL tlsguard.e2e="+goKey,
			"--change", "ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"--change", "ENV GOPATH=/go", "--change", "ENV GOTOOLCHAIN=local", "--change", "WORKDIR /go", "-", imageGo)
		pr.Close()
		if err != nil {
			t.Fatalf("docker import %s: %v\n%s", imageGo, err, out)
		}
	}
	d.distroless(t, runtime.GOARCH)
}

// tarTree adds the file or tree at src to tw under name.
func tarTree(tw *tar.Writer, src, name string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		h.Name = filepath.Join(name, rel)
		h.Uname, h.Gname, h.Uid, h.Gid = "", "", 0, 0
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
}

// distroless loads a stand-in for gcr.io/distroless/static-debian12:nonroot
// for arch: FROM scratch with what that image gives a static binary,
// /etc/passwd and /etc/group with nonroot (65532), CA certificates,
// zoneinfo and /tmp. It is loaded as an image archive because `docker
// import` cannot set another architecture.
func (d *dockerEngine) distroless(t *testing.T, arch string) {
	t.Helper()
	key := "distroless-" + arch
	if d.label(t, imageDistroless, "tlsguard.e2e") == key {
		return
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	add := func(name string, mode int64, uid int, body string) {
		typ := byte(tar.TypeReg)
		if strings.HasSuffix(name, "/") {
			typ = tar.TypeDir
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Uid: uid, Gid: uid, Typeflag: typ, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	for _, dir := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "usr/", "usr/share/", "var/", "var/lib/"} {
		add(dir, 0o755, 0, "")
	}
	add("tmp/", 0o1777, 0, "")
	add("home/", 0o755, 0, "")
	add("home/nonroot/", 0o700, deployNonrootUID, "")
	add("etc/passwd", 0o644, 0, "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
	add("etc/group", 0o644, 0, "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")
	add("etc/ssl/certs/ca-certificates.crt", 0o644, 0, readFile("/etc/ssl/certs/ca-certificates.crt"))
	if err := tarTree(tw, "/usr/share/zoneinfo", "usr/share/zoneinfo"); err != nil {
		t.Fatalf("zoneinfo (Debian: tzdata): %v", err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": arch, "os": "linux", "created": "1970-01-01T00:00:00Z",
		"config": map[string]any{
			"User": "65532", "WorkingDir": "/home/nonroot",
			"Env":    []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
			"Labels": map[string]string{"tlsguard.e2e": key},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(sum[:])}},
	})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{imageDistroless}, "Layers": []string{"layer.tar"}}})
	var archive bytes.Buffer
	aw := tar.NewWriter(&archive)
	for _, f := range []struct {
		name string
		body []byte
	}{{"layer.tar", layer.Bytes()}, {"config.json", config}, {"manifest.json", manifest}} {
		aw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(0, 0)})
		aw.Write(f.body)
	}
	aw.Close()
	if out, err := d.run(t, &archive, "load"); err != nil {
		t.Fatalf("docker load (distroless stand-in, %s): %v\n%s", arch, err, out)
	}
}

// gitVersion is what the build passes as VERSION and COMMIT.
func gitVersion(t *testing.T) (version, commit string) {
	t.Helper()
	v, err := exec.Command("git", "-C", "..", "describe", "--tags", "--always", "--dirty").Output()
	c, err2 := exec.Command("git", "-C", "..", "rev-parse", "HEAD").Output()
	if err != nil || err2 != nil {
		t.Fatalf("git describe / rev-parse in the checkout: %v %v", err, err2)
	}
	return strings.TrimSpace(string(v)), strings.TrimSpace(string(c))
}

// buildImage builds the repository's Dockerfile, unchanged, for platform
// ("" for the engine's own).
func (d *dockerEngine) buildImage(t *testing.T, tag, platform, version, commit string) {
	t.Helper()
	args := []string{"build", "--network", "host", "-t", tag, "--build-arg", "VERSION=" + version, "--build-arg", "COMMIT=" + commit}
	if platform != "" {
		args = append(args, "--platform", platform)
	}
	d.must(t, append(args, "..")...)
}

// containerLogs returns a container's output.
func (d *dockerEngine) containerLogs(t *testing.T, name string) string {
	out, _ := d.run(t, nil, "logs", name)
	return out
}

// waitContainer polls a docker inspect format until it prints want.
func (d *dockerEngine) waitContainer(t *testing.T, name, format, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, _ := d.run(t, nil, "inspect", "-f", format, name)
		if strings.TrimSpace(out) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s is %q after %v, want %q\nlogs:\n%s", name, format, strings.TrimSpace(out), within, want, d.containerLogs(t, name))
		}
		time.Sleep(time.Second)
	}
}

// waitLog waits until a container's output contains s.
func (d *dockerEngine) waitLog(t *testing.T, name, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(d.containerLogs(t, name), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q in the log after %v:\n%s", name, s, within, d.containerLogs(t, name))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// containerConfig writes deploy/container.yaml and policies/default.yaml
// into a folder for /etc/tlsguard, rewritten only where it listens and
// forwards: loopback ports and the given backend. It returns the folder and
// the listener addresses by name.
func containerConfig(t *testing.T, backend string) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // uid 65532 reads it
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "tlsguard.yaml")
	writeFile(t, cfgFile, readFile("../deploy/container.yaml"))
	if err := os.MkdirAll(filepath.Join(dir, "policies"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "policies", "default.yaml"), readFile("../policies/default.yaml"))
	cfg := readDeployConfig(t, cfgFile)
	if cfg.Admin.Address != containerAdmin {
		t.Fatalf("deploy/container.yaml: admin.address %q, the HEALTHCHECK probes %s", cfg.Admin.Address, containerAdmin)
	}
	addrs := map[string]string{}
	for _, l := range cfg.Listeners {
		addrs[l.Name] = loopbackAddr(t)
	}
	rewriteConfig(t, cfgFile, func(key, listener string) (string, bool) {
		switch key {
		case "listeners.address":
			return addrs[listener], true
		case "backend.address":
			return backend, true
		}
		return "", false
	})
	for _, f := range []string{cfgFile, filepath.Join(dir, "policies", "default.yaml"), filepath.Join(dir, "policies")} {
		os.Chmod(f, 0o755)
	}
	return dir, addrs
}

// containerSwaks sends one message through addr with swaks, implicit TLS
// or STARTTLS; the self-signed certificate is not verified.
func containerSwaks(t *testing.T, addr string, implicit bool, to string) {
	t.Helper()
	swaks := requireTool(t, "swaks")
	host, port, _ := strings.Cut(addr, ":")
	tlsArg := "--tls"
	if implicit {
		tlsArg = "--tls-on-connect"
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, swaks, "--server", host, "--port", port, tlsArg, "--ehlo", "client.example.net",
		"--from", "someone@example.net", "--to", to, "--timeout", "30").CombinedOutput()
	t.Logf("swaks %s %s\n%s", addr, tlsArg, out)
	if err != nil {
		t.Fatalf("swaks through %s (%s): %v", addr, tlsArg, err)
	}
}

// adminPortFree fails the test when something else holds the HEALTHCHECK's
// port on the host's loopback.
func adminPortFree(t *testing.T) {
	t.Helper()
	if err := waitListening(containerAdmin, nil, 100*time.Millisecond); err == nil {
		t.Fatalf("%s is in use on this host; the image's HEALTHCHECK needs it (host networking)", containerAdmin)
	}
}

// TestContainer builds the image from the Dockerfile and runs it as the
// README says, read-only, every capability dropped, in front of Postfix;
// cross-builds it for arm64; and brings up docker-compose.yml.
func TestContainer(t *testing.T) {
	slowSuite(t)
	requireTool(t, "swaks")
	d := startDockerEngine(t)
	// Keep the cache bounded: what earlier runs built and no tag names.
	t.Cleanup(func() {
		d.run(t, nil, "image", "prune", "-f")
		d.run(t, nil, "builder", "prune", "-f", "--keep-storage", "4GB")
	})
	d.baseImages(t)
	version, commit := gitVersion(t)
	d.buildImage(t, imageTLSGuard, "", version, commit)

	t.Run("VersionAndLabels", func(t *testing.T) {
		out := d.must(t, "run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL", imageTLSGuard, "version")
		want := fmt.Sprintf("tlsguard %s\ncommit %s\ngo %s linux/%s\n", version, commit, runtime.Version(), runtime.GOARCH)
		if out != want {
			t.Errorf("tlsguard version in the image:\n%s\nwant:\n%s", out, want)
		}
		labels := map[string]string{
			"org.opencontainers.image.version":  version,
			"org.opencontainers.image.revision": commit,
			"org.opencontainers.image.source":   "https://github.com/tlsguard/tlsguard",
		}
		for k, v := range labels {
			if got := d.label(t, imageTLSGuard, k); got != v {
				t.Errorf("label %s = %q, want %q", k, got, v)
			}
		}
	})

	t.Run("Serve", func(t *testing.T) {
		adminPortFree(t)
		pf := startPostfix(t)
		dir, addrs := containerConfig(t, pf.Addr)
		name := fmt.Sprintf("tlsguard-e2e-%d", os.Getpid())
		d.run(t, nil, "rm", "-f", "-v", name)
		// The image's HEALTHCHECK command, probed every 2s instead of 30s.
		d.must(t, "run", "-d", "--name", name, "--read-only", "--cap-drop", "ALL",
			"--security-opt", "no-new-privileges", "--network", "host", "--health-interval", "2s",
			"-v", dir+":/etc/tlsguard:ro", imageTLSGuard)
		t.Cleanup(func() { d.run(t, nil, "rm", "-f", "-v", name) })
		for n, a := range addrs {
			// Listening, as implicit TLS greets only after a handshake.
			if err := waitListening(a, nil, 60*time.Second); err != nil {
				t.Fatalf("listener %s: %v\n%s", n, err, d.containerLogs(t, name))
			}
		}
		containerSwaks(t, addrs["submissions"], true, alice)
		containerSwaks(t, addrs["submission"], false, alice)
		pf.WaitMessages(t, alice, 2)
		d.waitContainer(t, name, "{{.State.Health.Status}}", "healthy", 2*time.Minute)

		d.must(t, "kill", "-s", "HUP", name)
		d.waitLog(t, name, `"msg":"config reloaded"`, time.Minute)
		containerSwaks(t, addrs["submissions"], true, bob)
		pf.WaitMessages(t, bob, 1)

		d.must(t, "stop", "-t", "40", name)
		if code := strings.TrimSpace(d.must(t, "inspect", "-f", "{{.State.ExitCode}}", name)); code != "0" {
			t.Errorf("exit code %s after docker stop, want 0\n%s", code, d.containerLogs(t, name))
		}
		if logs := d.containerLogs(t, name); !strings.Contains(logs, `"msg":"shutting down"`) {
			t.Errorf("no shutting down line after SIGTERM:\n%s", logs)
		}
	})

	t.Run("Compose", func(t *testing.T) { composeUp(t, d) })

	// Last: the arm64 stand-in replaces the amd64 one under the same name.
	t.Run("CrossBuildArm64", func(t *testing.T) {
		qemu := requireTool(t, "qemu-aarch64-static")
		d.distroless(t, "arm64")
		t.Cleanup(func() { d.distroless(t, runtime.GOARCH) })
		tag := imageTLSGuard + "-arm64"
		d.buildImage(t, tag, "linux/arm64", version, commit)
		// The id is the last line, after a warning about the platform.
		created := strings.Fields(d.must(t, "create", tag))
		id := created[len(created)-1]
		t.Cleanup(func() { d.run(t, nil, "rm", id) })
		bin := filepath.Join(t.TempDir(), "tlsguard")
		d.must(t, "cp", id+":/usr/local/bin/tlsguard", bin)
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != elf.EM_AARCH64 {
			t.Errorf("the arm64 image's binary is for %v", f.Machine)
		}
		f.Close()
		out, err := exec.Command(qemu, bin, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-aarch64-static tlsguard version: %v\n%s", err, out)
		}
		if want := fmt.Sprintf("tlsguard %s\ncommit %s\ngo %s linux/arm64\n", version, commit, runtime.Version()); string(out) != want {
			t.Errorf("arm64 tlsguard version:\n%s\nwant:\n%s", out, want)
		}
	})
}

// composeUp brings up docker-compose.yml with Debian's docker-compose. The
// file is used as it is, but for what host networking needs (this engine
// has no bridge, and tests talk only over loopback): each service gets
// network_mode: host instead of ports and networks, as the file's header
// describes; Postfix listens on a loopback port; tlsguard gets the config
// of containerConfig.
func composeUp(t *testing.T, d *dockerEngine) {
	compose := requireTool(t, "docker-compose")
	adminPortFree(t)
	var file map[string]any
	if err := yaml.Unmarshal([]byte(readFile("../docker-compose.yml")), &file); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	repo, _ := filepath.Abs("..")
	services := file["services"].(map[string]any)
	backendPort := freePort(t)
	backend := fmt.Sprintf("127.0.0.1:%d", backendPort)
	dir, addrs := containerConfig(t, backend)
	project := fmt.Sprintf("tlsguard-e2e-%d", os.Getpid())
	for name, s := range services {
		svc := s.(map[string]any)
		delete(svc, "ports")
		delete(svc, "networks")
		delete(svc, "hostname") // not allowed with host networking
		svc["network_mode"] = "host"
		// Built here beforehand with host networking; compose only runs them.
		svc["image"] = project + "-" + name + ":e2e"
		build, _ := svc["build"].(string)
		svc["build"] = filepath.Join(repo, build)
		if vols, ok := svc["volumes"].([]any); ok {
			for i, v := range vols {
				src, rest, _ := strings.Cut(v.(string), ":")
				switch src {
				case "./deploy/container.yaml":
					src = filepath.Join(dir, "tlsguard.yaml")
				case "./policies":
					src = filepath.Join(dir, "policies")
				}
				vols[i] = src + ":" + rest
			}
		}
	}
	pfSvc := services["mail-backend"].(map[string]any)
	pfSvc["environment"] = map[string]any{"RELAY_CLIENTS": "127.0.0.1/32"}
	// Loopback only, on a free port; then the image's own entrypoint.
	pfSvc["entrypoint"] = []string{"/bin/sh", "-c", fmt.Sprintf(
		"postconf -e inet_interfaces=loopback-only && postconf -M smtp/inet='%s inet n - n - - smtpd' && exec /usr/local/bin/postfix-backend", backend)}
	delete(file, "networks")
	out, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	composeFile := filepath.Join(t.TempDir(), "docker-compose.yml")
	writeFile(t, composeFile, string(out))
	t.Logf("derived compose file:\n%s", out)

	d.must(t, "tag", imageTLSGuard, project+"-tlsguard:e2e")
	d.must(t, "build", "--network", "host", "-t", project+"-mail-backend:e2e", filepath.Join(repo, "deploy", "postfix"))
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, compose, append([]string{"-f", composeFile, "-p", project}, args...)...)
		cmd.Env = d.env()
		b, err := cmd.CombinedOutput()
		t.Logf("docker-compose %s\n%s", strings.Join(args, " "), b)
		return string(b), err
	}
	t.Cleanup(func() { run("down", "-v", "-t", "40") })
	if _, err := run("up", "-d", "--no-build"); err != nil {
		t.Fatalf("docker-compose up: %v", err)
	}
	guard := project + "_tlsguard_1"
	if out, err := run("ps", "-q", "tlsguard"); err == nil && strings.TrimSpace(out) != "" {
		guard = strings.TrimSpace(out)
	}
	d.waitContainer(t, guard, "{{.State.Health.Status}}", "healthy", 3*time.Minute)
	containerSwaks(t, addrs["submissions"], true, "postmaster@example.org")
	containerSwaks(t, addrs["submission"], false, "postmaster@example.org")
	deadline := time.Now().Add(time.Minute)
	for {
		logs, _ := run("logs", "mail-backend")
		if strings.Count(logs, "to=<postmaster@example.org>") >= 2 && strings.Contains(logs, "status=sent") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the backend did not deliver both messages:\n%s", logs)
		}
		time.Sleep(time.Second)
	}
	if _, err := run("kill", "-s", "HUP", "tlsguard"); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, guard, `"msg":"config reloaded"`, time.Minute)
	if _, err := run("stop", "-t", "40"); err != nil {
		t.Fatal(err)
	}
	if code := strings.TrimSpace(d.must(t, "inspect", "-f", "{{.State.ExitCode}}", guard)); code != "0" {
		t.Errorf("tlsguard exit code %s after compose stop", code)
	}
}
