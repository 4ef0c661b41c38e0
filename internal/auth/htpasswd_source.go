package auth

import "context"

var _ Source = (*Htpasswd)(nil)

// Authenticate implements Source. An htpasswd file answers from memory, so
// it never gives a temporary error.
func (h *Htpasswd) Authenticate(_ context.Context, user, password string) (Identity, error) {
	if !h.Verify(user, password) {
		if _, ok := h.users[user]; !ok {
			return Identity{}, ErrNoSuchUser
		}
		return Identity{}, ErrBadPassword
	}
	return Identity{User: user}, nil
}
