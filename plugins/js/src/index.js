// Write hoist hook plugins in JavaScript. A plugin exports `hooks`, built by exportHooks from
// an object with the hooks it needs; componentize-js builds the module into a component of the
// `hoist:hooks/hook` world:
//
//   import { exportHooks, done, inProgress, config, http } from 'hoist-sdk';
//   export const hooks = exportHooks({
//     preScale(ctx) { ...; return inProgress('draining', 2000, '2 pods draining'); },
//   });
//
// Throw InvalidConfig, Remote or Other to fail a hook with that category; an http.HttpError is
// Remote, a config.ConfigError InvalidConfig, anything else Other (with its message).

import { log as hostLog } from 'hoist:hooks/log@0.1.1';
import { get as getSecret } from 'hoist:hooks/secrets@0.1.1';
import * as config from './config.js';
import * as http from './http.js';

export { config, http };

/** A hook's failure; the subclass is its category. */
export class HookError extends Error {}
/** The configuration is unusable (`invalid-config`). */
export class InvalidConfig extends HookError {}
/** The product answered wrong or not at all (`remote`). */
export class Remote extends HookError {}
/** Anything else (`other`). */
export class Other extends HookError {}

/** The hook finished. */
export function done(message = 'done') {
  return { tag: 'done', val: message };
}

/** Call again after `retryAfterMs`, handing back `state` as `ctx.savedState`. */
export function inProgress(state, retryAfterMs, message) {
  return { tag: 'in-progress', val: { state, retryAfterMs: BigInt(retryAfterMs), message } };
}

/** The secret handed to this call under `name` (spec.hooks.secrets), if any. */
export function secret(name) {
  return getSecret(name);
}

export const debug = (message) => hostLog('debug', message);
export const info = (message) => hostLog('info', message);
export const warn = (message) => hostLog('warn', message);
export const error = (message) => hostLog('error', message);

/** Whether the operation removes replicas. */
export function isScaleDown(ctx) {
  return ctx.direction === 'down';
}

function hookError(e) {
  const message = (e && e.message) || String(e);
  if (e instanceof InvalidConfig || e instanceof config.ConfigError) {
    return { tag: 'invalid-config', val: message };
  }
  if (e instanceof Remote || e instanceof http.HttpError) {
    return { tag: 'remote', val: message };
  }
  return { tag: 'other', val: message };
}

/**
 * The `hooks` export of the component: calls `impl`'s hooks (defaults: done at once, any JSON
 * object accepted as configuration) and turns exceptions into the contract's hook errors.
 */
export function exportHooks(impl) {
  const wrap = (name, fallback) => (...args) => {
    const hook = impl[name] ?? fallback;
    try {
      return hook.apply(impl, args);
    } catch (e) {
      throw hookError(e);
    }
  };
  return {
    preScale: wrap('preScale', () => done()),
    postScale: wrap('postScale', () => done()),
    onFailure: wrap('onFailure', () => undefined),
    validateConfig(text) {
      try {
        (impl.validateConfig ?? ((t) => config.parse(t, {}))).call(impl, text);
      } catch (e) {
        throw (e && e.message) || String(e);
      }
    },
  };
}
