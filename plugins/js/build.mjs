#!/usr/bin/env node
// hoist-sdk-build APP.js -o plugin.wasm: bundles a hook module (its `hoist-sdk` imports resolved
// to this package; `wasi:*` and `hoist:*` left to the component's imports) with rolldown and
// builds it with componentize-js against the WIT this package carries.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { componentize } from '@bytecodealliance/componentize-js';
import { rolldown } from 'rolldown';

const here = dirname(fileURLToPath(import.meta.url));
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { output: { type: 'string', short: 'o' } },
});
if (positionals.length !== 1 || values.output === undefined) {
  console.error('usage: hoist-sdk-build APP.js -o plugin.wasm');
  process.exit(2);
}
const entry = resolve(positionals[0]);
const work = await mkdtemp(join(tmpdir(), 'hoist-sdk-build-'));
try {
  const bundle = await rolldown({
    input: entry,
    external: [/^wasi:/, /^hoist:/],
    resolve: { alias: { 'hoist-sdk': join(here, 'src/index.js') } },
    logLevel: 'warn',
  });
  const bundled = join(work, 'plugin.js');
  await bundle.write({ file: bundled, format: 'esm' });
  await bundle.close();
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: join(here, 'wit'),
    worldName: 'hoist:hooks/hook',
  });
  await writeFile(values.output, component);
  console.error(`built ${values.output} (${component.length} bytes)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
