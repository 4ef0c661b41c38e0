//go:build !unix

package mailbox

import "syscall"

// Elsewhere a TCP leg is read like a TLS one (one byte, then the rest).
const canWaitReadable = false

func waitReadable(syscall.RawConn) error { return nil }
