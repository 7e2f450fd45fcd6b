// Lets @modelcontextprotocol/conformance run on Node 20. Load it with
//   NODE_OPTIONS="--import /path/to/node20-globsync.mjs"
//
// The suite's bundle does `import { globSync } from "fs"`. fs.globSync only exists from Node 22
// on, and an ESM named import of a missing export fails at link time, before any code runs,
// even though only the suite's `tier-check` command ever calls it. The export list of the
// built-in `fs` facade is fixed at start-up, so adding the function to `fs` from a preload does
// not help: instead this module registers a resolve hook that hands the suite's `fs` imports a
// small module re-exporting node:fs plus a globSync that throws if it is ever called.
// On Node 22+ it does nothing.
import fs from 'node:fs';
import { register } from 'node:module';
import { isMainThread } from 'node:worker_threads';

const SHIM =
  'data:text/javascript,' +
  encodeURIComponent(`
    import fs from 'node:fs';
    export * from 'node:fs';
    export default fs;
    export const globSync = fs.globSync ?? (() => {
      throw new Error('fs.globSync needs Node >= 22 (running ' + process.version + ')');
    });
  `);

// The resolve hook (runs on Node's hooks thread). Only the suite's own imports are redirected.
export async function resolve(specifier, context, next) {
  if (
    (specifier === 'fs' || specifier === 'node:fs') &&
    context.parentURL?.includes('/@modelcontextprotocol/conformance/')
  ) {
    return { url: SHIM, shortCircuit: true };
  }
  return next(specifier, context);
}

// Registered from the main thread only: the hooks thread loads this same file to find
// `resolve`, and must not register it a second time.
if (isMainThread && typeof fs.globSync !== 'function') {
  register(import.meta.url);
}
