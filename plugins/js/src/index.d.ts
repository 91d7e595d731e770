// Types of the hoist:hooks@0.1.1 contract as componentize-js presents it to JavaScript, and of
// the SDK's helpers.

/** One pod of the scaled workload, as hoist observed it. */
export interface Pod {
  name: string;
  ordinal?: number;
  ip?: string;
  ready: boolean;
}

/** The workload a Scaler drives. */
export interface TargetRef {
  apiVersion: string;
  kind: string;
  name: string;
}

export type Direction = 'up' | 'down';

/** Everything a hook knows about the operation it is called for. */
export interface ScaleContext {
  namespace: string;
  scaler: string;
  target: TargetRef;
  operationId: string;
  fromReplicas: number;
  toReplicas: number;
  direction: Direction;
  podsRemoved: Pod[];
  podsAdded: Pod[];
  allPods: Pod[];
  /** The Scaler's `spec.hooks.config`, as JSON text. */
  config: string;
  /** What the previous call of this stage returned as `state`, if any. */
  savedState?: string;
  attempt: number;
  elapsedInStageMs: bigint;
}

export type Stage = 'pre-scaling' | 'scaling' | 'post-scaling';

/** Why an operation failed, handed to `onFailure`. */
export interface Failure {
  stage: Stage;
  reason: string;
}

export interface Progress {
  state: string;
  retryAfterMs: bigint;
  message: string;
}

export type Outcome = { tag: 'done'; val: string } | { tag: 'in-progress'; val: Progress };

/** The hooks a plugin implements; each is optional. */
export interface HookImpl {
  preScale?(ctx: ScaleContext): Outcome;
  postScale?(ctx: ScaleContext): Outcome;
  onFailure?(ctx: ScaleContext, failure: Failure): void;
  /** Throw (anything) with a message naming what is wrong. */
  validateConfig?(config: string): void;
}

/** The component's `hooks` export. */
export interface Hooks {
  preScale(ctx: ScaleContext): Outcome;
  postScale(ctx: ScaleContext): Outcome;
  onFailure(ctx: ScaleContext, failure: Failure): void;
  validateConfig(config: string): void;
}

export function exportHooks(impl: HookImpl): Hooks;
export function done(message?: string): Outcome;
export function inProgress(state: string, retryAfterMs: number, message: string): Outcome;
export function secret(name: string): string | undefined;
export function debug(message: string): void;
export function info(message: string): void;
export function warn(message: string): void;
export function error(message: string): void;
export function isScaleDown(ctx: ScaleContext): boolean;

export class HookError extends Error {}
export class InvalidConfig extends HookError {}
export class Remote extends HookError {}
export class Other extends HookError {}

export namespace config {
  type FieldType = 'number' | 'string' | 'boolean' | 'object' | 'array';
  type Schema = Record<string, FieldType | [FieldType, unknown]>;
  class ConfigError extends Error {}
  function parse(text: string, schema: Schema): Record<string, any>;
}

export namespace http {
  const MAX_BODY_BYTES: number;
  const DEFAULT_TIMEOUT_MS: number;
  interface RequestOptions {
    headers?: Record<string, string>;
    body?: string | Uint8Array;
    json?: unknown;
    timeoutMs?: number;
  }
  class HttpError extends Error {
    status?: number;
  }
  class Response {
    url: string;
    status: number;
    headers: [string, string][];
    body: Uint8Array;
    header(name: string): string | undefined;
    text(): string;
    json(): any;
    errorForStatus(): Response;
  }
  function hostPort(host: string, port: number): string;
  function request(method: string, url: string, options?: RequestOptions): Response;
  function get(url: string, options?: RequestOptions): Response;
  function post(url: string, options?: RequestOptions): Response;
  function put(url: string, options?: RequestOptions): Response;
  function del(url: string, options?: RequestOptions): Response;
}
