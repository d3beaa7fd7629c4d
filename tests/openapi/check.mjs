// Lints docs/openapi.yaml (against the OpenAPI 3.1 schema, plus the checks below) and validates
// every reply that the integration tests recorded (XA_API_REPLIES, tests/support/daemon.c)
// against it: the path and method must be described, the status listed for them, and a JSON body
// must match the schema of that status. Prints a summary; exits 1 naming each failure.
//   node tests/openapi/check.mjs docs/openapi.yaml [replies.jsonl ...]
import { readFileSync } from 'node:fs';
import { Validator } from '@seriousme/openapi-schema-validator';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';

const [specFile, ...replyFiles] = process.argv.slice(2);
if (!specFile) {
  console.error('usage: check.mjs openapi.yaml [replies.jsonl ...]');
  process.exit(2);
}
const failures = [];
const spec = parse(readFileSync(specFile, 'utf8'));

// ---- lint ---------------------------------------------------------------------------------

const lint = await new Validator().validate(spec);
if (!lint.valid) failures.push(`${specFile} is not valid OpenAPI 3.1: ${JSON.stringify(lint.errors)}`);
const operationIds = new Set();
for (const [path, item] of Object.entries(spec.paths)) {
  for (const [method, op] of Object.entries(item)) {
    if (!['get', 'post', 'put', 'delete', 'patch', 'head'].includes(method)) continue;
    if (!op.operationId) failures.push(`${method.toUpperCase()} ${path}: no operationId`);
    else if (operationIds.has(op.operationId)) failures.push(`duplicate operationId ${op.operationId}`);
    operationIds.add(op.operationId);
    if (!op.summary) failures.push(`${method.toUpperCase()} ${path}: no summary`);
    for (const [status, resp] of Object.entries(op.responses || {}))
      if (!resp.$ref && !resp.description) failures.push(`${method.toUpperCase()} ${path} ${status}: no description`);
  }
}

// ---- replies ------------------------------------------------------------------------------

const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema({ $id: 'spec', components: spec.components });
const refs = (s) => JSON.parse(JSON.stringify(s).replaceAll('"#/components/', '"spec#/components/'));
const resolve = (obj) => (obj && obj.$ref ? obj.$ref.split('/').slice(1).reduce((o, k) => o[k], spec) : obj);

// Path templates as patterns, literal paths first: /v1/status must not match /v1/{x}.
const templates = Object.keys(spec.paths)
  .map((t) => ({ t, re: new RegExp('^' + t.replace(/\{[^}]+\}/g, '[^/]+') + '$'), params: (t.match(/\{/g) || []).length }))
  .sort((a, b) => a.params - b.params);

const validators = new Map();
function validatorFor(key, schema) {
  if (!validators.has(key)) validators.set(key, ajv.compile(refs(schema)));
  return validators.get(key);
}

const seen = new Map(); // "METHOD template status" -> count
let checked = 0;
for (const file of replyFiles) {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
  for (const [i, line] of lines.entries()) {
    const where = `${file}:${i + 1}`;
    let rec;
    try { rec = JSON.parse(line); } catch (e) { failures.push(`${where}: not a record: ${e.message}`); continue; }
    checked++;
    const what = `${rec.test}: ${rec.method} ${rec.path} -> ${rec.status}`;
    const path = rec.path.split('?')[0];
    const tpl = templates.find((x) => x.re.test(path));
    const op = tpl && spec.paths[tpl.t][rec.method.toLowerCase()];
    if (!op) {
      // A path the API does not have must get the router's 404 (405 on a known path).
      if (rec.status === 404 || rec.status === 405) {
        const err = validatorFor('Error', { $ref: '#/components/schemas/Error' });
        if (!err(safeJson(rec.body))) failures.push(`${what}: ${ajv.errorsText(err.errors)}`);
      } else {
        failures.push(`${what}: ${rec.method} ${path} is not in ${specFile}`);
      }
      continue;
    }
    const key = `${rec.method} ${tpl.t} ${rec.status}`;
    seen.set(key, (seen.get(key) || 0) + 1);
    const resp = resolve(op.responses[String(rec.status)]);
    if (!resp) { failures.push(`${what}: status ${rec.status} is not listed for ${rec.method} ${tpl.t}`); continue; }
    const content = resp.content || {};
    const json = content['application/json'];
    if (!json) continue; // a text body (metrics, the page): any string
    const body = safeJson(rec.body);
    if (body === undefined) { failures.push(`${what}: the body is not JSON: ${String(rec.body).slice(0, 120)}`); continue; }
    const v = validatorFor(key, json.schema);
    if (!v(body)) failures.push(`${what}: ${ajv.errorsText(v.errors)}; body ${String(rec.body).slice(0, 300)}`);
  }
}

function safeJson(text) {
  try { return JSON.parse(text); } catch { return undefined; }
}

console.log(`openapi: ${specFile} linted; ${checked} replies checked from ${replyFiles.length} file(s)`);
for (const [key, n] of [...seen.entries()].sort()) console.log(`  ${String(n).padStart(6)}  ${key}`);
if (failures.length) {
  console.error(`openapi: ${failures.length} failure(s):`);
  for (const f of failures.slice(0, 50)) console.error('  ' + f);
  process.exit(1);
}
