'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { createRequest, createClient } = require('../lib');
const fake = require('./fake-bearerd');

test('invokeTemplate resolves with FDK\'s shape and sends context, body, query and the caller', async () => {
  const b = await fake.start();
  try {
    const request = createRequest({ url: b.url, credential: 'caller-secret', app: 'demo', account: 'agent-1' });
    const r = await request.invokeTemplate('ok', { context: { id: 42 }, body: JSON.stringify({ a: 1 }), query: { page: 2 } });
    assert.deepEqual(Object.keys(r).sort(), ['attempts', 'headers', 'response', 'status']);
    assert.equal(r.status, 200);
    assert.equal(r.response, '{"id":7}', 'the body as a string');
    assert.equal(r.attempts, 1);
    assert.equal(r.headers['x-bearerd-template'], 'ok');
    const sent = b.seen[0];
    assert.equal(sent.url, '/invoke/ok');
    assert.deepEqual(sent.body, { context: { id: 42 }, body: '{"a":1}', query: { page: 2 } });
    assert.equal(sent.headers.authorization, 'Bearer caller-secret');
    assert.equal(sent.headers['x-bearerd-app'], 'demo');
    assert.equal(sent.headers['x-bearerd-account'], 'agent-1');
    // options.account names the agent for one call; the front end's client has the same method.
    await createClient({ url: b.url }).request.invokeTemplate('ok', { context: {}, options: { account: 'agent-2' } });
    assert.equal(b.seen[1].headers['x-bearerd-account'], 'agent-2');
    assert.equal(b.seen[1].headers.authorization, undefined, 'no credential unless one is set');
  } finally {
    await b.close();
  }
});

test('rejections carry errorSource: bearerd\'s own from its body, an upstream\'s APP', async () => {
  const b = await fake.start();
  try {
    const request = createRequest({ url: b.url });
    const reject = (name) => request.invokeTemplate(name, { context: {} }).then(() => assert.fail('resolved'), (e) => e);
    const missing = await reject('missing');
    assert.equal(missing.status, 404);
    assert.equal(missing.errorSource, 'APP');
    assert.match(missing.response, /Request template not found/);
    assert.deepEqual(Object.keys(missing).sort(), ['attempts', 'errorSource', 'headers', 'response', 'status']);
    const token = await reject('token');
    assert.deepEqual([token.status, token.errorSource], [401, 'PLATFORM']);
    const upstream = await reject('upstream');
    assert.deepEqual([upstream.status, upstream.errorSource, upstream.attempts, upstream.response], [500, 'APP', 2, 'upstream broke']);
  } finally {
    await b.close();
  }
});

test('bearerd out of reach rejects with 502 PLATFORM, saying so', async () => {
  const request = createRequest({ url: 'http://127.0.0.1:9' });
  const e = await request.invokeTemplate('ok', {}).then(() => assert.fail('resolved'), (x) => x);
  assert.equal(e.status, 502);
  assert.equal(e.errorSource, 'PLATFORM');
  assert.match(e.response, /bearerd cannot be reached at http:\/\/127\.0\.0\.1:9/);
});

test('BEARERD_URL and BEARERD_CREDENTIAL are read from the environment', async () => {
  const b = await fake.start();
  const saved = { ...process.env };
  try {
    process.env.BEARERD_URL = `${b.url}/`;
    process.env.BEARERD_CREDENTIAL = 'from-env';
    await createRequest().invokeTemplate('ok', { context: {} });
    assert.equal(b.seen[0].headers.authorization, 'Bearer from-env');
  } finally {
    process.env = saved;
    await b.close();
  }
});
