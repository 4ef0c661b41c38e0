//go:build unix

package mailbox

import "syscall"

const canWaitReadable = true

// waitReadable waits, within the connection's read deadline, until data
// (or the end of the stream) can be read, without reading it: MSG_PEEK
// leaves the byte in the socket, so no buffer is held while waiting.
func waitReadable(rc syscall.RawConn) error {
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	})
}
