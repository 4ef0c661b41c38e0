package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAPConfig is one directory (OpenLDAP, Active Directory, 389-ds).
type LDAPConfig struct {
	// URL is ldap://host:port or ldaps://host:port.
	URL string
	// StartTLS upgrades an ldap:// connection before anything is sent
	// (RFC 4513 3): the password never crosses in the clear.
	StartTLS bool
	// TLS verifies the directory's certificate (ldaps:// and StartTLS).
	TLS *tls.Config
	// BindDN and BindPassword are the search account; an empty BindDN
	// searches anonymously.
	BindDN, BindPassword string
	// BaseDN and Filter find the user's entry; "{user}" in Filter is the
	// login, escaped per RFC 4515.
	BaseDN, Filter string
	// BindTemplate, when set, is the user's DN with "{user}" (escaped per
	// RFC 4514) and replaces the search: the user binds directly.
	BindTemplate string
	// AddressesAttribute and GroupsAttribute name the attributes read from
	// the user's entry ("mail", "memberOf"); empty reads none.
	AddressesAttribute, GroupsAttribute string
	// Timeout bounds every call to the directory (default 5s).
	Timeout time.Duration
	// PoolSize bounds the connections kept for searches and for user binds,
	// each (default 4).
	PoolSize int
}

// LDAP checks passwords by binding to a directory as the user. Searches run
// on connections bound as the search account; user binds run on
// connections of their own, so that a search never runs with a user's
// rights and a failed bind never leaves a search connection unbound.
type LDAP struct {
	cfg    LDAPConfig
	search *ldapPool
	binds  *ldapPool
}

var _ Source = (*LDAP)(nil)

// NewLDAP returns the source; it connects on first use.
func NewLDAP(cfg LDAPConfig) *LDAP {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 4
	}
	l := &LDAP{cfg: cfg}
	l.search = newLDAPPool(cfg.PoolSize, l.dialSearch)
	l.binds = newLDAPPool(cfg.PoolSize, l.dial)
	return l
}

// Close closes the idle connections, and those in use as they come back.
func (l *LDAP) Close() {
	l.search.close()
	l.binds.close()
}

// Authenticate implements Source.
func (l *LDAP) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	// RFC 4513 5.1.2: a simple bind with a DN and an empty password is an
	// unauthenticated bind, which many servers answer with success.
	if password == "" {
		return Identity{}, fmt.Errorf("empty password: %w", ErrBadPassword)
	}
	if l.cfg.BindTemplate != "" {
		return l.bindDirect(ctx, user, password)
	}
	dn, id, err := l.find(ctx, user)
	if err != nil {
		return Identity{}, err
	}
	if err := l.bindAs(ctx, dn, password); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// find searches the user's entry with the search account. Zero entries, or
// several (an ambiguous filter must not pick one), is no such user.
func (l *LDAP) find(ctx context.Context, user string) (string, Identity, error) {
	filter := strings.ReplaceAll(l.cfg.Filter, "{user}", ldap.EscapeFilter(user))
	var res *ldap.SearchResult
	err := l.search.with(ctx, l.cfg.Timeout, func(c *ldap.Conn) error {
		var err error
		res, err = c.Search(ldap.NewSearchRequest(l.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			2, int(l.cfg.Timeout/time.Second), false, filter, l.attributes(), nil))
		if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			return nil // more than one entry: res holds what came
		}
		return err
	})
	if err != nil {
		return "", Identity{}, fmt.Errorf("%s: search: %w", l.cfg.URL, err)
	}
	if res == nil || len(res.Entries) != 1 {
		n := 0
		if res != nil {
			n = len(res.Entries)
		}
		return "", Identity{}, fmt.Errorf("%d entries match: %w", n, ErrNoSuchUser)
	}
	return res.Entries[0].DN, l.identity(res.Entries[0]), nil
}

// bindDirect binds as the DN the template makes, then reads the entry's
// attributes with the user's own rights.
func (l *LDAP) bindDirect(ctx context.Context, user, password string) (Identity, error) {
	dn := strings.ReplaceAll(l.cfg.BindTemplate, "{user}", ldap.EscapeDN(user))
	var id Identity
	err := l.binds.with(ctx, l.cfg.Timeout, func(c *ldap.Conn) error {
		if err := c.Bind(dn, password); err != nil {
			return err
		}
		if len(l.attributes()) == 0 {
			return nil
		}
		res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			1, int(l.cfg.Timeout/time.Second), false, "(objectClass=*)", l.attributes(), nil))
		if err == nil && len(res.Entries) == 1 {
			id = l.identity(res.Entries[0])
		}
		return nil // the password is right; attributes are a bonus
	})
	if err != nil {
		return Identity{}, l.bindError(err)
	}
	return id, nil
}

// bindAs checks password by binding as dn on a bind connection.
func (l *LDAP) bindAs(ctx context.Context, dn, password string) error {
	err := l.binds.with(ctx, l.cfg.Timeout, func(c *ldap.Conn) error { return c.Bind(dn, password) })
	if err != nil {
		return l.bindError(err)
	}
	return nil
}

// bindError: invalidCredentials (49) is a wrong password (a directory gives
// it for an unknown DN too); anything else means the directory could not
// answer.
func (l *LDAP) bindError(err error) error {
	if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		return fmt.Errorf("%s: bind: %w", l.cfg.URL, ErrBadPassword)
	}
	return fmt.Errorf("%s: bind: %w", l.cfg.URL, err)
}

func (l *LDAP) attributes() []string {
	var a []string
	for _, n := range []string{l.cfg.AddressesAttribute, l.cfg.GroupsAttribute} {
		if n != "" {
			a = append(a, n)
		}
	}
	if len(a) == 0 {
		return []string{"1.1"} // RFC 4511 4.5.1.8: no attributes
	}
	return a
}

func (l *LDAP) identity(e *ldap.Entry) Identity {
	var id Identity
	if l.cfg.AddressesAttribute != "" {
		id.Addresses = e.GetAttributeValues(l.cfg.AddressesAttribute)
	}
	if l.cfg.GroupsAttribute != "" {
		id.Groups = e.GetAttributeValues(l.cfg.GroupsAttribute)
	}
	return id
}

// dial opens a connection, with TLS as configured, and no bind.
func (l *LDAP) dial(ctx context.Context) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: l.cfg.Timeout}
	if dl, ok := ctx.Deadline(); ok {
		d.Deadline = dl
	}
	c, err := ldap.DialURL(l.cfg.URL, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(l.cfg.TLS))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.cfg.URL, err)
	}
	c.SetTimeout(l.cfg.Timeout)
	if l.cfg.StartTLS {
		if err := c.StartTLS(l.cfg.TLS); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: StartTLS: %w", l.cfg.URL, err)
		}
	}
	return c, nil
}

// dialSearch opens a connection bound as the search account (or left
// anonymous).
func (l *LDAP) dialSearch(ctx context.Context) (*ldap.Conn, error) {
	c, err := l.dial(ctx)
	if err != nil {
		return nil, err
	}
	if l.cfg.BindDN != "" {
		if err := c.Bind(l.cfg.BindDN, l.cfg.BindPassword); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: search account bind: %w", l.cfg.URL, err)
		}
	}
	return c, nil
}

// ldapPool bounds the connections to a directory and keeps idle ones.
type ldapPool struct {
	closed atomic.Bool // after close, connections are not kept
	slots  chan struct{}
	idle   chan *ldap.Conn
	dial   func(context.Context) (*ldap.Conn, error)
}

func newLDAPPool(n int, dial func(context.Context) (*ldap.Conn, error)) *ldapPool {
	return &ldapPool{slots: make(chan struct{}, n), idle: make(chan *ldap.Conn, n), dial: dial}
}

// with runs f on a connection. A connection whose call failed for any
// reason other than an LDAP result (a broken or timed-out connection) is
// closed rather than reused; an idle one that broke meanwhile is replaced
// once.
func (p *ldapPool) with(ctx context.Context, timeout time.Duration, f func(*ldap.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("no free directory connection: %w", ctx.Err())
	}
	defer func() { <-p.slots }()
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx)
		if err != nil {
			return err
		}
		err = f(c)
		var le *ldap.Error
		if err == nil || errors.As(err, &le) && le.ResultCode < ldap.ErrorNetwork {
			p.put(c)
			return err
		}
		c.Close()
		if !reused || attempt > 0 || ctx.Err() != nil {
			return err
		}
	}
}

func (p *ldapPool) get(ctx context.Context) (*ldap.Conn, bool, error) {
	for {
		select {
		case c := <-p.idle:
			if c.IsClosing() {
				c.Close()
				continue
			}
			return c, true, nil
		default:
			c, err := p.dial(ctx)
			return c, false, err
		}
	}
}

func (p *ldapPool) put(c *ldap.Conn) {
	if p.closed.Load() {
		c.Close()
		return
	}
	select {
	case p.idle <- c:
	default:
		c.Close()
	}
}

func (p *ldapPool) close() {
	p.closed.Store(true)
	for {
		select {
		case c := <-p.idle:
			c.Close()
		default:
			return
		}
	}
}
