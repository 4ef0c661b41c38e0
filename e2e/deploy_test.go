package e2e

// The deployment examples: the Dockerfile, docker-compose.yml and
// deploy/tlsguard.service, without a Docker engine (container_test.go runs
// them in one, in the slow suite): the image is reproduced by hand: the same
// static build, the same file layout under a temporary root, the same user
// (distroless nonroot, uid 65532), the same command line and HEALTHCHECK,
// in front of the test Postfix.

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const (
	deployNonrootUID = 65532 // distroless's nonroot user and group
	// The build command of the Dockerfile; the test builds with the same flags.
	deployBuildLine = `CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w -X main.version=$VERSION -X main.commit=$COMMIT" -o /out/tlsguard ./cmd/tlsguard`
	// shutdown_grace's default (README).
	deployDefaultGrace = 30 * time.Second
)

// dockerInstruction is one instruction of a Dockerfile, continuation lines
// joined.
type dockerInstruction struct {
	Cmd  string // upper case: FROM, COPY, ...
	Args string
	Line int
}

// parseDockerfile reads the instructions of a Dockerfile.
func parseDockerfile(t testing.TB, path string) []dockerInstruction {
	t.Helper()
	var out []dockerInstruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(readFile(path), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue // comments may also sit inside a continuation
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start})
		cur.Reset()
	}
	if len(out) == 0 {
		t.Fatalf("%s: no instructions", path)
	}
	return out
}

// finalStage is what follows the last FROM: what the image runs.
func finalStage(ins []dockerInstruction) []dockerInstruction {
	last := 0
	for i, in := range ins {
		if in.Cmd == "FROM" {
			last = i
		}
	}
	return ins[last:]
}

// execForm decodes an instruction's JSON exec form (["a", "b"]).
func execForm(t testing.TB, in dockerInstruction, args string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(args), &v); err != nil {
		t.Fatalf("Dockerfile:%d: %s is not in exec form: %v", in.Line, in.Cmd, err)
	}
	return v
}

// dockerImage is what the final stage of the Dockerfile says about running.
type dockerImage struct {
	Entrypoint, Cmd []string
	Healthcheck     []string // after CMD
	User            string
	Copies          [][]string // the arguments of each COPY, flags included
	Expose          []string
}

func readDockerImage(t testing.TB) dockerImage {
	t.Helper()
	all := parseDockerfile(t, "../Dockerfile")
	var build bool
	for _, in := range all {
		if in.Cmd == "RUN" && strings.Contains(in.Args, deployBuildLine) {
			build = true
		}
	}
	if !build {
		t.Fatalf("Dockerfile: no RUN with %q: update deployBuildLine and the build in this test", deployBuildLine)
	}
	var img dockerImage
	for _, in := range finalStage(all) {
		switch in.Cmd {
		case "ENTRYPOINT":
			img.Entrypoint = execForm(t, in, in.Args)
		case "CMD":
			img.Cmd = execForm(t, in, in.Args)
		case "USER":
			img.User = in.Args
		case "COPY":
			img.Copies = append(img.Copies, strings.Fields(in.Args))
		case "EXPOSE":
			img.Expose = append(img.Expose, strings.Fields(in.Args)...)
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(in.Args, "CMD ")
			if !ok {
				t.Fatalf("Dockerfile:%d: HEALTHCHECK without CMD", in.Line)
			}
			img.Healthcheck = execForm(t, in, cmd)
		}
	}
	if len(img.Entrypoint) == 0 || len(img.Healthcheck) == 0 || img.User == "" {
		t.Fatalf("Dockerfile: final stage lacks ENTRYPOINT, HEALTHCHECK or USER: %+v", img)
	}
	return img
}

// configPath is the --config the image's command line names.
func (img dockerImage) configPath(t testing.TB) string {
	args := append(slices.Clone(img.Entrypoint), img.Cmd...)
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatalf("Dockerfile: no --config in %q", args)
	return ""
}

// deployConfig is the part of a tlsguard.yaml the deployment files depend on.
type deployConfig struct {
	StateDir  string `yaml:"state_dir"`
	Listeners []struct {
		Name    string `yaml:"name"`
		Address string `yaml:"address"`
		TLS     string `yaml:"tls"`
	} `yaml:"listeners"`
	Backend struct {
		Address string `yaml:"address"`
	} `yaml:"backend"`
	Policy        string        `yaml:"policy"`
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	Admin         struct {
		Address string `yaml:"address"`
	} `yaml:"admin"`
}

func readDeployConfig(t testing.TB, path string) deployConfig {
	t.Helper()
	var c deployConfig
	if err := yaml.Unmarshal([]byte(readFile(path)), &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = deployDefaultGrace
	}
	return c
}

// composeFile is the part of docker-compose.yml this test checks.
type composeFile struct {
	Services map[string]struct {
		Build       string            `yaml:"build"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Environment map[string]string `yaml:"environment"`
		Networks    yaml.Node         `yaml:"networks"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		CapDrop         []string `yaml:"cap_drop"`
		CapAdd          []string `yaml:"cap_add"`
		ReadOnly        bool     `yaml:"read_only"`
		StopGracePeriod string   `yaml:"stop_grace_period"`
		NetworkMode     string   `yaml:"network_mode"`
	} `yaml:"services"`
	Networks map[string]struct {
		Internal bool `yaml:"internal"`
		IPAM     struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
	Volumes map[string]any `yaml:"volumes"`
}

// composeMount is one entry of a service's volumes.
type composeMount struct {
	Source, Target string // Source: a repository path for a bind mount, else a volume name
	Bind, ReadOnly bool
}

func parseComposeMount(t testing.TB, v string) composeMount {
	t.Helper()
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		t.Fatalf("docker-compose.yml: volume %q is not SOURCE:TARGET[:MODE]", v)
	}
	m := composeMount{Source: parts[0], Target: parts[1]}
	m.Bind = strings.HasPrefix(m.Source, "./") || strings.HasPrefix(m.Source, "../")
	m.ReadOnly = len(parts) == 3 && slices.Contains(strings.Split(parts[2], ","), "ro")
	if m.Bind {
		m.Source = filepath.Join("..", m.Source) // relative to the compose file, the repository root
	}
	return m
}

// hostPath maps a path inside the tlsguard container to the repository file
// that a bind mount puts there ("" if none does).
func hostPath(mounts []composeMount, inContainer string) string {
	for _, m := range mounts {
		if !m.Bind {
			continue
		}
		if inContainer == m.Target {
			return m.Source
		}
		if rel, ok := strings.CutPrefix(inContainer, m.Target+"/"); ok {
			return filepath.Join(m.Source, rel)
		}
	}
	return ""
}

func listenerPort(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listener address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// privateRanges are where Docker's bridges (and most NAT gateways) live: a
// trusted network that overlaps one may trust every client.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("fc00::/7"),
}

// TestDeployCompose checks docker-compose.yml against the files it mounts:
// they exist and are read-only, the config is the one the image runs and
// its policy passes `tlsguard policy check` and trusts no private range, the
// published ports reach the right listeners, the healthcheck is the image's,
// and Postfix trusts tlsguard's one address on an internal network.
func TestDeployCompose(t *testing.T) {
	t.Parallel()
	var cf composeFile
	dec := yaml.NewDecoder(strings.NewReader(readFile("../docker-compose.yml")))
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	img := readDockerImage(t)
	guard, ok := cf.Services["tlsguard"]
	if !ok {
		t.Fatal("docker-compose.yml: no tlsguard service")
	}
	if guard.Build != "." {
		t.Errorf("tlsguard: build = %q, want \".\" (the Dockerfile at the root)", guard.Build)
	}

	var mounts []composeMount
	stateVolume := false
	for _, v := range guard.Volumes {
		m := parseComposeMount(t, v)
		mounts = append(mounts, m)
		switch {
		case m.Bind:
			if _, err := os.Stat(m.Source); err != nil {
				t.Errorf("tlsguard: mounted %s does not exist in the repository: %v", m.Source, err)
			}
			if !m.ReadOnly {
				t.Errorf("tlsguard: bind mount %q is not read-only", v)
			}
		case m.Target == "/var/lib/tlsguard":
			if _, ok := cf.Volumes[m.Source]; !ok {
				t.Errorf("tlsguard: state volume %q is not declared under volumes:", m.Source)
			}
			stateVolume = true
		default:
			t.Errorf("tlsguard: unexpected volume %q", v)
		}
	}
	if !stateVolume {
		t.Error("tlsguard: no named volume at /var/lib/tlsguard")
	}

	// The config the image runs (--config) must come from the repository.
	inContainer := img.configPath(t)
	configFile := hostPath(mounts, inContainer)
	if configFile == "" {
		t.Fatalf("tlsguard: nothing is mounted at %s (the image's --config)", inContainer)
	}
	cfg := readDeployConfig(t, configFile)
	if cfg.StateDir != "/var/lib/tlsguard" {
		t.Errorf("%s: state_dir = %q, want the state volume /var/lib/tlsguard", configFile, cfg.StateDir)
	}
	policyInContainer := cfg.Policy
	if !filepath.IsAbs(policyInContainer) {
		policyInContainer = filepath.Join(filepath.Dir(inContainer), cfg.Policy)
	}
	policyFile := hostPath(mounts, policyInContainer)
	if policyFile == "" {
		t.Fatalf("tlsguard: the policy %s is not mounted", policyInContainer)
	}
	out, err := exec.Command(tlsguardBinary(t), "policy", "check", policyFile).CombinedOutput()
	if err != nil {
		t.Errorf("tlsguard policy check %s: %v\n%s", policyFile, err, out)
	}
	var pol struct {
		LocalDomains    []string `yaml:"local_domains"`
		TrustedNetworks []string `yaml:"trusted_networks"`
	}
	if err := yaml.Unmarshal([]byte(readFile(policyFile)), &pol); err != nil {
		t.Fatalf("%s: %v", policyFile, err)
	}
	for _, n := range pol.TrustedNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			t.Errorf("%s: trusted network %q: %v", policyFile, n, err)
			continue
		}
		for _, r := range privateRanges {
			if p.Overlaps(r) {
				t.Errorf("%s: trusted network %s overlaps %s: behind Docker's NAT that may trust every client", policyFile, p, r)
			}
		}
	}

	// Published ports: 465 to the implicit TLS listener, 587 to STARTTLS.
	byPort := map[int]string{}
	lowPorts := false
	for _, l := range cfg.Listeners {
		p := listenerPort(t, l.Address)
		byPort[p] = l.TLS
		lowPorts = lowPorts || p < 1024
	}
	published := map[string]string{}
	for _, p := range guard.Ports {
		f := strings.Split(p, ":")
		host, ctr := f[len(f)-2], f[len(f)-1]
		n, _ := strconv.Atoi(ctr)
		mode, ok := byPort[n]
		if !ok {
			t.Errorf("tlsguard: port %q: no listener on %s in %s", p, ctr, configFile)
		}
		published[host] = mode
	}
	if published["465"] != "implicit" || published["587"] != "starttls" {
		t.Errorf("tlsguard: published 465 -> %q, 587 -> %q; want implicit and starttls", published["465"], published["587"])
	}
	if !slices.Contains(guard.CapDrop, "ALL") {
		t.Errorf("tlsguard: cap_drop = %q, want ALL", guard.CapDrop)
	}
	if lowPorts && !slices.Contains(guard.CapAdd, "NET_BIND_SERVICE") {
		t.Errorf("tlsguard: %s listens below 1024 as non-root without cap_add NET_BIND_SERVICE", configFile)
	}
	if !guard.ReadOnly {
		t.Error("tlsguard: read_only is not set")
	}
	for _, p := range img.Expose {
		n, _ := strconv.Atoi(p)
		if _, ok := byPort[n]; !ok {
			t.Errorf("Dockerfile: EXPOSE %s: no listener on it in %s", p, configFile)
		}
	}

	if want := append([]string{"CMD"}, img.Healthcheck...); !slices.Equal(guard.Healthcheck.Test, want) {
		t.Errorf("tlsguard: healthcheck %q, want the Dockerfile's %q", guard.Healthcheck.Test, want)
	}
	if hc := strings.Join(img.Healthcheck, " "); cfg.Admin.Address == "" || !strings.Contains(hc, "//"+cfg.Admin.Address+"/") {
		t.Errorf("HEALTHCHECK %q does not probe admin.address %q of %s", hc, cfg.Admin.Address, configFile)
	}
	if grace, err := time.ParseDuration(guard.StopGracePeriod); err != nil || grace <= cfg.ShutdownGrace {
		t.Errorf("tlsguard: stop_grace_period %q must be longer than shutdown_grace %v", guard.StopGracePeriod, cfg.ShutdownGrace)
	}

	// The backend: a compose service, not published, on an internal network
	// where it trusts tlsguard's fixed address only.
	backendHost, _, err := net.SplitHostPort(cfg.Backend.Address)
	if err != nil {
		t.Fatalf("%s: backend.address: %v", configFile, err)
	}
	backend, ok := cf.Services[backendHost]
	if !ok {
		t.Fatalf("docker-compose.yml: backend.address %q names no service", cfg.Backend.Address)
	}
	if len(backend.Ports) > 0 {
		t.Errorf("%s: publishes %q; the plaintext backend must be reachable by tlsguard only", backendHost, backend.Ports)
	}
	if _, err := os.Stat(filepath.Join("..", backend.Build, "Dockerfile")); err != nil {
		t.Errorf("%s: build %q: %v", backendHost, backend.Build, err)
	}
	var guardNets map[string]struct {
		IPv4 string `yaml:"ipv4_address"`
	}
	if err := guard.Networks.Decode(&guardNets); err != nil {
		t.Fatalf("tlsguard: networks: %v", err)
	}
	var backendNets []string
	if err := backend.Networks.Decode(&backendNets); err != nil {
		t.Fatalf("%s: networks: %v", backendHost, err)
	}
	relay := backend.Environment["RELAY_CLIENTS"]
	shared := 0
	for _, n := range backendNets {
		gn, ok := guardNets[n]
		if !ok {
			continue
		}
		shared++
		if !cf.Networks[n].Internal {
			t.Errorf("network %s between tlsguard and the backend is not internal", n)
		}
		if relay != gn.IPv4+"/32" {
			t.Errorf("%s: RELAY_CLIENTS = %q, want tlsguard's address %s/32 on %s", backendHost, relay, gn.IPv4, n)
		}
		for _, c := range cf.Networks[n].IPAM.Config {
			if s, err := netip.ParsePrefix(c.Subnet); err != nil || !s.Contains(netip.MustParseAddr(gn.IPv4)) {
				t.Errorf("network %s: subnet %q does not hold tlsguard's %s", n, c.Subnet, gn.IPv4)
			}
		}
	}
	if shared != 1 {
		t.Errorf("tlsguard and %s share %d networks, want exactly one (else its name may resolve to an address Postfix does not trust)", backendHost, shared)
	}

	checkPostfixImage(t, filepath.Join("..", backend.Build), pol.LocalDomains)
}

// checkPostfixImage checks deploy/postfix without Docker: main.cf has no
// parameter this Postfix does not know, its local domain is the policy's,
// and the entrypoint is a valid, executable shell script.
func checkPostfixImage(t *testing.T, dir string, localDomains []string) {
	postconf := requireTool(t, "postconf")
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte(readFile(filepath.Join(dir, "main.cf"))), 0o644); err != nil {
		t.Fatal(err)
	}
	// Debian's master.cf is the one the image keeps.
	if master, err := os.ReadFile("/etc/postfix/master.cf"); err == nil {
		os.WriteFile(filepath.Join(conf, "master.cf"), master, 0o644)
	}
	out, err := exec.Command(postconf, "-c", conf, "-n").CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("warning")) {
		t.Errorf("postconf -n on %s/main.cf: %v\n%s", dir, err, out)
	}
	out, err = exec.Command(postconf, "-c", conf, "-h", "virtual_mailbox_domains").Output()
	if got := strings.TrimSpace(string(out)); err != nil || !slices.Equal(strings.Split(got, ", "), localDomains) {
		t.Errorf("%s/main.cf: virtual_mailbox_domains = %q, want the policy's local_domains %q", dir, got, localDomains)
	}
	for _, d := range localDomains {
		if !strings.Contains(readFile(filepath.Join(dir, "vmailbox")), "postmaster@"+d+" ") {
			t.Errorf("%s/vmailbox has no postmaster@%s", dir, d)
		}
	}
	entry := filepath.Join(dir, "entrypoint.sh")
	if !isExecutable(entry) {
		t.Errorf("%s is not executable (the Dockerfile's COPY keeps the mode)", entry)
	}
	if out, err := exec.Command("sh", "-n", entry).CombinedOutput(); err != nil {
		t.Errorf("sh -n %s: %v\n%s", entry, err, out)
	}
}

// TestDeploySystemdUnit runs `systemd-analyze verify` on deploy/tlsguard.service
// (with ExecStart pointed at a built binary, as verify insists that it
// exists) and checks the options that keep it unprivileged.
func TestDeploySystemdUnit(t *testing.T) {
	t.Parallel()
	analyze := requireTool(t, "systemd-analyze")
	unit := readFile("../deploy/tlsguard.service")
	settings := map[string][]string{}
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	want := map[string]string{
		"User":                    "tlsguard",
		"AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter":        "@system-service",
		"StateDirectory":          "tlsguard",
		"ConfigurationDirectory":  "tlsguard",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"RestrictNamespaces":      "yes",
		"RestrictRealtime":        "yes",
		"Restart":                 "on-failure",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"ExecStart":               "/usr/local/bin/tlsguard serve --config /etc/tlsguard/tlsguard.yaml",
	}
	for k, v := range want {
		if got := settings[k]; len(got) != 1 || got[0] != v {
			t.Errorf("tlsguard.service: %s=%q, want %q", k, got, v)
		}
	}
	if stop, err := time.ParseDuration(strings.Join(settings["TimeoutStopSec"], "")); err != nil || stop <= deployDefaultGrace {
		t.Errorf("tlsguard.service: TimeoutStopSec=%q must be longer than shutdown_grace (%v)", settings["TimeoutStopSec"], deployDefaultGrace)
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "tlsguard")
	if err := os.Symlink(tlsguardBinary(t), bin); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tlsguard.service")
	writeFile(t, path, strings.ReplaceAll(unit, "/usr/local/bin/tlsguard", bin))
	cmd := exec.Command(analyze, "verify", path)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDeployImage builds the binary as the Dockerfile does, lays out the
// image's files under a temporary root, runs the image's command line there
// as uid 65532 in front of Postfix, sends mail through 587 and 465 with
// swaks, and runs the HEALTHCHECK command.
func TestDeployImage(t *testing.T) {
	t.Parallel()
	img := readDockerImage(t)
	root, err := os.MkdirTemp("", "tlsguard-deploy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil { // uid 65532 walks it
		t.Fatal(err)
	}
	in := func(p string) string { return filepath.Join(root, p) }

	// The final stage's COPY lines, in order.
	var binary string
	for _, c := range img.Copies {
		var from, chown string
		args := c
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			k, v, _ := strings.Cut(args[0], "=")
			switch k {
			case "--from":
				from = v
			case "--chown":
				chown = v
			default:
				t.Fatalf("Dockerfile: COPY %q: flag %s unknown to this test", c, k)
			}
			args = args[1:]
		}
		if len(args) != 2 {
			t.Fatalf("Dockerfile: COPY %q: want one source and one destination", c)
		}
		src, dst := args[0], in(args[1])
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case from == "build" && src == "/out/tlsguard":
			binary = dst
			deployBuildStatic(t, dst)
		case from == "build" && src == "/out/state":
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case from == "":
			if err := os.WriteFile(dst, []byte(readFile(filepath.Join("..", src))), 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("Dockerfile: COPY %q unknown to this test", c)
		}
		if chown != "" && os.Geteuid() == 0 { // only root can give files away
			uid, gid, _ := strings.Cut(chown, ":")
			u, _ := strconv.Atoi(uid)
			g, _ := strconv.Atoi(gid)
			if err := os.Chown(dst, u, g); err != nil {
				t.Fatal(err)
			}
		}
	}
	if binary == "" {
		t.Fatal("Dockerfile: the final stage copies no /out/tlsguard")
	}
	if img.User != "nonroot:nonroot" && img.User != fmt.Sprintf("%d:%d", deployNonrootUID, deployNonrootUID) {
		t.Fatalf("Dockerfile: USER %s; this test runs as distroless's nonroot (%d)", img.User, deployNonrootUID)
	}
	deployCheckStatic(t, binary)

	// From here on a real Postfix and a real user switch: root only.
	pf := startPostfix(t)
	if os.Geteuid() != 0 {
		t.Skip("running as uid 65532 needs root")
	}
	configFile := in(img.configPath(t))
	cfg := readDeployConfig(t, configFile)
	if cfg.Admin.Address == "" {
		t.Fatalf("%s: no admin.address for the HEALTHCHECK", configFile)
	}
	// Rewrite only where it listens, stores and forwards: loopback ports,
	// the temporary root, the test's Postfix.
	admin := loopbackAddr(t)
	addrs := map[string]string{} // listener name -> test address
	for _, l := range cfg.Listeners {
		addrs[l.Name] = loopbackAddr(t)
	}
	rewriteConfig(t, configFile, func(key, listener string) (string, bool) {
		switch key {
		case "state_dir":
			return in(cfg.StateDir), true
		case "listeners.address":
			return addrs[listener], true
		case "backend.address":
			return pf.Addr, true
		case "admin.address":
			return admin, true
		}
		return "", false
	})
	if err := os.MkdirAll(in("home/nonroot"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(in("home/nonroot"), deployNonrootUID, deployNonrootUID)

	// The image's command line, its absolute paths under root.
	rooted := func(args []string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			if strings.HasPrefix(a, "/") {
				a = in(a)
			}
			out[i] = a
		}
		return out
	}
	asNonroot := func(cmd *exec.Cmd) {
		cmd.Dir = root
		cmd.Env = []string{"PATH=" + in("usr/local/bin") + ":/usr/bin:/bin", "HOME=" + in("home/nonroot")}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: deployNonrootUID, Gid: deployNonrootUID, Groups: []uint32{}},
			Pdeathsig:  syscall.SIGTERM,
		}
	}
	argv := rooted(append(slices.Clone(img.Entrypoint), img.Cmd...))
	logFile := filepath.Join(t.TempDir(), "tlsguard.log")
	logf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	asNonroot(cmd)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %q: %v", argv, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		if terminate(cmd, exited, 40*time.Second) {
			t.Error("tlsguard did not exit within 40s of SIGTERM")
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("config:\n%s\nlog:\n%s", readFile(configFile), readFile(logFile))
		}
	})
	byTLS := map[string]string{}
	for _, l := range cfg.Listeners {
		wait := waitGreeting
		if l.TLS == "implicit" {
			wait = waitListening
		}
		if err := wait(addrs[l.Name], exited, guardStartTimeout); err != nil {
			t.Fatalf("listener %s: %v\nlog:\n%s", l.Name, err, readFile(logFile))
		}
		if _, ok := byTLS[l.TLS]; !ok {
			byTLS[l.TLS] = addrs[l.Name]
		}
	}

	// It runs as nonroot with no capability, and wrote its certificate into
	// the state directory as that user.
	status := readFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	for _, want := range []string{
		fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", deployNonrootUID, deployNonrootUID, deployNonrootUID, deployNonrootUID),
		fmt.Sprintf("Gid:\t%d\t%d\t%d\t%d", deployNonrootUID, deployNonrootUID, deployNonrootUID, deployNonrootUID),
		"CapEff:\t0000000000000000",
	} {
		if !strings.Contains(status, want+"\n") {
			t.Errorf("tlsguard's /proc status lacks %q:\n%s", want, status)
		}
	}
	written := 0
	filepath.WalkDir(in(cfg.StateDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			written++
			if info, err := d.Info(); err == nil && info.Sys().(*syscall.Stat_t).Uid != deployNonrootUID {
				t.Errorf("%s is not owned by %d", p, deployNonrootUID)
			}
		}
		return nil
	})
	if written == 0 {
		t.Errorf("nothing was written to the state directory %s", in(cfg.StateDir))
	}

	// Mail through STARTTLS (587's listener) and implicit TLS (465's).
	swaks := requireTool(t, "swaks")
	send := func(addr, tlsFlag, to string) (string, int) {
		host, port, _ := net.SplitHostPort(addr)
		c := exec.Command(swaks, "--server", host, "--port", port, tlsFlag, "--timeout", "30",
			"--ehlo", "client.example.net", "--from", "someone@example.net", "--to", to,
			"--header", "Subject: deploy "+tlsFlag)
		out, err := c.CombinedOutput()
		t.Logf("swaks %s --to %s:\n%s", tlsFlag, to, out)
		return string(out), deployExitCode(c, err)
	}
	const postmaster = "postmaster@example.org"
	if _, code := send(byTLS["starttls"], "-tls", postmaster); code != 0 {
		t.Errorf("swaks -tls exited %d", code)
	}
	if _, code := send(byTLS["implicit"], "--tlsc", postmaster); code != 0 {
		t.Errorf("swaks --tlsc exited %d", code)
	}
	pf.WaitMessages(t, postmaster, 2)
	// The policy it loaded trusts nobody: relaying without login is refused.
	if out, code := send(byTLS["starttls"], "-tls", carol); code == 0 || !strings.Contains(out, relayDenied) {
		t.Errorf("relay without login: swaks exited %d without %q", code, relayDenied)
	}

	// The HEALTHCHECK command, as the image's user; it fails once tlsguard
	// has stopped.
	health := rooted(img.Healthcheck)
	for i, a := range health {
		health[i] = strings.Replace(a, "//"+cfg.Admin.Address+"/", "//"+admin+"/", 1)
	}
	healthcheck := func() (string, int) {
		c := exec.Command(health[0], health[1:]...)
		asNonroot(c)
		out, err := c.CombinedOutput()
		return string(out), deployExitCode(c, err)
	}
	if out, code := healthcheck(); code != 0 {
		t.Errorf("HEALTHCHECK %q exited %d:\n%s", health, code, out)
	}
	stop()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("tlsguard exited %d after SIGTERM, want 0", code)
	}
	if out, code := healthcheck(); code == 0 {
		t.Errorf("HEALTHCHECK passed with tlsguard stopped:\n%s", out)
	}
}

// deployExitCode is a finished command's exit status; -1 if it did not run.
func deployExitCode(c *exec.Cmd, err error) int {
	if c.ProcessState == nil {
		return -1
	}
	return c.ProcessState.ExitCode()
}

// deployBuildStatic builds ./cmd/tlsguard as the Dockerfile's build stage
// does (deployBuildLine).
func deployBuildStatic(t testing.TB, out string) {
	t.Helper()
	cmd := exec.Command(goTool(), "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/tlsguard")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, b)
	}
}

// deployCheckStatic fails unless bin is a static ELF executable without
// symbols, which is what runs on distroless/static (no libc, no loader).
func deployCheckStatic(t testing.TB, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %v program header: not a static binary", bin, p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %q", bin, libs)
	}
	for _, name := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(name) != nil {
			t.Errorf("%s has a %s section: not built with -ldflags=\"-s -w\"", bin, name)
		}
	}
}

// rewriteConfig replaces scalar values of a tlsguard.yaml in place. replace
// gets a key path (state_dir, listeners.address, backend.address, ...) and,
// for a listener's keys, that listener's name; every key it claims must be
// present, and nothing else changes.
func rewriteConfig(t testing.TB, path string, replace func(key, listener string) (string, bool)) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(readFile(path)), &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	claimed := map[string]int{}
	var walk func(n *yaml.Node, prefix, listener string)
	walk = func(n *yaml.Node, prefix, listener string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, prefix, listener)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "name" && prefix == "listeners." {
					listener = n.Content[i+1].Value
				}
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				key, val := prefix+n.Content[i].Value, n.Content[i+1]
				if val.Kind == yaml.ScalarNode {
					if v, ok := replace(key, listener); ok {
						val.Value, val.Style, val.Tag = v, yaml.DoubleQuotedStyle, "!!str"
						claimed[key]++
					}
					continue
				}
				walk(val, key+".", listener)
			}
		}
	}
	walk(&doc, "", "")
	for _, key := range []string{"state_dir", "listeners.address", "backend.address", "admin.address"} {
		if _, ok := replace(key, ""); ok && claimed[key] == 0 {
			t.Fatalf("%s: no %s to rewrite", path, key)
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
