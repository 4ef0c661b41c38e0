#!/usr/bin/env python3
"""A mail client built on Python's smtplib, as scripts and apps use it.

It runs one session and prints one JSON object per step on stdout
({"step": ..., "code": ..., "msg": ...}), so the Go test can assert on the
server's replies. It stops at the first refused step.
"""
import argparse
import json
import smtplib
import ssl
import sys
from email.message import EmailMessage


def out(step, code=None, msg=None, **extra):
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    print(json.dumps(dict(step=step, code=code, msg=msg, **extra)), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", choices=["implicit", "starttls", "none"], required=True)
    p.add_argument("--cafile", help="CA to verify the server certificate")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--auth", choices=["PLAIN", "LOGIN"], default="PLAIN")
    p.add_argument("--mail-from", required=True)
    p.add_argument("--rcpt", action="append", required=True)
    p.add_argument("--subject", default="test from smtplib")
    p.add_argument("--body", default="Hello from Python's smtplib.\n")
    a = p.parse_args()

    ctx = ssl.create_default_context(cafile=a.cafile)
    try:
        # The constructor connects and reads the greeting; anything but 220
        # raises SMTPConnectError.
        if a.tls == "implicit":
            s = smtplib.SMTP_SSL(a.host, a.port, context=ctx, timeout=30)
        else:
            s = smtplib.SMTP(a.host, a.port, timeout=30)
        out("connect", 220)
        if a.tls == "implicit":
            out("tls", msg=s.sock.version(), cipher=s.sock.cipher()[0])

        code, msg = s.ehlo("client.example.net")
        out("ehlo", code, msg, features=s.esmtp_features)
        if a.tls == "starttls":
            code, msg = s.starttls(context=ctx)
            out("starttls", code, msg, version=s.sock.version(), cipher=s.sock.cipher()[0])
            code, msg = s.ehlo("client.example.net")
            out("ehlo", code, msg, features=s.esmtp_features)

        if a.user is not None:
            s.user, s.password = a.user, a.password
            try:
                code, msg = s.auth(a.auth, getattr(s, "auth_" + a.auth.lower()))
                out("auth", code, msg)
            except smtplib.SMTPAuthenticationError as e:
                out("auth", e.smtp_code, e.smtp_error)
                return

        code, msg = s.mail(a.mail_from)
        out("mail", code, msg)
        if code != 250:
            return
        accepted = 0
        for r in a.rcpt:
            code, msg = s.rcpt(r)
            out("rcpt", code, msg, rcpt=r)
            accepted += code in (250, 251)
        if not accepted:
            return

        m = EmailMessage()
        m["From"] = a.mail_from
        m["To"] = ", ".join(a.rcpt)
        m["Subject"] = a.subject
        m.set_content(a.body)
        try:
            code, msg = s.data(m.as_bytes())
            out("data", code, msg)
        except smtplib.SMTPDataError as e:
            out("data", e.smtp_code, e.smtp_error)
            return
        code, msg = s.quit()
        out("quit", code, msg)
    except (smtplib.SMTPException, OSError) as e:
        out("error", msg="%s: %s" % (type(e).__name__, e))


if __name__ == "__main__":
    sys.exit(main())
