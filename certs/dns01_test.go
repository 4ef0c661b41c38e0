package certs_test

import (
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/certs/pebbletest"
)

// dnsServer is a tiny authoritative server for one zone that takes
// TSIG-signed RFC 2136 updates of TXT records, as BIND would with an
// update-policy, and answers SOA and TXT queries from what it holds.
type dnsServer struct {
	addr    string
	zone    string
	keyName string

	mu      sync.Mutex
	txt     map[string][]string // fqdn -> values
	a       map[string]net.IP   // fqdn -> IPv4 address
	added   []string            // fqdns of TXT records added by signed updates
	removed []string
	refused int // updates refused for a missing or bad signature
}

func startDNSServer(t *testing.T, zone, keyName, secret string) *dnsServer {
	t.Helper()
	s := &dnsServer{zone: dns.Fqdn(zone), keyName: dns.Fqdn(keyName), txt: map[string][]string{}, a: map[string]net.IP{}}
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ { // the same port for UDP and TCP
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if i == 20 {
			t.Fatal(err)
		}
	}
	s.addr = pc.LocalAddr().String()
	secrets := map[string]string{s.keyName: secret}
	// The default accept func answers NOTIMP to UPDATE.
	accept := func(dh dns.Header) dns.MsgAcceptAction {
		if op := int(dh.Bits>>11) & 0xF; op == dns.OpcodeUpdate {
			return dns.MsgAccept
		}
		return dns.DefaultMsgAcceptFunc(dh)
	}
	udp := &dns.Server{PacketConn: pc, Handler: s, TsigSecret: secrets, MsgAcceptFunc: accept}
	tcp := &dns.Server{Listener: ln, Handler: s, TsigSecret: secrets, MsgAcceptFunc: accept}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return s
}

func (s *dnsServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Opcode == dns.OpcodeUpdate {
		tsig := r.IsTsig()
		if tsig == nil || w.TsigStatus() != nil || !strings.EqualFold(tsig.Hdr.Name, s.keyName) {
			s.refused++
			m.Rcode = dns.RcodeNotAuth
			w.WriteMsg(m)
			return
		}
		for _, rr := range r.Ns {
			h := rr.Header()
			name := strings.ToLower(h.Name)
			switch {
			case h.Class == dns.ClassINET && h.Rrtype == dns.TypeTXT:
				s.txt[name] = append(s.txt[name], strings.Join(rr.(*dns.TXT).Txt, ""))
				s.added = append(s.added, name)
			case h.Class == dns.ClassNONE || h.Class == dns.ClassANY:
				delete(s.txt, name)
				s.removed = append(s.removed, name)
			}
		}
		m.SetTsig(tsig.Hdr.Name, tsig.Algorithm, 300, time.Now().Unix())
		w.WriteMsg(m)
		return
	}
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: s.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + s.zone, Mbox: "hostmaster." + s.zone, Serial: 1, Refresh: 60, Retry: 60, Expire: 600, Minttl: 1}
	switch {
	case !dns.IsSubDomain(s.zone, name):
		m.Rcode = dns.RcodeRefused
	case q.Qtype == dns.TypeSOA && name == s.zone:
		m.Answer = append(m.Answer, soa)
	case q.Qtype == dns.TypeA && s.a[name] != nil:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: s.a[name]})
	case q.Qtype == dns.TypeAAAA && s.a[name] != nil:
		m.Ns = append(m.Ns, soa) // the name exists, with no IPv6 address
	case q.Qtype == dns.TypeTXT && len(s.txt[name]) > 0:
		for _, v := range s.txt[name] {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 1}, Txt: []string{v}})
		}
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
	}
	w.WriteMsg(m)
}

func TestACMEDNS01RFC2136(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	secret := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	ns := startDNSServer(t, "example.test", "tlsguard-acme", secret)
	keyFile := filepath.Join(t.TempDir(), "tsig.key")
	if err := os.WriteFile(keyFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := certs.Config{ACME: &certs.ACME{
		CA: p.DirectoryURL, CARoot: p.CARootFile, Email: "postmaster@example.test", AgreeTOS: true, Profile: pebbletest.DefaultProfile,
		Names:     []string{acmeName},
		Challenge: certs.ChallengeDNS01,
		DNS: &certs.DNS{
			Provider:           "rfc2136",
			Server:             ns.addr,
			KeyName:            "tlsguard-acme",
			KeyFile:            keyFile,
			Resolvers:          []string{ns.addr},
			PropagationTimeout: 20 * time.Second,
		},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	m := newManager(t, cfg, certs.Options{Hostname: acmeName, StateDir: t.TempDir()})
	t.Logf("obtained over dns-01 in %v", time.Since(start).Round(time.Millisecond))
	c, err := dial(t, serve(t, m), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(t, c.ConnectionState().PeerCertificates, acmeName); err != nil {
		t.Error(err)
	}

	ns.mu.Lock()
	defer ns.mu.Unlock()
	const rec = "_acme-challenge." + acmeName + "."
	if len(ns.added) != 1 || ns.added[0] != rec {
		t.Errorf("signed TXT additions: %v, want [%s]", ns.added, rec)
	}
	if len(ns.removed) != 1 || ns.removed[0] != rec || len(ns.txt) != 0 {
		t.Errorf("challenge record not cleaned up: removed %v, left %v", ns.removed, ns.txt)
	}
	if ns.refused != 0 {
		t.Errorf("%d updates refused", ns.refused)
	}
}

func TestACMEDNS01WrongKeyFails(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{})
	ns := startDNSServer(t, "example.test", "tlsguard-acme", base64.StdEncoding.EncodeToString([]byte("the right secret")))
	cfg := certs.Config{ACME: &certs.ACME{
		CA: p.DirectoryURL, CARoot: p.CARootFile, Email: "postmaster@example.test", AgreeTOS: true, Profile: pebbletest.DefaultProfile,
		Names:     []string{acmeName},
		Challenge: certs.ChallengeDNS01,
		DNS: &certs.DNS{
			Provider: "rfc2136", Server: ns.addr, KeyName: "tlsguard-acme",
			Key:       base64.StdEncoding.EncodeToString([]byte("a wrong secret")),
			Resolvers: []string{ns.addr}, PropagationTimeout: 5 * time.Second,
		},
	}}
	start := time.Now()
	_, err := certs.New(t.Context(), cfg, certs.Options{Hostname: acmeName, StateDir: t.TempDir()})
	if err == nil {
		t.Fatal("New succeeded with a wrong TSIG key")
	}
	t.Logf("failed in %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), acmeName) {
		t.Errorf("error does not name %s: %v", acmeName, err)
	}
}

// setA makes name resolve to ip.
func (s *dnsServer) setA(name, ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[dns.Fqdn(strings.ToLower(name))] = net.ParseIP(ip).To4()
}
