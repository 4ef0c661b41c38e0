package e2e

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/internal/auth"
)

// BenchmarkIdentityLDAPLogins measures password checks per second against
// a private slapd (search+bind over StartTLS with a search account, as in
// TestIdentityLDAPSearchBind), without and with the cache, from 4 goroutines per CPU. Not a test: go test -run XXX -bench IdentityLDAP ./e2e/
// (docs/performance.md has the figures).
func BenchmarkIdentityLDAPLogins(b *testing.B) {
	ld := startSlapd(b)
	pool := loadPool(b, ld.PKI.CAFile)
	cfg := auth.LDAPConfig{URL: ld.URL, StartTLS: true, BindDN: "cn=tlsguard,ou=services," + ldapBase, BindPassword: "search-secret",
		BaseDN: "ou=people," + ldapBase, Filter: "(&(objectClass=inetOrgPerson)(uid={user}))",
		AddressesAttribute: "mail", GroupsAttribute: "businessCategory", Timeout: 5 * time.Second, PoolSize: 8}
	cfg.TLS = &tls.Config{ServerName: "127.0.0.1", RootCAs: pool, MinVersion: tls.VersionTLS12}
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{{"nocache", 0}, {"cache", time.Minute}} {
		b.Run(bc.name, func(b *testing.B) {
			src := auth.NewCache(auth.NewLDAP(cfg), auth.CacheConfig{TTL: bc.ttl, MaxEntries: 10000})
			b.SetParallelism(4) // 4 x GOMAXPROCS goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := src.Authenticate(context.Background(), "alice", "alice-ldap-pw"); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}
