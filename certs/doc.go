// Package certs builds the one *tls.Config that every tlsguard listener
// shares, from exactly one certificate source:
//
//   - ACME (tls.acme): certificates obtained at start-up through certmagic
//     from Let's Encrypt, ZeroSSL or any ACME CA, stored under
//     state_dir/acme and renewed in the background;
//   - static PEM files (tls.certificates): selected by SNI, reloaded by
//     Manager.Reload (SIGHUP) and when the files change on disk;
//   - a self-signed certificate (tls.self_signed) for a first try, kept in
//     state_dir/selfsigned and loudly labelled in the log.
//
// The TLS policy is fixed: TLS 1.2 minimum (or 1.3), ECDHE+AEAD suites only
// for TLS 1.2, ALPN "smtp" so that an HTTPS client sent to a mail port fails
// its handshake (ALPACA), session tickets on, a default certificate for
// clients without SNI. The certificate is chosen per handshake, so a reload
// or a renewal reaches new connections and never touches open ones.
//
// # Which ACME challenge fits which deployment
//
// The CA validates HTTP-01 on port 80 and TLS-ALPN-01 on port 443 of the
// name being certified, never on 25, 465 or 587:
//
//   - A mail-only host (nothing on 80/443, or those ports firewalled): use
//     dns-01. It needs no inbound port at all and is the only way to get a
//     wildcard. Provider rfc2136 works with BIND, Knot, PowerDNS and other
//     servers that take TSIG-signed dynamic updates; delegate
//     _acme-challenge.<name> to a small zone if the main zone must stay
//     static.
//   - Port 80 reachable and free on this host: http-01 (the default).
//     tlsguard opens a listener on tls.acme.http_port only while a challenge
//     is being answered. If another web server owns port 80, forward
//     /.well-known/acme-challenge/ to http_port, or use dns-01.
//   - Port 443 reachable and free: tls-alpn-01 on tls.acme.tls_alpn_port
//     (443 by default, or forwarded to it). While it is configured, the mail
//     listeners also offer ALPN "acme-tls/1".
//   - Several tlsguard instances behind one name: use dns-01, so that the
//     instance that orders is the one that answers. (certmagic's file
//     storage takes locks and can be shared, but that is untested here.)
//
// Wildcard names (*.example.org) need dns-01.
package certs
