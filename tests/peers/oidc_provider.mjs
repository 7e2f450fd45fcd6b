// A real OIDC / OAuth 2.1 authorization server for the identity tests (tests/tests/it/identity.rs),
// built on panva's `oidc-provider`. Headless: logins and consents are approved at once.
//
// Usage: node oidc_provider.mjs PORT
//   env OIDC_KEYS_DIR   folder to write the keys into (required), see below
//       OIDC_CLIENT_ID / OIDC_CLIENT_SECRET / OIDC_REDIRECT   the static confidential client
//                       (client_secret_basic); defaults mcpgw-test / mcpgw-test-secret /
//                       http://127.0.0.1:9/callback (nothing needs to listen there: the login
//                       helper stops at the redirect and reads the code from it)
//       OIDC_ACCESS_TTL access-token lifetime in seconds (default 600)
//       OIDC_NO_REGISTRATION_MANAGEMENT  when set, no RFC 7592 client configuration endpoint
//       MCPGW_TEST_NODE_MODULES  where oidc-provider and jose are installed (default: the
//                       cache of scripts/peers.sh, ~/.cache/mcp-gateway/node/node_modules)
//
// What it does:
// - issuer http://127.0.0.1:PORT, bound to 127.0.0.1 only; discovery at
//   /.well-known/openid-configuration and (RFC 8414) /.well-known/oauth-authorization-server
// - authorization code with PKCE (S256, required); refresh tokens
// - dynamic client registration (RFC 7591) at /reg, open, as MCP clients (mcp-remote) and
//   the gateway need; client configuration (RFC 7592) at /reg/{client_id}
// - resource indicators (RFC 8707): the access token is a JWT (RS256, with kid) whose `aud` is
//   the requested `resource`; it also carries `email` = <account>@example.com and `groups`
//   (alice: eng, mcp-admins; bob: sales; anyone else: none)
// - ID tokens carry the claims of the scopes asked for (email, groups), for console sign-in
// - /interaction/{uid} logs in the `login_hint` (default "test-user") and grants what was asked
// - every refresh rotates the refresh token; GET /_stats counts token-endpoint outcomes per
//   grant type, so tests can check how often a refresh token was redeemed
//
// Files written to OIDC_KEYS_DIR, so tests can mint tokens of their own:
//   signing-key.pem   the IdP's signing key, PKCS#8 PEM
//   signing-key.pub.pem  its public key, SPKI PEM
//   signing-key.jwk.json its public JWK (kid, alg, use)
//   rogue-key.pem     another RSA key, PKCS#8 PEM, meant to be used with the SAME kid: tokens
//                     it signs look right but must fail signature verification
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// The packages live in the test cache (scripts/peers.sh), not beside this file; ES modules
// ignore NODE_PATH, so they are resolved from there explicitly.
const NODE_MODULES = process.env.MCPGW_TEST_NODE_MODULES
  || path.join(process.env.MCPGW_CACHE || path.join(os.homedir(), '.cache/mcp-gateway'), 'node/node_modules');
const requireFrom = createRequire(path.join(NODE_MODULES, 'resolve-from-here.js'));
const load = (name) => import(pathToFileURL(requireFrom.resolve(name)).href);
const jose = await load('jose');
const { default: Provider } = await load('oidc-provider');

const PORT = Number(process.argv[2]);
if (!Number.isInteger(PORT) || PORT <= 0) {
  console.error('usage: node oidc_provider.mjs PORT (env OIDC_KEYS_DIR required)');
  process.exit(2);
}
const KEYS_DIR = process.env.OIDC_KEYS_DIR;
if (!KEYS_DIR) {
  console.error('OIDC_KEYS_DIR is required');
  process.exit(2);
}
const ISSUER = `http://127.0.0.1:${PORT}`;
const CLIENT_ID = process.env.OIDC_CLIENT_ID || 'mcpgw-test';
const CLIENT_SECRET = process.env.OIDC_CLIENT_SECRET || 'mcpgw-test-secret';
const REDIRECT = process.env.OIDC_REDIRECT || 'http://127.0.0.1:9/callback';
const ACCESS_TTL = Number(process.env.OIDC_ACCESS_TTL || 600);
const SCOPES = ['openid', 'profile', 'email', 'groups', 'offline_access', 'mcp:read', 'mcp:write'];
// An authorization request without scope is refused by oidc-provider; MCP clients may send
// none (when the resource lists no scopes), so such requests get this one.
const DEFAULT_SCOPE = 'mcp:read';

const GROUPS = { alice: ['eng', 'mcp-admins'], bob: ['sales'] };
const claimsOf = (account) => ({
  email: `${account}@example.com`,
  groups: GROUPS[account] || [],
});

// --- keys ------------------------------------------------------------------------------------

const kid = `mcpgw-test-${crypto.randomBytes(6).toString('hex')}`;
const { privateKey, publicKey } = await jose.generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
const rogue = await jose.generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
const publicJwk = { ...(await jose.exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };

fs.mkdirSync(KEYS_DIR, { recursive: true });
const write = (name, text) => {
  // Written then renamed, so a reader never sees half a file.
  const file = path.join(KEYS_DIR, name);
  fs.writeFileSync(`${file}.tmp`, text, { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
};
write('signing-key.pem', await jose.exportPKCS8(privateKey));
write('signing-key.pub.pem', await jose.exportSPKI(publicKey));
write('signing-key.jwk.json', `${JSON.stringify(publicJwk)}\n`);
write('rogue-key.pem', await jose.exportPKCS8(rogue.privateKey));

// --- the provider ----------------------------------------------------------------------------

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: [REDIRECT],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: SCOPES.join(' '),
  }],
  jwks: { keys: [signingJwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: SCOPES,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  pkce: { required: () => true },
  // The claims of the scopes asked for go into the ID token too (the console's sign-in reads
  // email and groups there, as at IdPs configured to emit them), not only into userinfo.
  conformIdTokenClaims: false,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Every refresh rotates the refresh token, confidential clients' too (the default rotates
  // only public clients'): a refresh token redeemed twice is a reuse, which revokes the grant.
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: ACCESS_TTL,
    AuthorizationCode: 60,
    RefreshToken: 86400,
    Grant: 86400,
    Interaction: 600,
    Session: 86400,
    IdToken: 3600,
  },
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, name: sub, email_verified: true, ...claimsOf(sub) }),
  }),
  // The claims the gateway reads, in every access token (JWT ones here).
  extraTokenClaims: async (ctx, token) => (token.accountId ? claimsOf(token.accountId) : undefined),
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    // RFC 7592: the gateway adds a redirect URI to its registered client when a server is
    // added later. OIDC_NO_REGISTRATION_MANAGEMENT=1 turns it off (as at many providers).
    registrationManagement: { enabled: !process.env.OIDC_NO_REGISTRATION_MANAGEMENT },
    revocation: { enabled: true },
    // Machine tokens for the gateway's oauth2_client_credentials servers.
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => ({
        audience: resource,
        scope: SCOPES.filter((s) => s.startsWith('mcp:')).join(' '),
        accessTokenFormat: 'jwt',
        accessTokenTTL: ACCESS_TTL,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/.well-known/oauth-authorization-server') {
    // RFC 8414 metadata: the same document as OIDC discovery.
    ctx.path = '/.well-known/openid-configuration';
  }
  if (ctx.method === 'GET' && ctx.path === '/auth' && !ctx.query.scope) {
    ctx.query = { ...ctx.query, scope: DEFAULT_SCOPE };
  }
  await next();
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
for (const ev of ['grant.error', 'authorization.error', 'registration_create.error', 'introspection.error']) {
  provider.on(ev, (ctx, err) => console.error(ev, err.error, err.error_description || '', err.error_detail || ''));
}
provider.on('access_token.issued', (token) => console.log('access token issued', token.accountId, token.aud));

// What the token endpoint did, per grant type, for tests that count redemptions at the
// provider (GET /_stats): {"refresh_token": {"success": n, "error": n}, ...}.
const stats = {};
const count = (ctx, outcome) => {
  const type = ctx.oidc?.params?.grant_type || 'unknown';
  stats[type] = stats[type] || { success: 0, error: 0 };
  stats[type][outcome] += 1;
};
provider.on('grant.success', (ctx) => count(ctx, 'success'));
provider.on('grant.error', (ctx) => count(ctx, 'error'));

// Approves any pending interaction: login as login_hint, then consent to everything asked.
async function autoApprove(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const accountId = params.login_hint || 'test-user';
    return provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    autoApprove(req, res).catch((e) => {
      console.error('interaction failed', e);
      res.statusCode = 500;
      res.end(String(e));
    });
  } else if (req.method === 'GET' && req.url === '/_stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
  } else {
    callback(req, res);
  }
});
server.listen(PORT, '127.0.0.1', () => console.log(`oidc-provider listening on ${ISSUER} (kid ${kid})`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
