package app

import (
	"crypto/sha256"
	"errors"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/policy"
)

// policyWatchInterval is how often the policy file is looked at. Stat
// polling is used rather than inotify (fsnotify): it needs no extra
// dependency, and it sees every way editors and deploy tools replace a file
// (write in place, rename over, a symlink switched by a config manager, a
// file on NFS or a bind mount) where inotify watches lose track of a renamed
// or replaced inode. Two stats a few seconds apart cost nothing.
const policyWatchInterval = 2 * time.Second

// policyWatcher returns the watcher that reloads the policy when its file
// changes on disk. serve's main loop calls its poll every
// policyWatchInterval, on the same goroutine as a SIGHUP reload, so the two
// never race over the config or the policy in force. A change is applied
// once the file has looked the same for one interval, so a file caught
// half-written is not loaded; a change takes effect within about two
// intervals. A file that does not load is refused with the error in the log
// and the old policy stays in force, exactly as with SIGHUP.
func (a *App) policyWatcher() *policyWatcher {
	w := newPolicyWatcher(a.cfg.Policy, a.log, a.srv.SetPolicy, a.listenerNames())
	w.load = a.loadPolicy // the same checks as at start-up and on SIGHUP
	w.report = func(err error) { a.reloaded("policy", err, zap.String("policy", w.path)) }
	return w
}

func (a *App) listenerNames() []string {
	var names []string
	for _, l := range a.cfg.ProxyListeners() {
		names = append(names, l.Name)
	}
	return names
}

// policyWatcher polls one policy file.
type policyWatcher struct {
	path      string
	log       *zap.Logger
	apply     func(*policy.Policy)
	listeners map[string]bool
	// load loads the policy file; report logs (and counts) the outcome of
	// a reload. newPolicyWatcher sets plain defaults.
	load   func() (*policy.Policy, error)
	report func(err error)

	seen       fileSig // the last version acted on (loaded or refused)
	pending    fileSig // a new version seen once, waiting to settle
	hasPending bool
	digest     [32]byte // content of the policy in force
	statFailed bool
}

func newPolicyWatcher(path string, log *zap.Logger, apply func(*policy.Policy), listeners []string) *policyWatcher {
	w := &policyWatcher{path: path, log: log, apply: apply, listeners: map[string]bool{}}
	w.load = func() (*policy.Policy, error) { return policy.Load(w.path) }
	w.report = func(err error) {
		if err != nil {
			log.Error("policy reload refused; the old one stays in force", zap.String("policy", w.path), zap.Error(err))
		} else {
			log.Info("policy reloaded", zap.String("policy", w.path))
		}
	}
	for _, l := range listeners {
		w.listeners[l] = true
	}
	// The policy in force was loaded from the file as it is now.
	w.seen, _ = statSig(path)
	if data, err := os.ReadFile(path); err == nil {
		w.digest = sha256.Sum256(data)
		if p, err := policy.Parse(path, data); err == nil {
			w.warnListeners(p)
		}
	}
	return w
}

// follow points the watcher at path after a SIGHUP reload, with the
// config's listener names. When loaded is true the file at path is the
// policy in force now, so the change that SIGHUP already applied is not
// applied twice. When it is false the policy in force is unchanged: a new
// path is watched from its current state (its refusal is already logged),
// and a change pending on the same path is still picked up.
func (w *policyWatcher) follow(path string, listeners []string, loaded bool) {
	w.listeners = map[string]bool{}
	for _, l := range listeners {
		w.listeners[l] = true
	}
	if !loaded && path == w.path {
		return
	}
	w.path = path
	w.hasPending, w.statFailed = false, false
	w.seen, _ = statSig(path)
	if !loaded {
		return
	}
	if data, err := os.ReadFile(path); err == nil {
		w.digest = sha256.Sum256(data)
	}
}

// poll looks at the file once and reloads if it changed and settled. It
// reports whether a new policy was applied.
func (w *policyWatcher) poll() bool {
	sig, err := statSig(w.path)
	if err != nil {
		if !w.statFailed {
			w.log.Error("policy file unreadable; the policy in force stays", zap.String("policy", w.path), zap.Error(err))
			w.statFailed = true
		}
		return false
	}
	w.statFailed = false
	if sig == w.seen {
		w.hasPending = false
		return false
	}
	if !w.hasPending || sig != w.pending {
		w.pending, w.hasPending = sig, true // wait one interval for writes to finish
		return false
	}
	w.hasPending = false
	w.seen = sig
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.log.Info("policy file changed on disk; reloading", zap.String("policy", w.path), zap.String("trigger", "file change"))
		w.report(err)
		return false
	}
	digest := sha256.Sum256(data)
	if digest == w.digest {
		return false // touched, not changed
	}
	w.log.Info("policy file changed on disk; reloading", zap.String("policy", w.path), zap.String("trigger", "file change"))
	p, err := w.load()
	if err != nil {
		w.report(err)
		return false
	}
	w.apply(p)
	w.digest = digest
	w.report(nil)
	w.warnListeners(p)
	return true
}

// warnListeners logs the policy's own warnings (policy check prints the
// same), and listener names in the policy that the config does not have: a
// rule naming one can never match, which is likely a typo.
func (w *policyWatcher) warnListeners(p *policy.Policy) {
	for _, msg := range p.Warnings() {
		w.log.Warn("policy warning", zap.String("policy", w.path), zap.String("warning", msg))
	}
	if len(w.listeners) == 0 {
		return
	}
	for _, n := range p.Listeners() {
		if !w.listeners[n] {
			w.log.Warn("policy names a listener the config does not have; conditions on it never match",
				zap.String("policy", w.path), zap.String("listener", n))
		}
	}
}

// fileSig identifies a version of a file without reading it.
type fileSig struct {
	size  int64
	mtime time.Time
	ino   uint64
	dev   uint64
}

func statSig(path string) (fileSig, error) {
	fi, err := os.Stat(path) // follows symlinks: a switched link is a change
	if err != nil {
		return fileSig{}, err
	}
	if !fi.Mode().IsRegular() {
		return fileSig{}, errors.New("not a regular file")
	}
	sig := fileSig{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		sig.ino, sig.dev = uint64(st.Ino), uint64(st.Dev)
	}
	return sig, nil
}
