// Plugin configuration (`spec.hooks.config`, JSON text) with errors that name the field.
// `parse(text, schema)` checks a JSON object against field name → type ('number', 'string',
// 'boolean', 'object') or [type, default] for an optional field, and refuses fields the schema
// does not name:
//
//   const cfg = parse(ctx.config, { port: 'number', pollIntervalMs: ['number', 2000] });

/** The configuration does not fit the schema; the message names the field. */
export class ConfigError extends Error {}

export function parse(text, schema) {
  let value;
  try {
    value = text.trim() === '' ? {} : JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`the configuration is not JSON: ${e.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError('the configuration must be a JSON object');
  }
  const known = Object.keys(schema);
  const unknown = Object.keys(value).filter((k) => !known.includes(k)).sort();
  if (unknown.length > 0) {
    throw new ConfigError(`unknown field \`${unknown[0]}\`, expected one of ${known.map((k) => `\`${k}\``).join(', ')}`);
  }
  const out = {};
  for (const [name, spec] of Object.entries(schema)) {
    const [type, fallback, required] = Array.isArray(spec) ? [spec[0], spec[1], false] : [spec, undefined, true];
    if (!(name in value)) {
      if (required) {
        throw new ConfigError(`missing field \`${name}\``);
      }
      out[name] = fallback;
      continue;
    }
    const field = value[name];
    const actual = field === null ? 'null' : Array.isArray(field) ? 'array' : typeof field;
    if (actual !== type) {
      throw new ConfigError(`${name}: invalid type: ${actual}, expected ${type}`);
    }
    out[name] = field;
  }
  return out;
}
