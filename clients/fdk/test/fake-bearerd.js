'use strict';
// A stand-in for bearerd's data listener, for the package's own tests: it records every request
// and answers /invoke/<name> as bearerd would for that name (bearerd's own errors carry
// x-bearerd-error: 1 and an FDK-shaped body). The end-to-end tests against bearerd itself are
// tests/fdk_code.rs.
const http = require('node:http');

const ANSWERS = {
  ok: { status: 200, headers: { 'x-bearerd-template': 'ok', 'x-bearerd-attempts': '1', 'content-type': 'application/json' }, body: '{"id":7}' },
  missing: { status: 404, headers: { 'x-bearerd-error': '1', 'content-type': 'application/json' }, body: '{"status":404,"message":"Request template not found: missing","errorSource":"APP"}' },
  token: { status: 401, headers: { 'x-bearerd-error': '1' }, body: '{"status":401,"message":"No token for integration api","errorSource":"PLATFORM","authorize":"http://x"}' },
  upstream: { status: 500, headers: { 'x-bearerd-template': 'upstream', 'x-bearerd-attempts': '2' }, body: 'upstream broke' },
};

async function start() {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const name = decodeURIComponent(req.url.replace(/^\/invoke\//, ''));
      seen.push({ method: req.method, url: req.url, headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString() || '{}') });
      const a = ANSWERS[name] || ANSWERS.ok;
      res.writeHead(a.status, a.headers);
      res.end(a.body);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => new Promise((r) => server.close(r)) };
}

module.exports = { start };
