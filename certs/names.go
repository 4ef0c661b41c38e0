package certs

import (
	"fmt"
	"strings"
)

// checkDNSName accepts a DNS name for a certificate: letters, digits,
// hyphens, dots, an optional leading "*." wildcard; no IP addresses (public
// ACME CAs do not issue for them).
func checkDNSName(n string) error {
	if n == "" {
		return fmt.Errorf("empty name")
	}
	s := strings.TrimPrefix(strings.TrimSuffix(n, "."), "*.")
	if len(s) > 253 {
		return fmt.Errorf("%q is longer than 253 characters", n)
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q is not a valid DNS name", n)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("%q is not a valid DNS name (use the xn-- form for IDN)", n)
			}
		}
	}
	return nil
}
