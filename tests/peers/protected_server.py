"""An OAuth-protected Streamable-HTTP MCP server (Python `mcp` 2.x SDK), the upstream of the
per-user OAuth tests: verifies RS256 JWT access tokens against the authorization server's JWKS
(issuer, audience = this server's /mcp URL, scope), serves RFC 9728 protected-resource
metadata naming that authorization server, and answers 401 with WWW-Authenticate otherwise.

Usage: python protected_server.py PORT ISSUER [REQUIRED_SCOPE]
Tools: whoami() -> the token's sub, aud, client_id, and a hash of the token (so a test can tell
two tokens apart without seeing either); distrust_my_token() -> from then on this server
refuses the calling token with 401 although it is still valid (what a server does after the
user changed a password or an admin revoked sessions), so a test can see the gateway refresh
and retry. Binds 127.0.0.1 only.
"""

import hashlib
import sys

import jwt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer

PORT, ISSUER = int(sys.argv[1]), sys.argv[2].rstrip("/")
SCOPE = sys.argv[3] if len(sys.argv) > 3 else "mcp:read"
RESOURCE = f"http://127.0.0.1:{PORT}/mcp"
jwks = jwt.PyJWKClient(f"{ISSUER}/jwks")
DISTRUSTED: set[str] = set()


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class JwtVerifier:
    async def verify_token(self, token: str) -> AccessToken | None:
        if digest(token) in DISTRUSTED:
            print("token rejected: distrusted", file=sys.stderr, flush=True)
            return None
        try:
            key = jwks.get_signing_key_from_jwt(token).key
            c = jwt.decode(token, key, algorithms=["RS256"], audience=RESOURCE, issuer=ISSUER)
        except Exception as e:  # noqa: BLE001 - any failure is a refusal
            print("token rejected:", e, file=sys.stderr, flush=True)
            return None
        return AccessToken(token=token, client_id=c.get("client_id", ""), scopes=c.get("scope", "").split(),
                           expires_at=c.get("exp"), resource=RESOURCE, subject=c.get("sub"), claims=c)


mcp = MCPServer("py-protected", token_verifier=JwtVerifier(),
                auth=AuthSettings(issuer_url=ISSUER, resource_server_url=RESOURCE, required_scopes=[SCOPE],
                                  validate_token_resource=True))


@mcp.tool()
def whoami(ctx: Context) -> dict:
    """The bearer token's subject, audience and client, and a hash of the token."""
    token = bearer(ctx)
    claims = jwt.decode(token, options={"verify_signature": False}) if token else {}
    return {"sub": claims.get("sub"), "aud": claims.get("aud"), "client_id": claims.get("client_id"),
            "token_sha256": digest(token)}


def bearer(ctx: Context) -> str:
    h = ctx.headers or {}
    return h.get("authorization", "").split()[-1] if h.get("authorization") else ""


@mcp.tool()
def distrust_my_token(ctx: Context) -> str:
    """Refuse the calling token from now on (401), though it has not expired."""
    DISTRUSTED.add(digest(bearer(ctx)))
    return "distrusted"


if __name__ == "__main__":
    mcp.run("streamable-http", host="127.0.0.1", port=PORT)
