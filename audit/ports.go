package audit

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is the protocol spoken on a port and how TLS starts on it.
type Kind int

// Kinds of service.
const (
	// SMTP with STARTTLS: port 25 (MTA to MTA) and 587 (submission).
	SMTP Kind = iota
	// SMTPS: SMTP inside implicit TLS (port 465, RFC 8314).
	SMTPS
	// IMAP with STARTTLS (143).
	IMAP
	// IMAPS: implicit TLS (993).
	IMAPS
	// POP3 with STLS (110).
	POP3
	// POP3S: implicit TLS (995).
	POP3S
)

// implicitTLS reports whether TLS starts at the first byte.
func (k Kind) implicitTLS() bool { return k == SMTPS || k == IMAPS || k == POP3S }

// Service is one port to check.
type Service struct {
	// Name is the IANA service name: smtp, submission, smtps, imap, imaps,
	// pop3, pop3s.
	Name string `json:"name"`
	// Port is the TCP port.
	Port int `json:"port"`
	// Kind is the protocol spoken there.
	Kind Kind `json:"-"`
}

// String is "name/port", the prefix of the service's findings.
func (s Service) String() string { return s.Name + "/" + strconv.Itoa(s.Port) }

// client reports whether mail clients (rather than other MTAs) use the port;
// such ports are held to a stricter standard (no TLS 1.0, no MAIL in clear).
func (s Service) client() bool { return s.Name != "smtp" }

// knownServices are the standard mail ports, in report order.
var knownServices = []Service{
	{"smtp", 25, SMTP},
	{"submission", 587, SMTP},
	{"smtps", 465, SMTPS},
	{"imap", 143, IMAP},
	{"imaps", 993, IMAPS},
	{"pop3", 110, POP3},
	{"pop3s", 995, POP3S},
}

// serviceAliases maps other common names to the IANA ones.
var serviceAliases = map[string]string{
	"submissions": "smtps", // RFC 8314's name for 465
	"pop":         "pop3",
	"pops":        "pop3s",
	"mta":         "smtp",
}

// DefaultServices returns the standard mail ports: 25, 587, 465, 143, 993,
// 110 and 995.
func DefaultServices() []Service {
	return append([]Service(nil), knownServices...)
}

// ParsePorts parses a comma-separated port list. Each item is a service name
// ("imap"), a standard port number ("587"), or a name with another port
// ("smtp=2525", for a server on a non-standard port). Only the listed
// services are checked, in the standard order. An empty spec or "all" means
// DefaultServices; "none" checks no port (only the domain's DNS records).
func ParsePorts(spec string) ([]Service, error) {
	spec = strings.TrimSpace(spec)
	switch spec {
	case "", "all":
		return DefaultServices(), nil
	case "none":
		return []Service{}, nil // DNS checks only
	}
	chosen := map[string]int{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		if item == "" {
			continue
		}
		name, portText, hasPort := strings.Cut(item, "=")
		if !hasPort {
			if n, err := strconv.Atoi(item); err == nil {
				svc, ok := serviceByPort(n)
				if !ok {
					return nil, fmt.Errorf("ports %q: %d is not a standard mail port; say which protocol it speaks, as smtp=%d or imap=%d", spec, n, n, n)
				}
				name, portText = svc.Name, item
			}
		}
		if alias, ok := serviceAliases[name]; ok {
			name = alias
		}
		svc, ok := serviceByName(name)
		if !ok {
			return nil, fmt.Errorf("ports %q: unknown service %q (want smtp, submission, smtps, imap, imaps, pop3 or pop3s)", spec, name)
		}
		port := svc.Port
		if portText != "" {
			n, err := strconv.Atoi(portText)
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("ports %q: %q is not a port number", spec, portText)
			}
			port = n
		}
		if prev, dup := chosen[name]; dup && prev != port {
			return nil, fmt.Errorf("ports %q: %s given twice", spec, name)
		}
		chosen[name] = port
	}
	if len(chosen) == 0 {
		return nil, fmt.Errorf("ports %q: no service given", spec)
	}
	var out []Service
	for _, svc := range knownServices {
		if port, ok := chosen[svc.Name]; ok {
			svc.Port = port
			out = append(out, svc)
		}
	}
	return out, nil
}

func serviceByName(name string) (Service, bool) {
	for _, s := range knownServices {
		if s.Name == name {
			return s, true
		}
	}
	return Service{}, false
}

func serviceByPort(port int) (Service, bool) {
	for _, s := range knownServices {
		if s.Port == port {
			return s, true
		}
	}
	return Service{}, false
}
