'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { FdkApp } = require('../lib');
const fake = require('./fake-bearerd');

/** An app folder with manifest.json and server/server.js; the path of server.js. */
function appFolder(manifest, serverJs) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bearerd-fdk-'));
  fs.mkdirSync(path.join(dir, 'server'));
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  fs.writeFileSync(path.join(dir, 'server', 'server.js'), serverJs);
  return path.join(dir, 'server', 'server.js');
}

const MANIFEST = {
  'platform-version': '3.0',
  modules: {
    common: { requests: { ok: {}, missing: {} }, functions: { lookup: { timeout: 1 }, silent: { timeout: 1 } } },
    support_ticket: { events: { onTicketCreate: { handler: 'onTicketCreateHandler' } } },
  },
};

// Written the way FDK apps are: `exports =`, the globals, renderData, a caught rejection.
const SERVER = `
exports = {
  onTicketCreateHandler: async function (args) {
    const ticket = args.data.ticket;
    try {
      await $request.invokeTemplate('ok', { context: { id: ticket.id }, body: JSON.stringify({ note: 'hi ' + args.iparams.team }) });
    } catch (error) {
      console.error('reply failed', error.status);
    }
  },
  lookup: async function (args) {
    try {
      const r = await $request.invokeTemplate(args.template, { context: { q: args.q } });
      renderData(null, { status: r.status, body: JSON.parse(r.response) });
    } catch (error) {
      renderData({ status: error.status, message: 'lookup failed', errorSource: error.errorSource });
    }
  },
  silent: function () {},
  thrower: function () { throw new Error('kaboom'); },
  usesDb: async function () {
    try { await $db.set('k', { v: 1 }); renderData(null, 'stored'); } catch (e) { renderData({ status: e.status, message: e.message }); }
  },
  usesRequire: function () { renderData(null, { hash: require('crypto').createHash('sha256').update('x').digest('hex').slice(0, 8), b: Buffer.from('a').toString('base64') }); },
  usesUndeclared: function () { require('left-pad'); },
  leaks: function () { globalThis.leaked = (globalThis.leaked || 0) + 1; renderData(null, globalThis.leaked); },
  chained: async function () { renderData(null, await $request.invoke('usesRequire', {})); },
  twice: function () { renderData(null, 1); renderData(null, 2); },
  plainError: function () { renderData('a string'); },
};
`;

test('an event handler calls templates with context and body, and ends when it settles', async () => {
  const b = await fake.start();
  try {
    const app = new FdkApp(appFolder(MANIFEST, SERVER), { request: { url: b.url }, iparams: { team: 'blue' } });
    const r = await app.run('onTicketCreate', { data: { ticket: { id: 9 } } });
    assert.deepEqual(r, { response: null });
    assert.deepEqual(b.seen[0].body, { context: { id: 9 }, body: '{"note":"hi blue"}' });
    // By its handler's name too.
    await app.run('onTicketCreateHandler', { data: { ticket: { id: 10 } } });
    assert.equal(b.seen[1].body.context.id, 10);
  } finally {
    await b.close();
  }
});

test('a server method answers with what it renders: data, or FDK\'s error shape', async () => {
  const b = await fake.start();
  try {
    const app = new FdkApp(appFolder(MANIFEST, SERVER), { request: { url: b.url } });
    assert.deepEqual(await app.run('lookup', { template: 'ok', q: 'x' }), { response: { status: 200, body: { id: 7 } } });
    assert.deepEqual(await app.run('lookup', { template: 'missing' }), {
      error: { status: 404, message: 'lookup failed', errorSource: 'APP' },
    });
    assert.deepEqual(await app.run('twice'), { response: 1 }, 'the first renderData counts');
    assert.deepEqual(await app.run('plainError'), { error: { status: 500, message: 'a string' } });
    const thrown = await app.run('thrower');
    assert.equal(thrown.error.status, 500);
    assert.match(thrown.error.message, /thrower failed: kaboom/);
  } finally {
    await b.close();
  }
});

test('a server method that never renders fails after its timeout', async () => {
  const app = new FdkApp(appFolder(MANIFEST, SERVER));
  const t0 = Date.now();
  const r = await app.run('silent');
  assert.equal(r.error.status, 504);
  assert.match(r.error.message, /did not call renderData within 1 s/);
  assert.ok(Date.now() - t0 >= 900);
});

test('platform features other than the request method are refused by name; require is FDK\'s', async () => {
  const app = new FdkApp(appFolder(MANIFEST, SERVER));
  const db = await app.run('usesDb');
  assert.equal(db.error.status, 501);
  assert.match(db.error.message, /\$db\.set is an FDK platform feature that bearerd-fdk does not provide/);
  assert.deepEqual(await app.run('usesRequire'), { response: { hash: '2d711642', b: 'YQ==' } });
  const undeclared = await app.run('usesUndeclared');
  assert.match(undeclared.error.message, /require\('left-pad'\): not a Node built-in, and not a dependency manifest.json declares/);
  assert.deepEqual(await app.run('chained'), { response: { hash: '2d711642', b: 'YQ==' } }, '$request.invoke runs another handler');
});

test('each invocation has a sandbox of its own', async () => {
  const app = new FdkApp(appFolder(MANIFEST, SERVER));
  assert.deepEqual(await app.run('leaks'), { response: 1 });
  assert.deepEqual(await app.run('leaks'), { response: 1 });
  assert.equal(globalThis.leaked, undefined);
});

test('events come from manifest.json (2.x and 3.x) or a legacy exports.events list; an unknown or ambiguous name is refused', async () => {
  const legacy = `exports = { events: [{ event: 'onAppInstall', callback: 'installed' }], installed: function () { renderData(null, 'ok'); }, a: function () {}, b: function () {} };`;
  const manifest = { 'platform-version': '2.3', product: { freshdesk: { events: { onTicketUpdate: { handler: 'a' } } } }, events: { onTicketUpdate: { handler: 'b' } } };
  const app = new FdkApp(appFolder(manifest, legacy));
  assert.deepEqual(await app.run('onAppInstall'), { response: 'ok' });
  const ambiguous = await app.run('onTicketUpdate');
  assert.match(ambiguous.error.message, /maps to several handlers: a, b/);
  const unknown = await app.run('onNothing');
  assert.deepEqual([unknown.error.status, /no handler, and manifest.json no event, named onNothing/.test(unknown.error.message)], [404, true]);
});
