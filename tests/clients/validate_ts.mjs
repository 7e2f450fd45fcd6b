// Validates JSON-RPC answers against the official TypeScript MCP SDKs' zod schemas.
//
// Usage: node validate_ts.mjs NODE_MODULES < answers.json
//
// Reads a JSON list of {era, method, kind, message, label?} on stdin (the same input as
// validate_py.py: `era` is the protocol version of the answer, `kind` "result", "error" or
// "notification", `message` the whole JSON-RPC message) and prints
// {"checked": N, "failures": [{label, era, method, kind, problem}]}.
//
// Session era (2025-03-26 .. 2025-11-25), the way the clients of both SDK lines read it:
// - @modelcontextprotocol/sdk 1.32 (what `Client.request(..., XResultSchema)` parses with):
//   the strict JSON-RPC envelope and the method's result schema (`EmptyResultSchema` is
//   strict, so `{resultType}` in a ping answer fails);
// - @modelcontextprotocol/client 2.x in that era: its wire codec's `decodeResult` and
//   `validateResult` (a method the era does not define fails).
// 2026-07-28, the way @modelcontextprotocol/client 2.x (the Inspector's) reads it: the
// codec's `decodeResult` (`resultType` required; `input_required` needs `inputRequests` or
// `requestState`), then `validateResult` of the lifted result (its wire schemas require
// `ttlMs`/`cacheScope` on cacheable results), each input request against its schema.
// Both eras: a result without a schema for its method fails, and session-era results must not
// carry 2026-07-28's `resultType`, `ttlMs` or `cacheScope`.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const nodeModules = process.argv[2];
if (!nodeModules) {
  console.error("usage: node validate_ts.mjs NODE_MODULES < answers.json");
  process.exit(2);
}
const require = createRequire(join(nodeModules, "noop.js"));
const load = (spec) => import(pathToFileURL(require.resolve(spec)).href);

const v1 = await load("@modelcontextprotocol/sdk/types.js");
// The 2.x client keeps its era codecs internal; its entry module imports `codecForVersion`
// from a bundled chunk under a short alias, read here from that import line.
// (its package.json is not among its exports, so it is read where it is installed)
const clientPkg = join(nodeModules, "@modelcontextprotocol/client/package.json");
const clientEntry = join(dirname(clientPkg), JSON.parse(readFileSync(clientPkg, "utf8")).exports["."].import.default);
const entryText = readFileSync(clientEntry, "utf8");
const chunkImport = entryText.match(/import \{([^}]*)\} from "(\.\/src-[^"]+\.mjs)"/);
if (!chunkImport) throw new Error("cannot find the 2.x client's codec chunk");
const alias = chunkImport[1].match(/(\S+) as codecForVersion\b/);
if (!alias) throw new Error("the 2.x client no longer exports codecForVersion from its chunk");
const chunk = await import(pathToFileURL(join(dirname(clientEntry), chunkImport[2])).href);
const codecForVersion = chunk[alias[1]];
const v2JsonRpc = chunk[chunkImport[1].match(/(\S+) as JSONRPCMessageSchema\b/)[1]];

const MODERN = "2026-07-28";
const SESSION = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
const MODERN_ONLY = ["resultType", "ttlMs", "cacheScope"];

// sdk 1.32: the result schema each of its Client methods parses with.
const V1_RESULTS = {
  initialize: v1.InitializeResultSchema,
  ping: v1.EmptyResultSchema,
  "logging/setLevel": v1.EmptyResultSchema,
  "tools/list": v1.ListToolsResultSchema,
  "tools/call": v1.CallToolResultSchema,
  "resources/list": v1.ListResourcesResultSchema,
  "resources/templates/list": v1.ListResourceTemplatesResultSchema,
  "resources/read": v1.ReadResourceResultSchema,
  "prompts/list": v1.ListPromptsResultSchema,
  "prompts/get": v1.GetPromptResultSchema,
  "completion/complete": v1.CompleteResultSchema,
};

const issues = (parsed) =>
  parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");

function checkSession(item) {
  const { era, method, kind, message } = item;
  const found = [];
  const codec = codecForVersion(era);
  if (kind === "result") {
    const env = v1.JSONRPCResultResponseSchema.safeParse(message);
    if (!env.success) found.push(`sdk 1.32 envelope: ${issues(env)}`);
    const result = message.result;
    if (result === null || typeof result !== "object" || Array.isArray(result)) {
      return [...found, "no result object"];
    }
    const schema = Object.hasOwn(V1_RESULTS, method) ? V1_RESULTS[method] : undefined;
    if (!schema) {
      found.push(`sdk 1.32 has no result schema for '${method}'`);
    } else {
      const parsed = schema.safeParse(result);
      if (!parsed.success) found.push(`sdk 1.32 ${method}: ${issues(parsed)}`);
    }
    const decoded = codec.decodeResult(method, result);
    if (decoded.kind !== "complete") {
      found.push(`client 2.x (${era}) decodes it as ${decoded.kind}`);
    } else {
      const outcome = codec.validateResult(method, decoded.result);
      if (!outcome.ok) {
        found.push(
          outcome.reason === "not-in-era"
            ? `client 2.x: '${method}' is not a method of ${era}`
            : `client 2.x (${era}) ${method}: ${outcome.message}`,
        );
      }
    }
    const stray = MODERN_ONLY.filter((k) => k in result);
    if (stray.length) found.push(`2026-07-28 field(s) ${JSON.stringify(stray)} in a ${era} result`);
    return found;
  }
  if (kind === "error") {
    const env = v1.JSONRPCErrorResponseSchema.safeParse(message);
    if (!env.success) found.push(`sdk 1.32 envelope: ${issues(env)}`);
    const any = v2JsonRpc.safeParse(message);
    if (!any.success) found.push(`client 2.x envelope: ${issues(any)}`);
    return found;
  }
  if (kind === "notification") {
    const parsed = v1.ServerNotificationSchema.safeParse(message);
    if (!parsed.success) found.push(`sdk 1.32 notification: ${issues(parsed)}`);
    const outcome = codec.validateNotification(method, message);
    if (!outcome.ok) {
      found.push(
        outcome.reason === "not-in-era"
          ? `client 2.x: '${method}' is not a notification of ${era}`
          : `client 2.x (${era}) ${method}: ${outcome.message}`,
      );
    }
    return found;
  }
  return [`unknown kind '${kind}' (result, error or notification)`];
}

function checkModern(item) {
  const { method, kind, message } = item;
  const found = [];
  const codec = codecForVersion(MODERN);
  const env = v2JsonRpc.safeParse(message);
  if (!env.success) found.push(`client 2.x envelope: ${issues(env)}`);
  if (kind === "result") {
    const result = message.result;
    if (result === null || typeof result !== "object" || Array.isArray(result)) {
      return [...found, "no result object"];
    }
    if (!codec.hasRequestMethod(method)) {
      return [...found, `'${method}' is not a method of ${MODERN}`];
    }
    const decoded = codec.decodeResult(method, result);
    if (decoded.kind === "invalid") return [...found, decoded.error.message];
    if (decoded.kind === "input_required") {
      for (const [key, request] of Object.entries(decoded.inputRequests)) {
        const outcome = codec.validateInputRequest(request?.method, request);
        if (!outcome.ok) {
          found.push(`input request '${key}': ${outcome.reason === "invalid" ? outcome.message : "not an input request of the era"}`);
        }
      }
      return found;
    }
    const outcome = codec.validateResult(method, decoded.result);
    if (!outcome.ok) {
      found.push(outcome.reason === "not-in-era" ? `'${method}' has no result in ${MODERN}` : `${method}: ${outcome.message}`);
    }
    return found;
  }
  if (kind === "error") return found;
  if (kind === "notification") {
    const outcome = codec.validateNotification(method, message);
    if (!outcome.ok) {
      found.push(
        outcome.reason === "not-in-era" ? `'${method}' is not a notification of ${MODERN}` : `${method}: ${outcome.message}`,
      );
    }
    return found;
  }
  return [`unknown kind '${kind}' (result, error or notification)`];
}

function check(item) {
  if (item.message === null || typeof item.message !== "object" || Array.isArray(item.message)) {
    return ["the message is not a JSON object"];
  }
  if (item.era === MODERN) return checkModern(item);
  if (SESSION.includes(item.era)) return checkSession(item);
  return [`unknown protocol version '${item.era}'`];
}

const items = JSON.parse(readFileSync(0, "utf8"));
if (!Array.isArray(items)) throw new Error("expected a JSON list of answers");
const failures = [];
items.forEach((item, i) => {
  for (const problem of check(item)) {
    failures.push({
      label: item.label ?? `#${i}`,
      era: item.era,
      method: item.method,
      kind: item.kind,
      problem: problem.replace(/\s+/g, " "),
    });
  }
});
console.log(JSON.stringify({ checked: items.length, failures }));
