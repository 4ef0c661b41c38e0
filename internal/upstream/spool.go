package upstream

import (
	"io"
	"os"
	"sync"
)

// spool holds one message, dot-stuffed and ending with the end-of-data dot,
// while the client sends it: in memory up to spoolMemory, then in a
// temporary file. It lets a slow client's message be kept without holding a
// backend connection, and sent once it is complete. Its size is bounded by
// the message size limit, which go-smtp enforces on the client's data.
type spool struct {
	dir  string   // for the file; "" means os.TempDir()
	mem  *[]byte  // pooled; nil once given back
	file *os.File // nil until the message outgrows mem
	err  error    // sticky write error
}

// spoolMemory is how much of a message is kept in memory before it goes to
// a file: the typical message (a few KB) never touches the disk, and a
// DATA in progress holds at most this much beyond its copy buffers.
const spoolMemory = 64 << 10

var spoolBufs = sync.Pool{New: func() any { b := make([]byte, 0, spoolMemory); return &b }}

func newSpool(dir string) *spool {
	return &spool{dir: dir, mem: spoolBufs.Get().(*[]byte)}
}

// Write keeps p; past spoolMemory everything moves to the file. A failure
// (disk full) is sticky.
func (s *spool) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.file == nil && len(*s.mem)+len(p) <= spoolMemory {
		*s.mem = append(*s.mem, p...)
		return len(p), nil
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "tlsguard-spool-")
		if err != nil {
			s.err = err
			return 0, err
		}
		// Unlinked at once: the open file lives until Close, and nothing is
		// left on disk whatever happens to the session or the process.
		os.Remove(f.Name())
		s.file = f
		if _, err := f.Write(*s.mem); err != nil {
			s.err = err
			return 0, err
		}
	}
	n, err := s.file.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}

// WriteTo sends the whole message to w, from the start.
func (s *spool) WriteTo(w io.Writer) (int64, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.file == nil {
		n, err := w.Write(*s.mem)
		return int64(n), err
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	buf := (*s.mem)[:spoolMemory] // the memory part is in the file too
	return io.CopyBuffer(onlyWriter{w}, s.file, buf)
}

// onlyWriter hides a ReaderFrom, so io.CopyBuffer uses the buffer given.
type onlyWriter struct{ io.Writer }

// Close gives the memory back and closes (so frees) the file.
func (s *spool) Close() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
	if s.mem != nil {
		*s.mem = (*s.mem)[:0]
		spoolBufs.Put(s.mem)
		s.mem = nil
	}
}
