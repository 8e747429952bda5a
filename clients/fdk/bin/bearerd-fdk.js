#!/usr/bin/env node
'use strict';
// bearerd-fdk: run an FDK serverless app's server.js against bearerd, as `fdk run` runs it.
//
//   bearerd-fdk invoke SERVER_JS NAME [PAYLOAD.json | -] [--iparams FILE.json] [--manifest FILE] [--account ID]
//   bearerd-fdk serve [SERVER_JS] [--port 10099] [--iparams FILE.json] [--manifest FILE] [--account ID]
//
// NAME is a handler, or an event manifest.json maps to one. invoke prints the result as JSON
// ({"response": ...} or {"error": {"status", "message"}}) and exits 0, or 1 for an error; serve
// answers POST /event/<NAME> (body: the payload) with 200 or the error's status. The app's console
// writes to stderr. Environment: BEARERD_URL (default http://127.0.0.1:10080), BEARERD_CREDENTIAL,
// BEARERD_APP, BEARERD_ACCOUNT; without --iparams, the installation parameters bearerd has for the
// app (BEARERD_ADMIN_URL, default http://127.0.0.1:10001; BEARERD_ADMIN_TOKEN), non-secure ones only.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { FdkApp } = require('../lib/runtime');

const USAGE = `usage:
  bearerd-fdk invoke SERVER_JS NAME [PAYLOAD.json | -] [--iparams FILE.json] [--manifest FILE] [--account ID]
  bearerd-fdk serve [SERVER_JS] [--port 10099] [--iparams FILE.json] [--manifest FILE] [--account ID]`;

function fail(message, code = 2) {
  process.stderr.write(`bearerd-fdk: ${message}\n`);
  process.exit(code);
}

function parse(argv) {
  const positional = [];
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    if (a.startsWith('--')) {
      const [k, v] = a.includes('=') ? a.slice(2).split(/=(.*)/s) : [a.slice(2), argv[++i]];
      if (v === undefined) fail(`--${k} needs a value\n${USAGE}`);
      flags[k] = v;
    } else positional.push(a);
  }
  return { positional, flags };
}

function readJson(file, what) {
  try {
    const text = file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8');
    return JSON.parse(text.replace(/^\uFEFF/, '') || '{}');
  } catch (e) {
    return fail(`${what} ${file}: ${e.message}`);
  }
}

// The name bearerd gives an app folder under `run --app` (AppSource::name in
// src/config/install.rs): its real folder name, lowercased, [a-z0-9_] kept and the rest '-',
// trimmed of '-'; "app" when nothing is left.
function appName(dir) {
  let real = dir;
  try { real = fs.realpathSync(dir); } catch { /* as given */ }
  const name = path.basename(real).toLowerCase().replace(/[^a-z0-9_]/g, '-').replace(/^-+|-+$/g, '');
  return name || 'app';
}

/** The installation parameters: --iparams, else what bearerd holds for the app. */
async function iparamsFor(flags, app) {
  if (flags.iparams) return readJson(flags.iparams, '--iparams');
  const admin = (process.env.BEARERD_ADMIN_URL || 'http://127.0.0.1:10001').replace(/\/+$/, '');
  const name = process.env.BEARERD_APP || appName(app.appDir);
  const headers = process.env.BEARERD_ADMIN_TOKEN ? { authorization: `Bearer ${process.env.BEARERD_ADMIN_TOKEN}` } : {};
  try {
    const r = await fetch(`${admin}/admin/iparams/${encodeURIComponent(name)}`, { headers });
    if (r.ok) return await r.json();
    process.stderr.write(`bearerd-fdk: no installation parameters from ${admin} for app ${name} (HTTP ${r.status}); args.iparams is empty (give --iparams FILE.json)\n`);
  } catch (e) {
    process.stderr.write(`bearerd-fdk: bearerd's admin listener ${admin} cannot be reached (${e.cause ? e.cause.code : e.message}); args.iparams is empty (give --iparams FILE.json)\n`);
  }
  return {};
}

async function load(file, flags) {
  if (!fs.existsSync(file)) fail(`${file}: no such file (the app's server/server.js)`);
  let app;
  try {
    app = new FdkApp(file, { manifest: flags.manifest, request: { account: flags.account } });
  } catch (e) {
    fail(`${file}: ${e.message}`);
  }
  app.iparams = await iparamsFor(flags, app);
  return app;
}

async function invoke(positional, flags) {
  const [file, name, payloadFile] = positional;
  if (!file || !name) fail(USAGE);
  const payload = payloadFile ? readJson(payloadFile, 'payload') : {};
  const app = await load(file, flags);
  const result = await app.run(name, payload);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.exitCode = result.error ? 1 : 0;
}

async function serve(positional, flags) {
  const file = positional[0] || path.join('server', 'server.js');
  const app = await load(file, flags);
  const port = Number(flags.port || 10099);
  const server = http.createServer((req, res) => {
    const answer = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body)}\n`);
    };
    const m = /^\/event\/([^/?]+)$/.exec(req.url.split('?')[0]);
    if (req.method === 'GET' && req.url === '/healthz') return answer(200, { ok: true });
    if (req.method !== 'POST' || !m) return answer(404, { error: { status: 404, message: 'POST /event/<handler or event name>' } });
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 1 << 20) req.destroy();
      else chunks.push(c);
    });
    req.on('end', async () => {
      let payload = {};
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() !== '') {
        try {
          payload = JSON.parse(text);
        } catch (e) {
          return answer(400, { error: { status: 400, message: `the payload is not JSON: ${e.message}` } });
        }
      }
      const result = await app.run(decodeURIComponent(m[1]), payload);
      answer(result.error ? result.error.status : 200, result);
    });
  });
  server.listen(port, flags.host || '127.0.0.1', () => {
    const { address, port: bound } = server.address();
    process.stderr.write(`bearerd-fdk: serving ${file} on http://${address}:${bound} (POST /event/<name>)\n`);
  });
}

const { positional, flags } = parse(process.argv.slice(2));
const command = positional.shift();
const run = { invoke, serve }[command];
if (!run) fail(USAGE);
run(positional, flags).catch((e) => fail(e && e.stack ? e.stack : String(e), 1));
