package certs

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// ACME is the `tls.acme` section: certificates obtained from an ACME CA and
// renewed in the background.
type ACME struct {
	// Pos is filled by yamlx with the position of the section.
	Pos yamlx.Pos
	// CA is the ACME directory URL, or one of the words letsencrypt (the
	// default), letsencrypt-staging, zerossl.
	CA string `yaml:"ca"`
	// Email is the ACME account contact. Required: certmagic asks for one
	// on the terminal when it is empty and no account is stored, which
	// would stall an interactive start.
	Email string `yaml:"email"`
	// Names are the DNS names to manage. Default: the hostname. The first
	// one that covers the hostname is served to clients without SNI.
	Names []string `yaml:"names"`
	// AgreeTOS must be true: it records that the operator agrees to the CA's
	// subscriber agreement.
	AgreeTOS bool `yaml:"agree_tos"`
	// Challenge is http-01 (the default), tls-alpn-01 or dns-01. See the
	// package documentation for which fits which deployment.
	Challenge string `yaml:"challenge"`
	// HTTPPort is the port tlsguard listens on to answer HTTP-01. The CA
	// always connects to port 80; a different port needs a forward from 80.
	// Default 80.
	HTTPPort int `yaml:"http_port"`
	// TLSALPNPort is the port tlsguard listens on to answer TLS-ALPN-01. The
	// CA always connects to port 443; a different port needs a forward.
	// Default 443.
	TLSALPNPort int `yaml:"tls_alpn_port"`
	// ListenHost is the address the challenge listener binds (only the
	// host). Default: all addresses.
	ListenHost string `yaml:"listen_host"`
	// DNS configures the dns-01 provider; required with challenge dns-01.
	DNS *DNS `yaml:"dns"`
	// CARoot is a PEM file of root certificates to trust for the ACME
	// endpoint itself (private CAs, Pebble). Default: the system roots.
	CARoot string `yaml:"ca_root"`
	// EAB is the External Account Binding some CAs (ZeroSSL) require.
	EAB *EAB `yaml:"eab"`
	// Profile selects a certificate profile the CA offers (Let's Encrypt:
	// "classic", "tlsserver", "shortlived"). Default: the CA's default.
	Profile string `yaml:"profile"`
	// RenewCheckInterval is how often certificates are checked for
	// renewal. Default 10m (certmagic's). Renewal starts when a third of
	// the lifetime is left, or earlier when the CA's renewal info (ARI)
	// says so; lower this only for certificates that live hours or less.
	RenewCheckInterval time.Duration `yaml:"renew_check_interval"`
}

// EAB is an External Account Binding: the key id and base64url MAC key the CA
// gives in its web console.
type EAB struct {
	// Pos is filled by yamlx with the position of the section.
	Pos yamlx.Pos
	// KeyID is the EAB key identifier.
	KeyID string `yaml:"key_id"`
	// MACKey is the base64url-encoded HMAC key. Prefer MACKeyFile.
	MACKey string `yaml:"mac_key"`
	// MACKeyFile is a file holding the MAC key, so the secret need not sit
	// in the main config (a container secret, say).
	MACKeyFile string `yaml:"mac_key_file"`
}

// DNS configures the dns-01 challenge. Provider rfc2136 speaks RFC 2136
// dynamic updates signed with TSIG, which BIND, Knot, PowerDNS and others
// accept.
type DNS struct {
	// Pos is filled by yamlx with the position of the section.
	Pos yamlx.Pos
	// Provider is the DNS provider; only "rfc2136" is built in.
	Provider string `yaml:"provider"`
	// Server is the primary name server, host:port (port 53 if absent).
	Server string `yaml:"server"`
	// KeyName is the TSIG key name.
	KeyName string `yaml:"key_name"`
	// KeyAlg is the TSIG algorithm, e.g. hmac-sha256 (the default).
	KeyAlg string `yaml:"key_alg"`
	// Key is the base64 TSIG secret. Prefer KeyFile.
	Key string `yaml:"key"`
	// KeyFile is a file holding the base64 TSIG secret, so the secret need
	// not sit in the main config.
	KeyFile string `yaml:"key_file"`
	// Resolvers are DNS servers (host:port) used to check propagation.
	// Default: the system resolvers.
	Resolvers []string `yaml:"resolvers"`
	// PropagationTimeout bounds the wait for the TXT record to be visible.
	// Default 2m.
	PropagationTimeout time.Duration `yaml:"propagation_timeout"`
}

// Challenge names accepted in tls.acme.challenge.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeDNS01     = "dns-01"
)

// caURL maps the accepted words to directory URLs.
func (a *ACME) caURL() string {
	switch strings.ToLower(a.CA) {
	case "", "letsencrypt":
		return certmagic.LetsEncryptProductionCA
	case "letsencrypt-staging":
		return certmagic.LetsEncryptStagingCA
	case "zerossl":
		return certmagic.ZeroSSLProductionCA
	}
	return a.CA
}

func (a *ACME) challenge() string {
	if a.Challenge == "" {
		return ChallengeHTTP01
	}
	return a.Challenge
}

func (a *ACME) validate(tlsPos yamlx.Pos) yamlx.Errors {
	var errs yamlx.Errors
	pos := a.Pos
	if pos.Key == "" {
		pos = tlsPos
		pos.Key = tlsPos.Key + ".acme"
	}
	switch strings.ToLower(a.CA) {
	case "", "letsencrypt", "letsencrypt-staging", "zerossl":
	default:
		u, err := url.Parse(a.CA)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, yamlx.Errorf(pos, "ca", "%q is not an https:// directory URL nor one of letsencrypt, letsencrypt-staging, zerossl", a.CA))
		}
	}
	if a.Email == "" {
		errs = append(errs, yamlx.Errorf(pos, "email", "needs the contact address for the ACME account"))
	} else if !strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " \t<>") {
		errs = append(errs, yamlx.Errorf(pos, "email", "%q is not an email address", a.Email))
	}
	if !a.AgreeTOS {
		errs = append(errs, yamlx.Errorf(pos, "agree_tos", "must be true: it records that you agree to the CA's subscriber agreement"))
	}
	for i, n := range a.Names {
		if err := checkDNSName(n); err != nil {
			errs = append(errs, yamlx.Errorf(pos, "names["+strconv.Itoa(i)+"]", "%v", err))
		}
	}
	if a.HTTPPort < 0 || a.HTTPPort > 65535 {
		errs = append(errs, yamlx.Errorf(pos, "http_port", "%d is not a port number", a.HTTPPort))
	}
	if a.TLSALPNPort < 0 || a.TLSALPNPort > 65535 {
		errs = append(errs, yamlx.Errorf(pos, "tls_alpn_port", "%d is not a port number", a.TLSALPNPort))
	}
	switch a.challenge() {
	case ChallengeHTTP01:
		if a.TLSALPNPort != 0 {
			errs = append(errs, yamlx.Errorf(pos, "tls_alpn_port", "only applies to challenge tls-alpn-01"))
		}
	case ChallengeTLSALPN01:
		if a.HTTPPort != 0 {
			errs = append(errs, yamlx.Errorf(pos, "http_port", "only applies to challenge http-01"))
		}
	case ChallengeDNS01:
		if a.HTTPPort != 0 || a.TLSALPNPort != 0 {
			errs = append(errs, yamlx.Errorf(pos, "", "http_port and tls_alpn_port do not apply to challenge dns-01"))
		}
		if a.DNS == nil {
			errs = append(errs, yamlx.Errorf(pos, "dns", "challenge dns-01 needs a dns section with a provider"))
		}
	default:
		errs = append(errs, yamlx.Errorf(pos, "challenge", "%q is not one of http-01, tls-alpn-01, dns-01", a.Challenge))
	}
	if a.RenewCheckInterval < 0 {
		errs = append(errs, yamlx.Errorf(pos, "renew_check_interval", "must not be negative"))
	}
	if a.DNS != nil {
		if a.challenge() != ChallengeDNS01 {
			errs = append(errs, yamlx.Errorf(pos, "dns", "only applies to challenge dns-01"))
		} else {
			errs = append(errs, a.DNS.validate(pos)...)
		}
	}
	if a.EAB != nil {
		epos := a.EAB.Pos
		if epos.Key == "" {
			epos = pos
			epos.Key = pos.Key + ".eab"
		}
		if a.EAB.KeyID == "" {
			errs = append(errs, yamlx.Errorf(epos, "key_id", "needs the key id from the CA"))
		}
		if (a.EAB.MACKey == "") == (a.EAB.MACKeyFile == "") {
			errs = append(errs, yamlx.Errorf(epos, "mac_key", "set exactly one of mac_key, mac_key_file (the MAC key from the CA)"))
		}
	} else if strings.EqualFold(a.CA, "zerossl") {
		errs = append(errs, yamlx.Errorf(pos, "eab", "ZeroSSL needs an External Account Binding (key_id, mac_key)"))
	}
	return errs
}

func (d *DNS) validate(acmePos yamlx.Pos) yamlx.Errors {
	var errs yamlx.Errors
	pos := d.Pos
	if pos.Key == "" {
		pos = acmePos
		pos.Key = acmePos.Key + ".dns"
	}
	switch d.Provider {
	case "rfc2136":
		if d.Server == "" {
			errs = append(errs, yamlx.Errorf(pos, "server", "needs the primary name server (host:port)"))
		}
		if d.KeyName == "" {
			errs = append(errs, yamlx.Errorf(pos, "key_name", "needs the TSIG key name"))
		}
		if (d.Key == "") == (d.KeyFile == "") {
			errs = append(errs, yamlx.Errorf(pos, "key", "set exactly one of key, key_file (the TSIG secret)"))
		}
	case "":
		errs = append(errs, yamlx.Errorf(pos, "provider", "needs a provider (rfc2136)"))
	default:
		errs = append(errs, yamlx.Errorf(pos, "provider", "%q is not a known provider (rfc2136)", d.Provider))
	}
	if d.PropagationTimeout < 0 {
		errs = append(errs, yamlx.Errorf(pos, "propagation_timeout", "must not be negative"))
	}
	return errs
}
