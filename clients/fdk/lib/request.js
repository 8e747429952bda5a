'use strict';
// The request method of FDK apps, against bearerd (SPEC 8): invokeTemplate(name, {context, body,
// query, options}) calls POST /invoke/<name> on bearerd and resolves or rejects with FDK's shapes.

const DEFAULT_URL = 'http://127.0.0.1:10080';

/** The answer's headers as FDK gives them: a plain object, names in lower case. */
function headersOf(response) {
  const out = {};
  for (const [name, value] of response.headers) out[name] = value;
  return out;
}

/**
 * A request method bound to one bearerd.
 * settings: url (default $BEARERD_URL, else http://127.0.0.1:10080), credential (a caller's
 * secret or token, default $BEARERD_CREDENTIAL), app (default $BEARERD_APP), account (the agent
 * account, default $BEARERD_ACCOUNT), fetch (for tests).
 */
function createRequest(settings = {}) {
  const env = process.env;
  const base = (settings.url || env.BEARERD_URL || DEFAULT_URL).replace(/\/+$/, '');
  const credential = settings.credential !== undefined ? settings.credential : env.BEARERD_CREDENTIAL;
  const app = settings.app !== undefined ? settings.app : env.BEARERD_APP;
  const defaultAccount = settings.account !== undefined ? settings.account : env.BEARERD_ACCOUNT;
  const doFetch = settings.fetch || globalThis.fetch;

  /**
   * FDK's invokeTemplate: resolves with {status, headers, response, attempts} (response: the
   * body as a string) for a status below 400; rejects with {status, headers, response, attempts,
   * errorSource} otherwise: bearerd's own errors (x-bearerd-error: 1) carry the errorSource of
   * their body, an upstream's answer is APP, and bearerd out of reach is 502 PLATFORM.
   */
  async function invokeTemplate(name, options = {}) {
    if (typeof name !== 'string' || name === '') {
      throw { status: 400, headers: {}, response: 'invokeTemplate needs a template name', attempts: 0, errorSource: 'APP' };
    }
    const opts = options || {};
    const payload = { context: opts.context || {} };
    if (opts.body !== undefined) payload.body = opts.body;
    if (opts.query !== undefined) payload.query = opts.query;
    const headers = { 'content-type': 'application/json', accept: '*/*' };
    const account = (opts.options && opts.options.account) || opts.account || defaultAccount;
    if (account) headers['x-bearerd-account'] = String(account);
    if (app) headers['x-bearerd-app'] = String(app);
    if (credential) headers.authorization = `Bearer ${credential}`;
    const url = `${base}/invoke/${encodeURIComponent(name)}`;
    let response;
    try {
      response = await doFetch(url, { method: 'POST', headers, body: JSON.stringify(payload) });
    } catch (e) {
      const cause = (e && e.cause && (e.cause.code || e.cause.message)) || (e && e.message) || String(e);
      throw {
        status: 502,
        headers: {},
        response: `bearerd cannot be reached at ${base}: ${cause}`,
        attempts: 0,
        errorSource: 'PLATFORM',
      };
    }
    const text = await response.text();
    const answerHeaders = headersOf(response);
    const attempts = Number.parseInt(answerHeaders['x-bearerd-attempts'] || '0', 10) || 0;
    const result = { status: response.status, headers: answerHeaders, response: text, attempts };
    if (response.status < 400) return result;
    let errorSource = 'APP';
    if (answerHeaders['x-bearerd-error'] === '1') {
      try {
        errorSource = JSON.parse(text).errorSource || 'PLATFORM';
      } catch (_) {
        errorSource = 'PLATFORM';
      }
    }
    throw { ...result, errorSource };
  }

  return { invokeTemplate };
}

module.exports = { createRequest, DEFAULT_URL };
