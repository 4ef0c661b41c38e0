package main

import (
	"bufio"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/policy"
)

func TestParseDefaultGateway(t *testing.T) {
	route := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n" +
		"eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\n" +
		"eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n"
	gw, ok := parseDefaultGateway(bufio.NewScanner(strings.NewReader(route)))
	if !ok || gw.String() != "172.17.0.1" {
		t.Fatalf("gateway = %v %v, want 172.17.0.1", gw, ok)
	}
	if _, ok := parseDefaultGateway(bufio.NewScanner(strings.NewReader("Iface\tDestination\tGateway\n"))); ok {
		t.Fatal("found a gateway in a table without a default route")
	}
}

func TestOpenRelayCheck(t *testing.T) {
	safe, err := policy.Parse("safe.yaml", []byte("local_domains: [example.org]\ntrusted_networks: [\"192.0.2.0/24\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := openRelayCheck(safe, []string{"submission", "mx"}); err != nil {
		t.Errorf("safe policy: %v", err)
	}
	open, err := policy.Parse("open.yaml", []byte("local_domains: [example.org]\ntrusted_networks: [\"203.0.0.0/8\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = openRelayCheck(open, []string{"submission"})
	if err == nil || !strings.Contains(err.Error(), "open relay") || !strings.Contains(err.Error(), "203.0.113.7") {
		t.Errorf("open policy: %v", err)
	}
}
