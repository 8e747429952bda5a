'use strict';
// An FDK serverless app's server.js, run the way the FDK runtime runs it (SPEC 8): the file
// assigns `exports = { handler(args) {...} }` and runs in a sandbox whose globals are FDK's
// (console, $request, renderData, timers, Buffer, require of Node built-ins and the app's
// declared dependencies); a handler is invoked by its name or by an event that manifest.json
// maps to it; its result is what it passes to renderData. Each invocation gets a sandbox of its
// own, as on the platform: globals of one never leak into another.

const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { builtinModules, createRequire } = require('node:module');
const { createRequest } = require('./request');

/** FDK's execution timeout of a server method (SMI) without one in the manifest, in ms. */
const SMI_TIMEOUT_MS = 5000;
/** FDK's execution timeout of an event handler, in ms. */
const EVENT_TIMEOUT_MS = 20000;
/** Platform features other than the request method: a clear error naming them. */
const UNSUPPORTED = ['$db', '$schedule', '$file', '$job'];

/** A platform feature bearerd does not provide: every method rejects, naming it. */
function unsupported(feature) {
  return new Proxy(
    {},
    {
      get(_, method) {
        if (typeof method === 'symbol' || method === 'then') return undefined;
        return () => {
          const e = new Error(`${feature}.${method} is an FDK platform feature that bearerd-fdk does not provide (only the request method, $request.invokeTemplate, runs here)`);
          e.status = 501;
          return Promise.reject(e);
        };
      },
    },
  );
}

function readJson(file) {
  const text = fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  return JSON.parse(text);
}

/** Event names and their handlers, and SMI functions with their timeouts, from manifest.json
 * (platform 2.x `product.<p>` or top level, 3.x `modules.<m>`). */
function readManifest(manifest) {
  const events = [];
  const functions = {};
  const scopes = [manifest];
  for (const key of ['product', 'modules']) {
    if (manifest && typeof manifest[key] === 'object') scopes.push(...Object.values(manifest[key]));
  }
  for (const scope of scopes) {
    if (!scope || typeof scope !== 'object') continue;
    for (const [event, spec] of Object.entries(scope.events || {})) {
      if (spec && typeof spec.handler === 'string') events.push({ event, handler: spec.handler });
    }
    for (const [name, spec] of Object.entries(scope.functions || {})) {
      functions[name] = spec && typeof spec.timeout === 'number' ? spec.timeout * 1000 : SMI_TIMEOUT_MS;
    }
  }
  return { events, functions, dependencies: Object.keys((manifest && manifest.dependencies) || {}) };
}

/** The error of renderData(err), as FDK answers it: {status, message} and the rest of `err`. */
function errorOf(err) {
  const out = {};
  if (err && typeof err === 'object') {
    for (const [k, v] of Object.entries(err)) if (k !== 'status' && k !== 'message') out[k] = v;
  }
  const status = err && Number.isInteger(err.status) && err.status >= 400 && err.status <= 599 ? err.status : 500;
  let message;
  if (typeof err === 'string') message = err;
  else if (err && typeof err.message === 'string') message = err.message;
  else message = JSON.stringify(err);
  return { status, message, ...out };
}

class FdkApp {
  /**
   * Loads server.js (compiled once; run afresh for each invocation). options: manifest (its
   * path; default: manifest.json of the app folder, the parent of server/), iparams (an object:
   * what args.iparams holds), request (settings of createRequest), log (where the app's console
   * writes; default stderr, so that stdout carries only results).
   */
  constructor(serverJs, options = {}) {
    this.file = path.resolve(serverJs);
    const dir = path.dirname(this.file);
    this.appDir = path.basename(dir) === 'server' ? path.dirname(dir) : dir;
    const manifestFile = options.manifest || path.join(this.appDir, 'manifest.json');
    this.manifest = fs.existsSync(manifestFile) ? readManifest(readJson(manifestFile)) : readManifest({});
    this.script = new vm.Script(fs.readFileSync(this.file, 'utf8'), { filename: this.file });
    this.iparams = options.iparams || {};
    this.request = createRequest(options.request || {});
    this.console = new console.Console({ stdout: options.log || process.stderr, stderr: options.log || process.stderr });
    const appRequire = createRequire(path.join(this.appDir, 'package.json'));
    const allowed = new Set(this.manifest.dependencies);
    this.require = (id) => {
      const bare = id.startsWith('node:') ? id.slice(5) : id;
      if (builtinModules.includes(bare)) return require(id);
      const pkg = id.startsWith('@') ? id.split('/').slice(0, 2).join('/') : id.split('/')[0];
      if (allowed.has(pkg)) return appRequire(id);
      throw new Error(`require('${id}'): not a Node built-in, and not a dependency manifest.json declares`);
    };
  }

  /** The handler an invocation names: a handler itself, or an event manifest.json (or a legacy
   * `exports.events` list) maps to exactly one handler. */
  resolve(name, handlers) {
    if (typeof handlers[name] === 'function') return name;
    const mapped = this.manifest.events.filter((e) => e.event === name).map((e) => e.handler);
    if (Array.isArray(handlers.events)) {
      for (const e of handlers.events) if (e && e.event === name && typeof e.callback === 'string') mapped.push(e.callback);
    }
    const distinct = [...new Set(mapped)].sort();
    if (distinct.length > 1) throw errorOf({ status: 400, message: `event ${name} maps to several handlers: ${distinct.join(', ')}` });
    if (distinct.length === 0) throw errorOf({ status: 404, message: `server.js has no handler, and manifest.json no event, named ${name}` });
    if (typeof handlers[distinct[0]] !== 'function') {
      throw errorOf({ status: 404, message: `event ${name} maps to ${distinct[0]}, which server.js does not export` });
    }
    return distinct[0];
  }

  /** Runs the handler `name` names with `payload` (args: the payload and iparams). Resolves with
   * {response: data} for renderData(null, data), {error: {status, message}} for renderData(err),
   * a failure or a timeout: as JSON would carry it (the platform sends it on as JSON), in this
   * realm's objects rather than the sandbox's. */
  async run(name, payload = {}) {
    const result = await this.invocation(name, payload);
    return JSON.parse(JSON.stringify(result));
  }

  async invocation(name, payload) {
    let render;
    const rendered = new Promise((resolve) => {
      render = resolve;
    });
    let done = false;
    const renderData = (err, data) => {
      if (done) return;
      done = true;
      render(err ? { error: errorOf(err) } : { response: data === undefined ? null : data });
    };
    const sandbox = {
      console: this.console,
      Buffer,
      URL,
      URLSearchParams,
      TextEncoder,
      TextDecoder,
      AbortController,
      structuredClone,
      setTimeout,
      clearTimeout,
      setInterval,
      clearInterval,
      setImmediate,
      clearImmediate,
      require: this.require,
      exports: {},
      renderData,
      $request: {
        invokeTemplate: this.request.invokeTemplate,
        // Another handler of the app, as the platform's $request.invoke runs it.
        invoke: async (fn, args) => {
          const r = await this.run(fn, args || {});
          if (r.error) throw r.error;
          return r.response;
        },
      },
    };
    for (const feature of UNSUPPORTED) sandbox[feature] = unsupported(feature);
    sandbox.module = { exports: sandbox.exports };
    vm.createContext(sandbox);
    try {
      this.script.runInContext(sandbox);
    } catch (e) {
      return { error: errorOf({ status: 500, message: `server.js failed to load: ${e && e.message}` }) };
    }
    const handlers = Object.keys(sandbox.exports).length > 0 ? sandbox.exports : sandbox.module.exports;
    let handler;
    try {
      handler = this.resolve(name, handlers || {});
    } catch (e) {
      return { error: e };
    }
    const smi = Object.prototype.hasOwnProperty.call(this.manifest.functions, handler);
    const timeoutMs = smi ? this.manifest.functions[handler] : EVENT_TIMEOUT_MS;
    const args = { ...(payload && typeof payload === 'object' ? payload : {}), iparams: { ...this.iparams } };
    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => {
        resolve({ error: errorOf({ status: 504, message: `${handler} did not call renderData within ${timeoutMs / 1000} s (FDK's timeout)` }) });
      }, timeoutMs);
    });
    const failed = (e) => ({ error: errorOf({ status: 500, message: `${handler} failed: ${e && e.message ? e.message : String(e)}` }) });
    let settled;
    try {
      const value = handlers[handler].call(handlers, args);
      settled = Promise.resolve(value).then(
        () => (smi ? new Promise(() => {}) : { response: null }),
        failed,
      );
    } catch (e) {
      settled = Promise.resolve(failed(e));
    }
    try {
      // An event handler ends when it settles; a server method when it renders (or fails).
      return await Promise.race([rendered, settled, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }
}

module.exports = { FdkApp, readManifest, errorOf, SMI_TIMEOUT_MS, EVENT_TIMEOUT_MS };
