package proxy

import (
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// saslGuard makes every error of a SASL exchange an SMTP reply. The
// mechanism's own errors (a PLAIN payload without its two NULs, an empty
// one) are malformed input from the client; go-smtp would send them as
// "454 4.7.0" with the library's text, a temporary code that invites a
// retry. They are answered as a failed login instead (delayed, counted
// towards throttling), through malformed.
type saslGuard struct {
	sasl.Server
	malformed func() error
}

// Next implements sasl.Server.
func (g saslGuard) Next(response []byte) (challenge []byte, done bool, err error) {
	challenge, done, err = g.Server.Next(response)
	if err == nil {
		return challenge, done, nil
	}
	// go-smtp's writeError uses a bare *smtp.SMTPError as it is, so only
	// that type passes through.
	if _, ok := err.(*smtp.SMTPError); ok {
		return challenge, done, err
	}
	return nil, true, g.malformed()
}
