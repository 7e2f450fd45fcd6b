// One row of the client matrix (tests/tests/it/clients.rs) with the official TypeScript SDK
// (@modelcontextprotocol/sdk, pinned in scripts/peers.sh) over Streamable HTTP.
//
// Usage: node ts_sdk_client.mjs SPEC_JSON   (MCPGW_TEST_NODE_MODULES: where the SDK is)
// SPEC: {"url", "token" (may be ""), "roots": bool (declare roots, answer roots/list),
//        "elicitation": "url" | "form" | null (declare elicitation with or without URL mode;
//                       URLs asked for are recorded and declined),
//        "oauth": bool (log in from the URL alone: the SDK's OAuth with a loopback callback,
//                       the authorization URL opened with $BROWSER),
//        "calls": [{"name", "arguments"}]}
// Prints one JSON object on its last stdout line, the same shape as matrix_client.py:
//   {"protocol", "tools", "calls": [{"is_error", "content", "error", "seconds"}],
//    "elicited_urls", "roots_asked"}
import { spawn } from 'node:child_process';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const NODE_MODULES = process.env.MCPGW_TEST_NODE_MODULES
  || path.join(os.homedir(), '.cache/mcp-gateway/node/node_modules');
const requireFrom = createRequire(path.join(NODE_MODULES, 'resolve-from-here.js'));
const load = (name) => import(pathToFileURL(requireFrom.resolve(name)).href);
const { Client } = await load('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = await load('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { UnauthorizedError } = await load('@modelcontextprotocol/sdk/client/auth.js');
const types = await load('@modelcontextprotocol/sdk/types.js');

// Every request's bound: a client waiting longer is stuck (an upstream request lost in a
// bridge stalls for 60 s), and the row must fail clearly, well before the test's own timeout.
const TIMEOUT_MS = 25_000;
const spec = JSON.parse(process.argv[2]);
const out = { protocol: null, tools: [], calls: [], elicited_urls: [], roots_asked: 0 };

// --- OAuth from the URL alone ------------------------------------------------------------------

// A loopback callback that resolves with the authorization code the browser brings back.
async function callbackServer() {
  let deliver;
  const code = new Promise((resolve) => { deliver = resolve; });
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://127.0.0.1');
    res.end('done');
    if (u.searchParams.get('code')) deliver(u.searchParams.get('code'));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, code, url: `http://127.0.0.1:${server.address().port}/callback` };
}

function provider(redirectUrl) {
  let client, tokens, verifier;
  return {
    get redirectUrl() { return redirectUrl; },
    get clientMetadata() {
      return { client_name: 'mcpgw-matrix-ts', redirect_uris: [redirectUrl],
        grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
        token_endpoint_auth_method: 'none' };
    },
    clientInformation: () => client,
    saveClientInformation: (c) => { client = c; },
    tokens: () => tokens,
    saveTokens: (t) => { tokens = t; },
    saveCodeVerifier: (v) => { verifier = v; },
    codeVerifier: () => verifier,
    redirectToAuthorization: (url) => {
      // The user's browser: $BROWSER (tests/peers/fake-browser.sh) follows the redirects.
      spawn(process.env.BROWSER, [url.href], { stdio: 'ignore' }).on('error', () => {});
    },
  };
}

// --- the client --------------------------------------------------------------------------------

function newClient() {
  const capabilities = {};
  if (spec.roots) capabilities.roots = { listChanged: false };
  if (spec.elicitation === 'url') capabilities.elicitation = { form: {}, url: {} };
  if (spec.elicitation === 'form') capabilities.elicitation = { form: {} };
  const client = new Client({ name: 'mcpgw-matrix-ts', version: '1.0.0' }, { capabilities });
  if (spec.roots) {
    client.setRequestHandler(types.ListRootsRequestSchema, async () => {
      out.roots_asked += 1;
      return { roots: [{ uri: 'file:///tmp/mcpgw-matrix-root', name: 'matrix-root' }] };
    });
  }
  if (spec.elicitation) {
    client.setRequestHandler(types.ElicitRequestSchema, async (req) => {
      if (req.params.url) out.elicited_urls.push(req.params.url);
      return { action: 'decline' };
    });
  }
  return client;
}

function transport(authProvider) {
  const requestInit = spec.token ? { headers: { Authorization: `Bearer ${spec.token}` } } : undefined;
  return new StreamableHTTPClientTransport(new URL(spec.url), { requestInit, authProvider });
}

async function connect() {
  if (!spec.oauth) {
    const client = newClient();
    await client.connect(transport());
    return client;
  }
  const cb = await callbackServer();
  try {
    const auth = provider(cb.url);
    const first = transport(auth);
    try {
      await newClient().connect(first);
    } catch (e) {
      if (!(e instanceof UnauthorizedError)) throw e;
      await first.finishAuth(await cb.code);
    }
    const client = newClient();
    await client.connect(transport(auth));
    return client;
  } finally {
    cb.server.close();
  }
}

function errorOf(e) {
  return { code: e?.code ?? null, message: String(e?.message ?? e), data: e?.data ?? null };
}

try {
  const client = await connect();
  out.protocol = client.transport?.protocolVersion ?? null;
  out.tools = (await client.listTools(undefined, { timeout: TIMEOUT_MS })).tools.map((t) => t.name);
  for (const call of spec.calls || []) {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      const r = await client.callTool({ name: call.name, arguments: call.arguments || {} },
        undefined, { timeout: TIMEOUT_MS });
      out.calls.push({ is_error: !!r.isError, content: (r.content || []).map((c) => c.text ?? null),
        error: null, seconds: seconds() });
    } catch (e) {
      out.calls.push({ is_error: true, content: [], error: errorOf(e), seconds: seconds() });
    }
  }
  await client.close();
} catch (e) {
  out.fatal = errorOf(e);
}
console.log(JSON.stringify(out));
process.exit(0);
