package auth

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// LoginServer is the server side of the obsolete but ubiquitous LOGIN
// mechanism (draft-murchison-sasl-login): prompt "Username:", then
// "Password:", then check both. Outlook and many devices still use it.
type LoginServer struct {
	check    func(identity, user, pass string) error
	step     int
	username string
}

var _ sasl.Server = (*LoginServer)(nil)

// NewLoginServer returns a LOGIN server that calls check with an empty
// identity, as go-sasl's PLAIN server calls it with the client's.
func NewLoginServer(check func(identity, user, pass string) error) *LoginServer {
	return &LoginServer{check: check}
}

var errLoginUnexpected = errors.New("sasl: unexpected LOGIN response")

// Next implements sasl.Server. An initial response (AUTH LOGIN <base64>) is
// taken as the user name, as Exchange and Postfix accept it.
func (l *LoginServer) Next(response []byte) (challenge []byte, done bool, err error) {
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
