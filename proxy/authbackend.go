package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/upstream"
)

// BackendAuthenticator checks credentials by AUTH PLAIN against the backend
// itself, for legacy servers that already hold the users. The password
// crosses the backend leg, which must therefore be loopback, a private link,
// or TLS (backend.tls). It lives here, not in auth, because it dials with
// the backend leg's own settings.
type BackendAuthenticator struct{ c *upstream.Client }

var _ auth.Source = (*BackendAuthenticator)(nil)

// NewBackendAuthenticator checks credentials against the backend in cfg.
func NewBackendAuthenticator(cfg BackendConfig, hostname string) *BackendAuthenticator {
	return &BackendAuthenticator{c: newUpstream(cfg, hostname, BareNormalize, nopLogger, nil)}
}

// Authenticate implements auth.Source: 235 is yes, a 535 (or any 5xx) is a
// wrong password, anything else is an error. SMTP cannot tell an unknown
// user from a wrong password (RFC 4954 6 gives both 535), so the backend is
// best last in a chain.
func (a *BackendAuthenticator) Authenticate(ctx context.Context, user, password string) (auth.Identity, error) {
	err := a.c.Authenticate(ctx, user, password)
	if err == nil {
		return auth.Identity{User: user}, nil
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 {
		return auth.Identity{}, fmt.Errorf("backend said %d: %w", se.Code, auth.ErrBadPassword)
	}
	return auth.Identity{}, err
}
