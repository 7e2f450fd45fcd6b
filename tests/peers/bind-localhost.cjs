// Preloaded with `node --require` into third-party servers (server-everything) that call
// `listen(PORT)` without a host, which Node binds to every interface. Tests must never expose
// a peer beyond loopback, so this rewrites any listen() that has no host, or a wildcard host,
// to 127.0.0.1. Unix-socket and named-pipe listens are left alone.
'use strict';
const net = require('node:net');

const LOOPBACK = '127.0.0.1';
const WILDCARD = new Set(['', '0.0.0.0', '::', '::0']);
const isPort = (v) => typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v));

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args.length === 0 || typeof args[0] === 'function') {
    // listen() / listen(cb): an ephemeral port on all interfaces.
    args.unshift(0, LOOPBACK);
  } else if (isPort(args[0])) {
    // listen(port[, host][, backlog][, cb]): the host, if any, is the second argument.
    if (typeof args[1] !== 'string') args.splice(1, 0, LOOPBACK);
    else if (WILDCARD.has(args[1])) args[1] = LOOPBACK;
  } else if (args[0] && typeof args[0] === 'object' && args[0].path === undefined
             && !(args[0] instanceof net.Server) && args[0].fd === undefined
             && args[0]._handle === undefined) {
    // listen({ port, host, ... }) without a socket path or an inherited handle.
    if (args[0].host === undefined || WILDCARD.has(args[0].host)) {
      args[0] = { ...args[0], host: LOOPBACK };
    }
  }
  return listen.apply(this, args);
};
