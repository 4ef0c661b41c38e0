package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Postfix is a private Postfix instance playing the legacy backend: plaintext
// only, on 127.0.0.1:<free port>, trusting 127.0.0.0/8, storing mail for
// example.org and foreign.test in Maildirs the test reads. Its configuration
// is testdata/postfix/ (shared with postfix-backend.sh).
type Postfix struct {
	Addr string // 127.0.0.1:port, plaintext SMTP
	Dir  string // holds conf/, queue/, data/, mail/, maillog

	master *exec.Cmd
	exited chan struct{} // closed when master has exited
}

// Mailboxes known to the backend (testdata/postfix/vmailbox); any other
// address in its domains gets 550 5.1.1 at RCPT time.
const (
	alice  = "alice@example.org"
	bob    = "bob@example.org"
	victim = "victim@example.org"
	carol  = "carol@foreign.test"
	dave   = "dave@foreign.test"
)

const postfixStartTimeout = 20 * time.Second

// startPostfix starts a private Postfix and stops it when the test ends.
// Each extra line is appended to main.cf and overrides the template.
func startPostfix(t testing.TB, mainCF ...string) *Postfix {
	t.Helper()
	requireTool(t, "postfix")
	if os.Geteuid() != 0 {
		msg := "a private Postfix needs root (it starts as root and drops to the postfix user)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken between pick and bind
		p, err := tryStartPostfix(t, mainCF)
		if err == nil {
			return p
		}
		lastErr = err
	}
	t.Fatalf("starting postfix: %v", lastErr)
	return nil
}

func tryStartPostfix(t testing.TB, mainCF []string) (*Postfix, error) {
	// Postfix daemons run as the postfix user and chdir into the queue, so the
	// base must be traversable by it: t.TempDir() is 0700 under a 0700 parent.
	base, err := os.MkdirTemp("", "tlsguard-postfix-")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(base, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	port := freePort(t)
	if err := writePostfixConfig(base, port, mainCF); err != nil {
		return nil, err
	}
	p := &Postfix{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: base}
	if err := p.start(); err != nil {
		p.stop()
		return nil, err
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("postfix log (%s):\n%s", p.Addr, p.Log())
		}
	})
	return p, nil
}

// writePostfixConfig fills the templates of testdata/postfix into base/conf
// and makes the directories Postfix expects, with the owners it insists on.
func writePostfixConfig(base string, port int, extra []string) error {
	vuid, vgid, err := virtualOwner()
	if err != nil {
		return err
	}
	conf := filepath.Join(base, "conf")
	for _, d := range []string{conf, filepath.Join(base, "queue"), filepath.Join(base, "mail")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chown(filepath.Join(base, "mail"), vuid, vgid); err != nil {
		return err
	}
	if err := makeQueueDirs(base); err != nil {
		return err
	}
	repl := strings.NewReplacer("@BASE@", base, "@PORT@", strconv.Itoa(port),
		"@VUID@", strconv.Itoa(vuid), "@VGID@", strconv.Itoa(vgid))
	for _, name := range []string{"main.cf", "master.cf", "vmailbox", "eod_senders"} {
		tmpl, err := os.ReadFile(filepath.Join("testdata", "postfix", name))
		if err != nil {
			return err
		}
		text := repl.Replace(string(tmpl))
		if name == "main.cf" && len(extra) > 0 {
			text += "\n# added by the test\n" + strings.Join(extra, "\n") + "\n"
		}
		if err := os.WriteFile(filepath.Join(conf, name), []byte(text), 0o644); err != nil {
			return err
		}
		// Postfix waits until a table it loads is a couple of seconds old (it
		// might be mid-edit): date it back.
		past := time.Now().Add(-time.Minute)
		if err := os.Chtimes(filepath.Join(conf, name), past, past); err != nil {
			return err
		}
	}
	return nil
}

// makeQueueDirs creates the queue and data directories with the owners and
// modes of Postfix's postfix-files, which is what `postfix check` would do,
// in a fraction of its time.
func makeQueueDirs(base string) error {
	pf, err := user.Lookup("postfix")
	if err != nil {
		return fmt.Errorf("the postfix user is missing (is Debian's postfix installed?): %v", err)
	}
	postdrop, err := user.LookupGroup("postdrop")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(pf.Uid)
	dropGID, _ := strconv.Atoi(postdrop.Gid)
	type dir struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}
	dirs := []dir{
		{"data", uid, 0, 0o700},
		{"queue/pid", 0, 0, 0o755},
		{"queue/maildrop", uid, dropGID, 0o730},
		{"queue/public", uid, dropGID, 0o710},
	}
	for _, d := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		dirs = append(dirs, dir{"queue/" + d, uid, 0, 0o700})
	}
	for _, d := range dirs {
		p := filepath.Join(base, d.path)
		if err := os.MkdirAll(p, d.mode); err != nil {
			return err
		}
		if err := os.Chown(p, d.uid, d.gid); err != nil {
			return err
		}
		if err := os.Chmod(p, d.mode); err != nil { // MkdirAll's mode is masked by umask
			return err
		}
	}
	return nil
}

// virtualOwner is the uid/gid that owns delivered Maildirs: nobody/nogroup.
func virtualOwner() (int, int, error) {
	u, err := user.Lookup("nobody")
	if err != nil {
		return 0, 0, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

func (p *Postfix) confDir() string { return filepath.Join(p.Dir, "conf") }

// start runs master(8) in the foreground as our child, so that the test owns
// its pid. (`postfix start` would daemonize it, and its integrity check takes
// seconds; writePostfixConfig made what the check would have made.)
func (p *Postfix) start() error {
	daemonDir, err := postfixDaemonDir()
	if err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(p.Dir, "master.out"))
	if err != nil {
		return err
	}
	defer out.Close()
	p.master = exec.Command(filepath.Join(daemonDir, "master"), "-c", p.confDir(), "-s", "-e", "3600")
	p.master.Stdout, p.master.Stderr = out, out
	// If the test binary dies (panic, -timeout) its cleanups do not run.
	// Pdeathsig does not help here (master changes credentials, which clears
	// it), so master gets a hard end (-e) past any test timeout, and the next
	// run reaps it (reapOrphanPostfixes).
	if err := p.master.Start(); err != nil {
		return fmt.Errorf("starting master: %v", err)
	}
	p.exited = make(chan struct{})
	go func() { p.master.Wait(); close(p.exited) }()
	if err := waitGreeting(p.Addr, p.exited, postfixStartTimeout); err != nil {
		return fmt.Errorf("postfix on %s: %v\n%s", p.Addr, err, p.Log())
	}
	return nil
}

// Stop stops the backend (as an outage would) and waits until it is gone.
func (p *Postfix) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(); err != nil {
		t.Fatalf("stopping postfix: %v", err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("postfix still accepts connections on %s after stop", p.Addr)
	}
}

// Restart starts a stopped backend again on the same queue and mailboxes.
func (p *Postfix) Restart(t testing.TB) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatalf("restarting postfix: %v", err)
	}
}

func (p *Postfix) stop() error {
	if p.master == nil || p.master.Process == nil {
		return nil
	}
	pid := p.master.Process.Pid
	var err error
	// SIGTERM makes master exit; its children notice "at their
	// convenience", and an idle smtpd still holds the listening socket.
	if terminate(p.master, p.exited, 15*time.Second) {
		err = errors.New("master did not exit on SIGTERM within 15s; killed")
	}
	// master is a session leader (setsid): its process group is its
	// children. Stop them too, so that the port is really closed. (Dead
	// children linger as zombies until init reaps them: harmless, so wait
	// for the port, not for the processes.)
	syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, derr := net.DialTimeout("tcp", p.Addr, time.Second)
		if derr != nil {
			return err
		}
		c.Close()
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			return errors.New("postfix daemons still listening 10s after SIGTERM; killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reapOrphanPostfixes stops the Postfix instances that an earlier test run
// left behind when it died before its cleanups, and deletes their files. An
// instance whose test process (owner.pid) still runs is left alone: it may
// belong to a concurrent run.
func reapOrphanPostfixes() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "tlsguard-postfix-*"))
	for _, dir := range dirs {
		owner, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(string(owner)); err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, "queue", "pid", "master.pid")); err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			// Only that instance's master (the pid may have been reused).
			if err == nil && pid > 1 && bytes.Contains(cmdline, []byte(dir+"/conf")) {
				syscall.Kill(-pid, syscall.SIGTERM) // master and its children
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		os.RemoveAll(dir)
	}
}

// Log is Postfix's own log (maillog_file).
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "maillog"))
	m, _ := os.ReadFile(filepath.Join(p.Dir, "master.out"))
	return string(b) + string(m)
}

// Message is one delivered message, as stored in a Maildir.
type Message struct {
	Path   string
	Raw    []byte
	Header mail.Header
	Body   []byte
}

// Received returns the Received header fields, newest first.
func (m Message) Received() []string {
	var out []string
	for _, r := range m.Header["Received"] {
		out = append(out, strings.Join(strings.Fields(r), " ")) // unfold
	}
	return out
}

// Messages returns what is in a mailbox now, oldest first.
func (p *Postfix) Messages(t testing.TB, mailbox string) []Message {
	t.Helper()
	local, domain, ok := strings.Cut(mailbox, "@")
	if !ok {
		t.Fatalf("mailbox %q has no domain", mailbox)
	}
	dir := filepath.Join(p.Dir, "mail", domain, local)
	var paths []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range ents {
			paths = append(paths, filepath.Join(dir, sub, e.Name()))
		}
	}
	sort.Strings(paths) // Maildir names start with the delivery time
	var msgs []Message
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body := raw[len(raw)-int(bodyLen(raw)):]
		msgs = append(msgs, Message{Path: path, Raw: raw, Header: m.Header, Body: body})
	}
	return msgs
}

// bodyLen is the length of what follows the header's empty line.
func bodyLen(raw []byte) int {
	if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		return len(raw) - i - 2
	}
	return 0
}

// WaitMessages waits until a mailbox holds n messages and returns them.
func (p *Postfix) WaitMessages(t testing.TB, mailbox string, n int) []Message {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		msgs := p.Messages(t, mailbox)
		if len(msgs) >= n {
			if len(msgs) > n {
				t.Fatalf("%s holds %d messages, want %d", mailbox, len(msgs), n)
			}
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d messages after 20s, want %d\npostfix log:\n%s", mailbox, len(msgs), n, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Settle waits until Postfix's queue is empty, so that what was accepted has
// been delivered and what was aborted has been dropped; a negative check
// ("nothing arrived") is only meaningful after it.
func (p *Postfix) Settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		files := p.queued(t)
		if len(files) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix queue not empty after 20s: %v\npostfix log:\n%s", files, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Postfix) queued(t testing.TB) []string {
	var files []string
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		filepath.WalkDir(filepath.Join(p.Dir, "queue", q), func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files = append(files, path)
			}
			return nil
		})
	}
	return files
}

// ExpectEmpty fails if any of the mailboxes holds a message.
func (p *Postfix) ExpectEmpty(t testing.TB, mailboxes ...string) {
	t.Helper()
	for _, mb := range mailboxes {
		if msgs := p.Messages(t, mb); len(msgs) > 0 {
			t.Errorf("%s holds %d message(s), want none; first:\n%s", mb, len(msgs), msgs[0].Raw)
		}
	}
}

// QueueID returns the queue id Postfix gave a message ("... with ESMTP id
// 4Xyz...; ..." in its own Received header, which is the newest).
func (m Message) QueueID() string {
	for _, r := range m.Received() {
		if !strings.Contains(r, "(Postfix)") {
			continue
		}
		f := strings.Fields(r)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "id" {
				return strings.TrimSuffix(f[i+1], ";")
			}
		}
	}
	return ""
}

var (
	daemonDirOnce sync.Once
	daemonDir     string
	daemonDirErr  error
)

// postfixDaemonDir is where master(8) lives (/usr/lib/postfix/sbin on
// Debian), asked once: postconf takes a while.
func postfixDaemonDir() (string, error) {
	daemonDirOnce.Do(func() {
		out, err := exec.Command(postfixCmd("postconf"), "-d", "-h", "daemon_directory").Output()
		if err != nil {
			daemonDirErr = fmt.Errorf("postconf -d daemon_directory: %v", err)
			return
		}
		daemonDir = strings.TrimSpace(string(out))
	})
	return daemonDir, daemonDirErr
}

// postfixCmd finds a Postfix command also when /usr/sbin is not on PATH.
func postfixCmd(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return filepath.Join("/usr/sbin", name)
}

// TestPostfixBackend checks the harness itself, without tlsguard: a direct
// delivery arrives, and an unknown mailbox is refused at RCPT time.
func TestPostfixBackend(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)

	c := dialSMTP(t, pf.Addr)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<nobody@example.org>").expectPrefix(t, "550 5.1.1 ")
	c.cmd("RCPT TO:<"+carol+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: direct\r\n\r\nhello\r\n.\r\n")
	end := c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	msgs := pf.WaitMessages(t, carol, 1)
	if id := msgs[0].QueueID(); id == "" || !strings.Contains(end.text(), id) {
		t.Errorf("end of DATA reply %q does not carry the queue id %q", end.text(), id)
	}
	if got := msgs[0].Header.Get("Subject"); got != "direct" {
		t.Errorf("Subject = %q", got)
	}

	// The strict backend refuses bare LF: proof that tests would notice it.
	c = dialSMTP(t, pf.Addr)
	c.ehlo("client.example.net")
	c.openData(t, "someone@foreign.test", carol)
	c.send("Subject: bare\r\n\r\nbare\nLF\r\n.\r\n")
	c.read().expectPrefix(t, "550 5.5.2 ")
}
