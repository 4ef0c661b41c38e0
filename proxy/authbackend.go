package proxy

import (
	"context"
	"errors"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// BackendAuthenticator checks credentials by AUTH PLAIN against the backend
// itself, for legacy servers that already hold the users. The password
// crosses the backend leg, which must therefore be loopback, a private link,
// or TLS (backend.tls).
type BackendAuthenticator struct{ b *backend }

var _ Authenticator = (*BackendAuthenticator)(nil)

// NewBackendAuthenticator checks credentials against the backend in cfg.
func NewBackendAuthenticator(cfg BackendConfig, hostname string) *BackendAuthenticator {
	return &BackendAuthenticator{b: newBackend(cfg, hostname, nopLogger, nil)}
}

// Authenticate implements Authenticator: 235 is yes, a 535 (or any 5xx) is
// no, anything else is an error.
func (a *BackendAuthenticator) Authenticate(ctx context.Context, user, password string) (bool, error) {
	bc, err := a.b.dial(ctx)
	if err != nil {
		return false, err
	}
	defer bc.quit()
	if ok, _ := bc.c.Extension("AUTH"); !ok {
		return false, errors.New("backend " + a.b.cfg.Address + ": does not offer AUTH")
	}
	err = bc.c.Auth(sasl.NewPlainClient("", user, password))
	if err == nil {
		return true, nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 {
		return false, nil
	}
	return false, err
}
