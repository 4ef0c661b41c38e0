package app

import (
	"bufio"
	"strings"
	"testing"
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
