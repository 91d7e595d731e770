// trino-drain in JavaScript: before a scale-down, asks every leaving Trino worker to drain
// (`PUT /v1/info/state "DRAINING"`) and polls until each reports `DRAINED`; if the operation
// fails, puts them back `ACTIVE`. The same logic as the Rust plugin in plugins/trino-drain.

import { config, done, exportHooks, http, info, inProgress } from 'hoist-sdk';

const SCHEMA = { port: 'number', pollIntervalMs: ['number', 2000], user: ['string', 'hoist'] };

const stateUrl = (ip, port) => `http://${http.hostPort(ip, port)}/v1/info/state`;

export const hooks = exportHooks({
  preScale(ctx) {
    const cfg = config.parse(ctx.config, SCHEMA);
    const headers = { 'X-Trino-User': cfg.user };
    let draining = 0;
    for (const pod of ctx.podsRemoved) {
      if (pod.ip === undefined) continue;
      const url = stateUrl(pod.ip, cfg.port);
      const state = http.get(url, { headers }).errorForStatus().json();
      if (state === 'DRAINED') continue;
      if (state !== 'DRAINING') {
        // Idempotent: asking again after a retry is harmless.
        http.put(url, { headers, json: 'DRAINING' }).errorForStatus();
      }
      draining += 1;
    }
    if (draining > 0) {
      info(`${draining} worker(s) still draining`);
      return inProgress('draining', cfg.pollIntervalMs, `${draining} worker(s) draining`);
    }
    return done(`${ctx.podsRemoved.length} worker(s) drained`);
  },

  onFailure(ctx) {
    const cfg = config.parse(ctx.config, SCHEMA);
    for (const pod of ctx.podsRemoved) {
      if (pod.ip !== undefined) {
        http.put(stateUrl(pod.ip, cfg.port), { headers: { 'X-Trino-User': cfg.user }, json: 'ACTIVE' }).errorForStatus();
      }
    }
  },

  validateConfig(text) {
    config.parse(text, SCHEMA);
  },
});
