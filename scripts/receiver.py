#!/usr/bin/env python3
"""Tiny webhook receiver for trying hookrelay out: prints each POST and answers.

    python3 scripts/receiver.py PORT [STATUS]      # STATUS defaults to 200

With WEBHOOK_SECRET=whsec_... in the environment it also checks webhook-signature.
"""
import base64, hashlib, hmac, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, STATUS = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 200
SECRET = os.environ.get("WEBHOOK_SECRET")


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print(f"--- POST {self.path}", *(f"{k}: {v}" for k, v in self.headers.items()), sep="\n")
        print(body.decode("utf-8", "replace"))
        if SECRET:
            key = base64.b64decode(SECRET.removeprefix("whsec_"))
            signed = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode() + body
            expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            ok = any(hmac.compare_digest(expected, s) for s in self.headers.get("webhook-signature", "").split())
            print("signature:", "valid" if ok else "INVALID")
        sys.stdout.flush()
        self.send_response(STATUS)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):  # the print above says enough
        pass


HTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
