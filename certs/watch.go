package certs

import (
	"os"
	"time"

	"go.uber.org/zap"
)

// fileState is what the watcher compares between polls. Polling stat (not
// inotify) follows symlinks, so it sees certbot's live/ links and
// Kubernetes' ..data swaps, and survives editors that replace a file by
// rename, all of which lose an inotify watch on the old inode.
type fileState struct {
	info os.FileInfo
	err  string
}

func (a fileState) same(b fileState) bool {
	if a.err != b.err || (a.info == nil) != (b.info == nil) {
		return false
	}
	if a.info == nil {
		return true
	}
	return a.info.ModTime().Equal(b.info.ModTime()) &&
		a.info.Size() == b.info.Size() &&
		a.info.Mode() == b.info.Mode() &&
		os.SameFile(a.info, b.info)
}

type snapshot []fileState

func (a snapshot) same(b snapshot) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].same(b[i]) {
			return false
		}
	}
	return true
}

func (m *Manager) snapshot() snapshot {
	var s snapshot
	for _, p := range m.cfg.Certificates {
		for _, path := range []string{p.Cert, p.Key} {
			fi, err := os.Stat(path)
			st := fileState{info: fi}
			if err != nil {
				st.err = err.Error()
			}
			s = append(s, st)
		}
	}
	return s
}

// startWatch polls the static files and reloads once a change has settled
// (the files were the same at two polls in a row), so a cert written before
// its key is not tried half-way. A failed reload keeps the old pair and is
// not retried until the files change again.
func (m *Manager) startWatch() {
	every := m.cfg.WatchInterval
	if every <= 0 {
		return // only Reload re-reads the files
	}
	last := m.snapshot()
	m.done.Add(1)
	go func() {
		defer m.done.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		var pending snapshot
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			cur := m.snapshot()
			switch {
			case cur.same(last):
				pending = nil
			case pending != nil && cur.same(pending):
				m.log.Info("certificate files changed; reloading", zap.Duration("watch_interval", every))
				if err := m.Reload(); err != nil {
					m.log.Error("certificate reload refused; the old certificates stay in force", zap.Error(err))
				}
				last, pending = cur, nil
			default:
				pending = cur
			}
		}
	}()
}
