// A blocking HTTP client over `wasi:http/outgoing-handler`, for hooks. hoist's hooks are
// synchronous calls (a `fetch` promise cannot be awaited in them), so the client blocks on the
// host's pollables:
//
//   import { http } from 'hoist-sdk';
//   const state = http.get(`http://${http.hostPort(pod.ip, 8080)}/v1/info/state`).errorForStatus().json();
//   http.put(url, { json: 'DRAINING' }).errorForStatus();
//
// The host decides where a request may go (the Scaler's allow-list, the cluster's policy); a
// refused request throws an HttpError naming why. Bodies are read up to MAX_BODY_BYTES.

import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest, RequestOptions } from 'wasi:http/types@0.2.12';

/** Largest response body read (the Rust SDK's limit too). */
export const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** Default deadline of one request, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 10_000;

const METHODS = new Set(['get', 'head', 'post', 'put', 'delete', 'patch', 'options']);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A request that could not be sent, or (from errorForStatus) an error status. */
export class HttpError extends Error {
  constructor(message, status) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
  }
}

/** A received response: status, headers ([lowercase name, value] pairs) and body bytes. */
export class Response {
  constructor(url, status, headers, body) {
    this.url = url;
    this.status = status;
    this.headers = headers;
    this.body = body;
  }

  /** The first value of header `name`, if any. */
  header(name) {
    const wanted = name.toLowerCase();
    const found = this.headers.find(([key]) => key.toLowerCase() === wanted);
    return found === undefined ? undefined : found[1];
  }

  text() {
    return decoder.decode(this.body);
  }

  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new HttpError(`${this.url}: the body is not JSON: ${e.message}`);
    }
  }

  /** This response, or an HttpError when the status is 400 or more. */
  errorForStatus() {
    if (this.status >= 400) {
      throw new HttpError(`${this.url} answered ${this.status}: ${this.text().slice(0, 200)}`, this.status);
    }
    return this;
  }
}

/** `host:port`, with an IPv6 address in brackets. */
export function hostPort(host, port) {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

function describe(error) {
  if (error && typeof error === 'object' && 'tag' in error) {
    return error.val === undefined ? error.tag : `${error.tag}: ${JSON.stringify(error.val)}`;
  }
  if (error && typeof error === 'object' && 'payload' in error) {
    return describe(error.payload);
  }
  return String(error);
}

function attempt(what, call) {
  try {
    return call();
  } catch (e) {
    throw new HttpError(`${what}: ${describe(e)}`);
  }
}

/**
 * Sends one request and reads the whole response (up to MAX_BODY_BYTES).
 * @param {string} method
 * @param {string} url
 * @param {{headers?: Record<string, string>, body?: string | Uint8Array, json?: unknown, timeoutMs?: number}} [options]
 * @returns {Response}
 */
export function request(method, url, options = {}) {
  const parsed = /^(https?):\/\/([^/?#]+)([^#]*)/.exec(url);
  if (parsed === null) {
    throw new HttpError(`${JSON.stringify(url)} is not an http(s) URL`);
  }
  const [, scheme, authority, rest] = parsed;
  const verb = method.toLowerCase();
  if (!METHODS.has(verb)) {
    throw new HttpError(`${JSON.stringify(method)} is not a supported method`);
  }
  const entries = Object.entries(options.headers ?? {}).map(([k, v]) => [k.toLowerCase(), encoder.encode(v)]);
  let body = options.body;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    entries.push(['content-type', encoder.encode('application/json')]);
  }
  const bytes = typeof body === 'string' ? encoder.encode(body) : body;
  // Always state the body's length: servers that do not take chunked request bodies then read
  // exactly the body (as the Rust SDK does).
  if ((bytes !== undefined && bytes.length > 0) || ['put', 'post', 'patch'].includes(verb)) {
    entries.push(['content-length', encoder.encode(String(bytes === undefined ? 0 : bytes.length))]);
  }
  const fields = attempt(`${url}: headers`, () => Fields.fromList(entries));
  const outgoing = new OutgoingRequest(fields);
  outgoing.setMethod({ tag: verb });
  outgoing.setScheme({ tag: scheme === 'https' ? 'HTTPS' : 'HTTP' });
  outgoing.setAuthority(authority);
  outgoing.setPathWithQuery(rest === '' ? '/' : rest);
  const deadline = BigInt(options.timeoutMs ?? DEFAULT_TIMEOUT_MS) * 1_000_000n;
  const requestOptions = new RequestOptions();
  requestOptions.setConnectTimeout(deadline);
  requestOptions.setFirstByteTimeout(deadline);
  requestOptions.setBetweenBytesTimeout(deadline);
  const outgoingBody = outgoing.body();
  const future = attempt(url, () => handle(outgoing, requestOptions));
  if (bytes !== undefined && bytes.length > 0) {
    const stream = outgoingBody.write();
    for (let start = 0; start < bytes.length; start += 4096) {
      attempt(`${url}: sending the body`, () => stream.blockingWriteAndFlush(bytes.subarray(start, start + 4096)));
    }
    stream[Symbol.dispose]?.();
  }
  attempt(`${url}: finishing the body`, () => OutgoingBody.finish(outgoingBody, undefined));
  future.subscribe().block();
  const answer = future.get();
  if (answer === undefined || answer.tag === 'err') {
    throw new HttpError(`${url}: no response`);
  }
  if (answer.val.tag === 'err') {
    throw new HttpError(`${url}: ${describe(answer.val.val)}`);
  }
  const response = answer.val.val;
  const status = response.status();
  const headers = response.headers().entries().map(([k, v]) => [k, decoder.decode(v)]);
  const incoming = attempt(`${url}: reading the body`, () => response.consume());
  const stream = attempt(`${url}: reading the body`, () => incoming.stream());
  const chunks = [];
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (e) {
      const error = e && typeof e === 'object' && 'payload' in e ? e.payload : e;
      if (error && error.tag === 'closed') {
        break;
      }
      throw new HttpError(`${url}: reading the body: ${describe(error)}`);
    }
    chunks.push(chunk);
    length += chunk.length;
    if (length > MAX_BODY_BYTES) {
      throw new HttpError(`${url}: the body is longer than ${MAX_BODY_BYTES} bytes`);
    }
  }
  const data = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    data.set(chunk, offset);
    offset += chunk.length;
  }
  return new Response(url, status, headers, data);
}

export const get = (url, options) => request('GET', url, options);
export const post = (url, options) => request('POST', url, options);
export const put = (url, options) => request('PUT', url, options);
export const del = (url, options) => request('DELETE', url, options);
