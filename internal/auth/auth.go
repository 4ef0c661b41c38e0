// Package auth is where tlsguard checks credentials: the sources that hold
// users' passwords (a directory, a mailbox server, Dovecot, an htpasswd
// file, the backend), the chain that asks them in order, the cache in front
// of them, the SASL mechanisms that carry the password, and the throttle
// that makes guessing slow.
//
// The SMTP session only calls in: it asks the throttle for a budget and a
// slot, runs Source.Authenticate, and maps the outcome to a reply.
package auth

import (
	"context"
	"errors"
	"time"
)

var now = time.Now

// Identity is what a source knows about a user who logged in.
type Identity struct {
	// User is the login name as the client gave it.
	User string
	// Source names the source that accepted the password.
	Source string
	// Groups are the user's groups in the source (distinguished names for a
	// directory), for policy rules; nil when the source has none.
	Groups []string
	// Addresses are the user's own mail addresses in the source, for sender
	// ownership ("{addresses}"); nil when the source has none.
	Addresses []string
}

// The two definite answers a source gives besides success. Any other error
// means the source could not answer (down, timed out, TLS failure): a
// temporary failure that is neither counted against the user nor passed to
// the next source, since a source that is down has not said the user is
// unknown.
var (
	ErrNoSuchUser  = errors.New("no such user")
	ErrBadPassword = errors.New("wrong password")
)

// Source checks a user name and password.
type Source interface {
	// Authenticate returns the user's identity when password is right,
	// ErrNoSuchUser or ErrBadPassword (possibly wrapped) as definite
	// answers, and any other error when it cannot tell. It must honour
	// ctx's deadline and never log the password.
	Authenticate(ctx context.Context, user, password string) (Identity, error)
}

// Temporary reports whether err means the check could not be made, as
// opposed to a definite no.
func Temporary(err error) bool {
	return err != nil && !errors.Is(err, ErrNoSuchUser) && !errors.Is(err, ErrBadPassword)
}

// sourceError names the source that gave an error, for the log.
type sourceError struct {
	source string
	err    error
}

func (e *sourceError) Error() string { return e.source + ": " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// SourceOf returns the name of the source that decided err, or "".
func SourceOf(err error) string {
	var se *sourceError
	if errors.As(err, &se) {
		return se.source
	}
	return ""
}

// Named is a source with the name logs and metrics know it by.
type Named struct {
	Name string
	Source
}

// Chain asks its sources in order. A source that does not know the user
// passes to the next; a wrong password or a source that cannot answer ends
// the search (a later source must not accept a password the user's own
// source refused, nor stand in for one that is down).
type Chain struct {
	sources []Named
	obs     Observer
}

// Observer is told of every answer a source gives, for metrics.
type Observer interface {
	Observe(source string, err error, seconds float64)
}

// NewChain builds a chain; obs may be nil.
func NewChain(obs Observer, sources ...Named) *Chain {
	return &Chain{sources: sources, obs: obs}
}

// Close releases the connections the sources keep (a reload replaces the
// chain); checks still running finish first.
func (c *Chain) Close() {
	for _, s := range c.sources {
		closeSource(s.Source)
	}
}

func closeSource(s Source) {
	if c, ok := s.(interface{ Close() }); ok {
		c.Close()
	}
}

// Sources returns the names of the chain's sources in order.
func (c *Chain) Sources() []string {
	names := make([]string, len(c.sources))
	for i, s := range c.sources {
		names[i] = s.Name
	}
	return names
}

var _ Source = (*Chain)(nil)

// Authenticate implements Source. Its errors carry the name of the source
// that decided (SourceOf); ErrNoSuchUser without a source means that none
// knew the user.
func (c *Chain) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	for _, s := range c.sources {
		id, err := c.ask(ctx, s, user, password)
		if err == nil {
			id.User, id.Source = user, s.Name
			return id, nil
		}
		if errors.Is(err, ErrNoSuchUser) && !errors.Is(err, ErrBadPassword) {
			continue
		}
		return Identity{}, &sourceError{s.Name, err}
	}
	return Identity{}, ErrNoSuchUser
}

func (c *Chain) ask(ctx context.Context, s Named, user, password string) (Identity, error) {
	if err := ctx.Err(); err != nil {
		return Identity{}, err
	}
	if c.obs == nil {
		return s.Authenticate(ctx, user, password)
	}
	start := now()
	id, err := s.Authenticate(ctx, user, password)
	c.obs.Observe(s.Name, err, now().Sub(start).Seconds())
	return id, err
}
