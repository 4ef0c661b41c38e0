package proxy

import (
	"errors"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// loginServer is the server side of the obsolete but ubiquitous LOGIN
// mechanism (draft-murchison-sasl-login): prompt "Username:", then
// "Password:", then check both. Outlook and many devices still use it.
type loginServer struct {
	check    func(identity, user, pass string) error
	step     int
	username string
}

var _ sasl.Server = (*loginServer)(nil)

func newLoginServer(check func(identity, user, pass string) error) *loginServer {
	return &loginServer{check: check}
}

var errLoginUnexpected = errors.New("sasl: unexpected LOGIN response")

// Next implements sasl.Server. An initial response (AUTH LOGIN <base64>) is
// taken as the user name, as Exchange and Postfix accept it.
func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check("", l.username, string(response))
	}
	return nil, true, errLoginUnexpected
}

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
