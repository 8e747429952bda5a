'use strict';
// bearerd-fdk: FDK app code against bearerd (SPEC 8). `createRequest()` gives the request method
// ($request.invokeTemplate, client.request.invokeTemplate); `FdkApp` runs server.js handlers.
const { createRequest } = require('./request');
const { FdkApp } = require('./runtime');

/** The front-end `client` object's request method, the same function as $request's. */
function createClient(settings) {
  return { request: createRequest(settings) };
}

module.exports = { createRequest, createClient, FdkApp };
