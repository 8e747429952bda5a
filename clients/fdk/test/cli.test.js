'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const fake = require('./fake-bearerd');

const BIN = path.join(__dirname, '..', 'bin', 'bearerd-fdk.js');

function app() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bearerd-fdk-cli-'));
  fs.mkdirSync(path.join(dir, 'server'));
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ 'platform-version': '3.0', modules: { common: { functions: { fetchIt: {} } } } }));
  fs.writeFileSync(
    path.join(dir, 'server', 'server.js'),
    `exports = {
      fetchIt: async function (args) {
        console.log('a log line, on stderr');
        try {
          const r = await $request.invokeTemplate(args.name, { context: { who: args.iparams.who } });
          renderData(null, JSON.parse(r.response));
        } catch (err) {
          renderData({ status: err.status, message: err.response });
        }
      }
    };`,
  );
  fs.writeFileSync(path.join(dir, 'iparams.json'), JSON.stringify({ who: 'me' }));
  fs.writeFileSync(path.join(dir, 'payload.json'), JSON.stringify({ name: 'ok' }));
  fs.writeFileSync(path.join(dir, 'bad.json'), JSON.stringify({ name: 'missing' }));
  return dir;
}

function run(args, env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('invoke prints the result as JSON and exits 0, or 1 for an error', async () => {
  const b = await fake.start();
  const dir = app();
  try {
    const env = { BEARERD_URL: b.url };
    const iparams = ['--iparams', path.join(dir, 'iparams.json')];
    const ok = await run(['invoke', path.join(dir, 'server', 'server.js'), 'fetchIt', path.join(dir, 'payload.json'), ...iparams], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), { response: { id: 7 } });
    assert.match(ok.stderr, /a log line, on stderr/);
    assert.deepEqual(b.seen[0].body, { context: { who: 'me' } });
    const bad = await run(['invoke', path.join(dir, 'server', 'server.js'), 'fetchIt', path.join(dir, 'bad.json'), ...iparams], env);
    assert.equal(bad.code, 1);
    assert.equal(JSON.parse(bad.stdout).error.status, 404);
    const usage = await run(['invoke'], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /usage:/);
  } finally {
    await b.close();
  }
});

test('serve answers POST /event/<name> with the result and its status', async () => {
  const b = await fake.start();
  const dir = app();
  const child = spawn(process.execPath, [BIN, 'serve', path.join(dir, 'server', 'server.js'), '--port', '0', '--iparams', path.join(dir, 'iparams.json')], {
    env: { ...process.env, BEARERD_URL: b.url },
  });
  try {
    const url = await new Promise((resolve) => {
      let err = '';
      child.stderr.on('data', (d) => {
        err += d;
        const m = /serving .* on (http:\/\/[^ ]+)/.exec(err);
        if (m) resolve(m[1]);
      });
    });
    const post = (name, body) => fetch(`${url}/event/${name}`, { method: 'POST', body: JSON.stringify(body) });
    const ok = await post('fetchIt', { name: 'ok' });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { response: { id: 7 } });
    const bad = await post('fetchIt', { name: 'token' });
    assert.equal(bad.status, 401);
    assert.equal((await bad.json()).error.status, 401);
    assert.equal((await post('nothing', {})).status, 404);
  } finally {
    child.kill();
    await b.close();
  }
});
