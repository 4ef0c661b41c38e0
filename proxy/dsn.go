package proxy

import "github.com/emersion/go-smtp"

// DSNMode says whose delivery status notification requests (RFC 3461) are
// forwarded to the backend. A report goes to the MAIL FROM address, which
// nothing checks for a client that is not logged in: a forged sender and
// NOTIFY=SUCCESS make the backend mail a report, carrying the client's
// headers, to anyone (backscatter).
type DSNMode string

// DSN modes.
const (
	// DSNAuthenticated (the default) forwards DSN requests of a logged-in
	// user or a client in the policy's trusted_networks in full; from
	// anyone else NOTIFY=SUCCESS and NOTIFY=DELAY are removed.
	DSNAuthenticated DSNMode = "authenticated"
	// DSNAll forwards every client's DSN requests.
	DSNAll DSNMode = "all"
	// DSNNone never offers DSN, so no client can send its parameters.
	DSNNone DSNMode = "none"
)

// dsnNotify returns the NOTIFY values forwarded for one recipient, and the
// ones removed.
//
// From a client whose sender nobody vouches for (trusted false), only the
// values that make the backend report less pass: FAILURE and NEVER. SUCCESS
// would make every accepted message a report to the forged sender, DELAY
// one per delayed message. When nothing is left, NEVER is forwarded, not
// no NOTIFY, which a backend may read as FAILURE or FAILURE,DELAY (RFC
// 3461 4.1), conditions the client did not ask for; what it asked minus
// what is refused is no report at all. RET, ENVID and ORCPT pass
// unchanged: they only shape the failure reports that remain, which the
// backend sends for any message it accepted and could not deliver, DSN or
// not.
func dsnNotify(mode DSNMode, trusted bool, notify []smtp.DSNNotify) (kept, removed []smtp.DSNNotify) {
	switch {
	case len(notify) == 0:
		return nil, nil
	case mode == DSNNone:
		// go-smtp refuses NOTIFY when DSN is not advertised; never forward it.
		return nil, notify
	case mode == DSNAll, trusted:
		return notify, nil
	}
	for _, n := range notify {
		switch n {
		case smtp.DSNNotifySuccess, smtp.DSNNotifyDelayed:
			removed = append(removed, n)
		default:
			kept = append(kept, n)
		}
	}
	if len(removed) == 0 {
		return notify, nil
	}
	if len(kept) == 0 {
		kept = []smtp.DSNNotify{smtp.DSNNotifyNever}
	}
	return kept, removed
}

// rcptOptions returns the RCPT options to forward for this session: the
// client's, less the DSN requests it may not make (noted in tx for the
// transaction log). A logged-in user, or a client the policy lets relay
// without login, could send anyone a message directly; a report to its
// sender gives it nothing more.
func (s *session) rcptOptions(tx *transaction, opts *smtp.RcptOptions) *smtp.RcptOptions {
	if opts == nil || len(opts.Notify) == 0 {
		return opts
	}
	trusted := s.user != "" || tx.pol.IsTrusted(s.conn.ip)
	kept, removed := dsnNotify(s.srv.cfg.DSN, trusted, opts.Notify)
	if len(removed) == 0 {
		return opts
	}
	fwd := *opts
	fwd.Notify = kept
	for _, n := range removed {
		tx.noteDSNStripped("NOTIFY=" + string(n))
	}
	return &fwd
}

// noteDSNStripped records a stripped DSN parameter once per transaction.
func (tx *transaction) noteDSNStripped(param string) {
	for _, p := range tx.dsnStrip {
		if p == param {
			return
		}
	}
	tx.dsnStrip = append(tx.dsnStrip, param)
}
