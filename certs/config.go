package certs

import (
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// Config is the `tls:` section of tlsguard.yaml. The config loader
// (internal/config) decodes it with yamlx.Decode, fills in its defaults,
// calls Validate, then makes file paths absolute.
//
// Exactly one certificate source must be set: Certificates (static PEM
// files), ACME, or SelfSigned.
type Config struct {
	// Pos is filled by yamlx with the position of the section.
	Pos yamlx.Pos
	// MinVersion is the lowest TLS version offered: "1.2" or "1.3".
	MinVersion string `yaml:"min_version"`
	// Certificates are static PEM cert/key pairs. A client's SNI selects among
	// them by the certificates' DNS names (wildcards included); a client with
	// no SNI, or an unknown name, gets the pair that covers the hostname, or
	// else the first pair. The files are re-read by Manager.Reload and when
	// they change on disk.
	Certificates []Pair `yaml:"certificates"`
	// SelfSigned generates an ECDSA P-256 certificate for the hostname, kept
	// in the state folder, for a first try only: mail clients will warn.
	SelfSigned bool `yaml:"self_signed"`
	// ACME obtains and renews certificates from an ACME CA (Let's Encrypt by
	// default) through certmagic.
	ACME *ACME `yaml:"acme"`
	// WatchInterval is how often static certificate files are checked for
	// changes (by stat: robust to symlink swaps and editors that replace
	// files); 0: only Reload re-reads them. A change is loaded once the
	// files have stopped changing for one interval, so a half-written pair
	// is not tried.
	WatchInterval time.Duration `yaml:"watch_interval"`
}

// Pair is one static certificate: a PEM certificate chain (leaf first) and
// its PEM private key.
type Pair struct {
	// Pos is filled by yamlx with the position of the list item.
	Pos yamlx.Pos
	// Cert is the path of the PEM certificate chain, leaf first.
	Cert string `yaml:"cert"`
	// Key is the path of the PEM private key (PKCS#1, PKCS#8 or SEC 1).
	Key string `yaml:"key"`
}

// Options are the facts from the rest of the config that the certificate
// sources need.
type Options struct {
	// Hostname is the server's name: the self-signed certificate's name,
	// the default ACME name, and the name served to clients without SNI.
	Hostname string
	// StateDir is the state folder: self-signed files go to
	// StateDir/selfsigned, ACME account and certificates to StateDir/acme.
	StateDir string
	// Logger receives certificate events under the name "certs". Nil means
	// no logging.
	Logger *zap.Logger
	// Storage, if set, keeps the ACME account, certificates, keys, locks
	// and challenge tokens instead of the files under StateDir/acme: a
	// fleet shares one (internal/cluster), so that one instance orders
	// and any instance answers a challenge.
	Storage certmagic.Storage
}

// Validate checks the section without touching the disk or network. The
// error, if any, is a yamlx.Errors naming file, line and key.
func (c *Config) Validate() error {
	var errs yamlx.Errors
	pos := c.Pos
	if pos.Key == "" {
		pos.Key = "tls" // the section was absent: still name it
	}
	switch c.MinVersion {
	case "", "1.2", "1.3":
	default:
		errs = append(errs, yamlx.Errorf(pos, "min_version", `%q is not one of "1.2", "1.3"`, c.MinVersion))
	}
	var sources []string
	if len(c.Certificates) > 0 {
		sources = append(sources, "certificates")
	}
	if c.ACME != nil {
		sources = append(sources, "acme")
	}
	if c.SelfSigned {
		sources = append(sources, "self_signed")
	}
	switch len(sources) {
	case 0:
		errs = append(errs, yamlx.Errorf(pos, "", "no certificate source: set one of certificates, acme, self_signed: true"))
	case 1:
	default:
		errs = append(errs, yamlx.Errorf(pos, "", "only one certificate source may be set, found %s", joinAnd(sources)))
	}
	for i := range c.Certificates {
		p := &c.Certificates[i]
		ppos := p.Pos
		if ppos.Key == "" {
			ppos = pos
			ppos.Key = pos.Key + ".certificates[" + strconv.Itoa(i) + "]"
		}
		if p.Cert == "" {
			errs = append(errs, yamlx.Errorf(ppos, "cert", "needs the path of a PEM certificate file"))
		}
		if p.Key == "" {
			errs = append(errs, yamlx.Errorf(ppos, "key", "needs the path of a PEM private key file"))
		}
	}
	if c.ACME != nil {
		errs = append(errs, c.ACME.validate(pos)...)
	}
	if c.WatchInterval < 0 {
		errs = append(errs, yamlx.Errorf(pos, "watch_interval", "must not be negative"))
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func joinAnd(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// ResolvePaths makes every file path in the section absolute, relative to
// dir (the config file's folder): certificates[].cert and .key,
// acme.ca_root and acme.dns.key_file.
func (c *Config) ResolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.Certificates {
		abs(&c.Certificates[i].Cert)
		abs(&c.Certificates[i].Key)
	}
	if c.ACME != nil {
		abs(&c.ACME.CARoot)
		if c.ACME.DNS != nil {
			abs(&c.ACME.DNS.KeyFile)
		}
	}
}
