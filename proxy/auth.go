package proxy

import (
	"errors"

	"github.com/emersion/go-sasl"
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
