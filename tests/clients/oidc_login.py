"""Logs in at a headless, auto-approving authorization server (tests/peers/oidc_provider.mjs)
the way a browser would, and prints the token response.

Usage: python oidc_login.py ISSUER CLIENT_ID CLIENT_SECRET REDIRECT RESOURCE LOGIN_HINT [SCOPE]

A real authorization-code flow with PKCE (S256) and a resource indicator (RFC 8707): reads the
issuer's discovery document, opens the authorization endpoint and follows every redirect with
a cookie jar (login and consent interactions) until it is sent to REDIRECT, checks `state`
(and `iss`, RFC 9207, when present), then redeems the code at the token endpoint with
client_secret_basic. Prints the token endpoint's JSON answer on stdout. RESOURCE may be "" for
none. SCOPE defaults to "openid mcp:read". Exits non-zero with the reason on any failure.
"""

import base64
import hashlib
import json
import secrets
import sys
from urllib.parse import parse_qs, urljoin, urlsplit

try:  # the test venv's MCP SDK brings httpx2 (same API); plain httpx elsewhere
    import httpx2 as httpx
except ImportError:
    import httpx

MAX_REDIRECTS = 15


def fail(msg: str) -> None:
    sys.exit(f"oidc_login: {msg}")


def main() -> None:
    if len(sys.argv) not in (7, 8):
        sys.exit(__doc__)
    issuer, client_id, client_secret, redirect, resource, login_hint = sys.argv[1:7]
    scope = sys.argv[7] if len(sys.argv) == 8 else "openid mcp:read"

    with httpx.Client(timeout=15, follow_redirects=False) as http:
        meta = http.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
        if meta.status_code != 200:
            fail(f"discovery answered {meta.status_code}: {meta.text[:300]}")
        meta = meta.json()
        if meta.get("issuer") != issuer:
            fail(f"discovery names issuer {meta.get('issuer')!r}, expected {issuer!r}")

        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "login_hint": login_hint,
        }
        if resource:
            params["resource"] = resource

        # The browser part: follow redirects (cookies kept by the client) until the AS sends
        # us to the redirect URI, which nothing needs to serve.
        url = str(httpx.URL(meta["authorization_endpoint"], params=params))
        for _ in range(MAX_REDIRECTS):
            resp = http.get(url)
            if resp.status_code not in (302, 303, 307):
                fail(f"GET {url} answered {resp.status_code}, not a redirect: {resp.text[:300]}")
            url = urljoin(url, resp.headers["location"])
            if url.startswith(redirect):
                break
        else:
            fail(f"not redirected to {redirect} after {MAX_REDIRECTS} hops (last: {url})")

        query = parse_qs(urlsplit(url).query)
        if "error" in query:
            fail(f"authorization refused: {query}")
        if query.get("state") != [state]:
            fail(f"state mismatch in {url}")
        if "iss" in query and query["iss"] != [issuer]:
            fail(f"iss mismatch in {url}")
        code = query.get("code", [None])[0]
        if not code:
            fail(f"no code in {url}")

        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "code_verifier": verifier,
        }
        if resource:
            form["resource"] = resource
        token = http.post(
            meta["token_endpoint"], data=form, auth=(client_id, client_secret)
        )
        if token.status_code != 200:
            fail(f"token endpoint answered {token.status_code}: {token.text[:500]}")
        print(json.dumps(token.json()))


if __name__ == "__main__":
    main()
