#!/usr/bin/env python3
"""A mail client for the e2e tests: Python's imaplib or poplib logs in to
tlsguard's IMAP or POP3 port (implicit TLS or STARTTLS/STLS), fetches
message 1 and prints one JSON line per step."""

import argparse
import email
import imaplib
import json
import poplib
import ssl
import sys


def out(step, **kw):
    kw["step"] = step
    print(json.dumps(kw), flush=True)


def subject_of(raw):
    return email.message_from_bytes(raw).get("Subject", "")


def imap(a, ctx):
    if a.mode == "implicit":
        m = imaplib.IMAP4_SSL(a.host, a.port, ssl_context=ctx, timeout=30)
    else:
        m = imaplib.IMAP4(a.host, a.port, timeout=30)
        out("capabilities", caps=sorted(m.capabilities))
        m.starttls(ssl_context=ctx)
    out("tls", version=m.sock.version(), caps=sorted(m.capabilities))
    if a.mech == "plain":
        typ, data = m.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (a.user, a.password)).encode())
    else:
        typ, data = m.login(a.user, a.password)
    out("login", ok=typ == "OK", msg=data[0].decode(errors="replace") if data else "")
    typ, data = m.select("INBOX")
    out("select", ok=typ == "OK", exists=int(data[0]))
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    out("fetch", ok=typ == "OK", subject=subject_of(data[0][1]))
    m.logout()
    out("logout")


def pop3(a, ctx):
    if a.mode == "implicit":
        p = poplib.POP3_SSL(a.host, a.port, context=ctx, timeout=30)
    else:
        p = poplib.POP3(a.host, a.port, timeout=30)
        out("capabilities", caps=sorted(p.capa().keys()))
        p.stls(context=ctx)
    out("tls", version=p.sock.version(), caps=sorted(p.capa().keys()))
    if a.mech == "plain":
        import base64
        ir = base64.b64encode(("\0%s\0%s" % (a.user, a.password)).encode()).decode()
        resp = p._shortcmd("AUTH PLAIN " + ir)
    else:
        p.user(a.user)
        resp = p.pass_(a.password)
    out("login", ok=resp.startswith(b"+OK"), msg=resp.decode(errors="replace"))
    count, _ = p.stat()
    _, lines, _ = p.retr(1)
    out("fetch", ok=True, exists=count, subject=subject_of(b"\r\n".join(lines)))
    p.quit()
    out("logout")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto", choices=["imap", "pop3"], required=True)
    ap.add_argument("--mode", choices=["implicit", "starttls"], required=True)
    ap.add_argument("--mech", choices=["login", "plain"], default="login")
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    a = ap.parse_args()
    ctx = ssl.create_default_context(cafile=a.cafile)
    try:
        (imap if a.proto == "imap" else pop3)(a, ctx)
    except Exception as e:  # reported as a step, for the test to show
        out("error", msg="%s: %s" % (type(e).__name__, e))
        sys.exit(0)


main()
