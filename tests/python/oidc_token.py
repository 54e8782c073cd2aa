"""An OAuth 2 token endpoint for the OIDC test: the client-credentials grant, answered
with an RS256 JWT (subject SUBJECT, audience flagtally-test, an hour) signed with
KEY_PEM, whose public half the test broker checks tokens with (its JWKS).

usage: oidc_token.py PORT KEY_PEM CLIENT_ID CLIENT_SECRET SUBJECT
Prints "listening" once it accepts requests; counts the tokens it issued in
PORT-issued (a file beside KEY_PEM) so the test can tell the client fetched them.
"""
import base64
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs

from authlib.jose import jwt

port, key_file, client_id, client_secret, subject = sys.argv[1:6]
key = open(key_file, "rb").read()
issued_file = os.path.join(os.path.dirname(key_file), f"{port}-issued")
issued = 0


class Token(BaseHTTPRequestHandler):
    def do_POST(self):
        global issued
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        form = {k: v[0] for k, v in parse_qs(body).items()}
        auth = self.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        if form.get("grant_type") != "client_credentials" or auth != expected:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error":"invalid_client"}')
            return
        now = int(time.time())
        token = jwt.encode({"alg": "RS256", "kid": "flagtally-test", "typ": "JWT"},
                           {"sub": subject, "aud": "flagtally-test", "iss": "flagtally-test-idp",
                            "iat": now, "exp": now + 3600, "scope": form.get("scope", "")},
                           key).decode()
        issued += 1
        with open(issued_file, "w") as f:
            f.write(str(issued))
        answer = json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 3600})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", int(port)), Token)
print("listening", flush=True)
server.serve_forever()
