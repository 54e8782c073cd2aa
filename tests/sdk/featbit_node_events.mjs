// Captures the insight payloads that FeatBit's real Node server SDK posts.
//
// The SDK (@featbit/node-server-sdk) runs offline in effect: flags come from its JSON
// bootstrap provider, a no-op data synchronizer stands in for the WebSocket/polling one
// (it only reports "initialized", so nothing ever connects to a FeatBit server), and its
// events URI is a tiny HTTP server on 127.0.0.1 that takes each POST to
// /api/public/insight/track and refuses anything else. A seeded sequence of evaluations
// (the same 32-bit xorshift, flags and users as tests/sdk/featbit_python_events.py) over
// a boolean flag with a percentage rollout, a multi-variation string flag with an
// attribute rule, a flag with individual user targeting and a rule, and a disabled flag,
// plus a few `track` metrics, is flushed and the client closed. The Rust tests feed the
// captured bodies to flagtally and check it counts every evaluation exactly once.
//
// usage: node featbit_node_events.mjs --out FILE --sdk-key KEY [--evaluations N] [--seed S]
//                                     [--forward URL] [--status CODE]
// With --forward, the server passes every POST on to URL (flagtally's collector: same
// path, headers and body) and answers the SDK with the collector's status; it keeps a
// body only once the collector accepted it (--status, 202 by default), so FILE holds what
// reached Kafka. Without --forward it answers --status itself and keeps every body.
// The SDK is loaded from $FLAGTALLY_TEST_FEATBIT_NODE_MODULES (a node_modules directory
// holding @featbit/node-server-sdk), else through NODE_PATH. Writes one line per kept body
// (verbatim JSON) to FILE and prints one JSON object of counts:
//   {"sdk", "evaluations", "per_flag", "per_flag_variation" ("flag/variationId"),
//    "metrics", "posts" (POSTs the SDK made), "stored" (lines in FILE),
//    "forwarded" ({collector status: POSTs}, empty without --forward)}
// per_flag* and metrics are what this script evaluated and tracked; it checks that the
// kept bodies hold exactly those variation and metric entries (the SDK sent every one)
// and exits non-zero on any mismatch or failure (every wait is bounded).
//
// What @featbit/node-server-sdk 1.3.0 sends (seen in the captured bodies and headers):
// - POST {eventsUri}/api/public/insight/track, at most 50 entries per POST (a flush posts
//   its batch in slices of 50), not compressed, one POST after the other (each awaited).
// - Headers: Authorization: <the SDK key, raw, no scheme>, Content-Type: application/json,
//   X-User-Agent: NodeJS-Server-SDK/1.3.0 (no User-Agent header at all), Host,
//   Connection: keep-alive, Transfer-Encoding: chunked (no Content-Length).
// - Body: a JSON array with one entry per event, never merged per user (compact JSON; a
//   real body, trimmed to its last three entries):
//     [{"user":{"keyId":"user-6","name":"User 6","customizedProperties":[{"name":"country","value":"de"},
//                {"name":"plan","value":"gold"}]},
//       "variations":[{"featureFlagKey":"beta-access","sendToExperiment":true,"timestamp":1796480797019,
//                      "variation":{"id":"ba-gold","value":"gold"}}]},
//      {"user":{"keyId":"user-13","name":"User 13","customizedProperties":[{"name":"country","value":"nz"}]},
//       "variations":[{"featureFlagKey":"beta-access","sendToExperiment":true,"timestamp":1796480797019,
//                      "variation":{"id":"ba-off","value":"off"}}]},
//      {"user":{"keyId":"user-13","name":"User 13","customizedProperties":[{"name":"country","value":"nz"}]},
//       "metrics":[{"route":"index/metric","timestamp":1796480797019,"numericValue":15,
//                   "appType":"NodeJS-Server-SDK","eventName":"checkout","type":"CustomEvent"}]}]
//   Timestamps are Unix milliseconds (checked here). `variation` is the flag's variation
//   object as bootstrapped ({id, value}: the value a string, as FeatBit stores it, also
//   for boolean flags); `sendToExperiment` is the flag's exptIncludeAllTargets for a
//   targeted user, the experiment split otherwise, false when the flag is off. An unknown
//   flag sends nothing. A disabled flag sends its disabledVariationId.
// - Dedupe: EventDispatcher.getUniqueEvents drops, within one flush, every event equal to
//   an earlier one but for its timestamp (same user object, flag and variation; metrics:
//   same user, event name and value). Left alone, repeated evaluations between two
//   flushes are collapsed into one entry, so FeatBit's insight counts are not evaluation
//   counts. To have the SDK send every evaluation this script calls flush() (not awaited:
//   the dispatcher takes its queue in order, so each flush ends a batch exactly there)
//   before an evaluation that would repeat one already in the current batch; the SDK's
//   own timed flushes only split batches further.
// - Answers: any 2xx is success. A network error or another status is retried once, 1 s
//   later, then that batch is dropped; 4xx other than 400/408/429 (401, 403, 413, 415…)
//   also stops the SDK's event sending for good, silently (later events are dropped).
//   The answer body is ignored. flush() resolves true even when its POSTs failed.
// - Pacing: the dispatcher polls its queue every second when idle, so an awaited flush()
//   takes up to 1 s; POSTs go out one at a time (a failing collector costs 1 s a batch).
// - Its default logger writes info lines to stdout: this script gives it one on stderr.
import { existsSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const TIMEOUT_MS = 60_000;
const INSIGHT_PATH = '/api/public/insight/track';

function fail(msg) {
  process.stderr.write(`featbit_node_events: ${msg}\n`);
  process.exit(1);
}


const USAGE = 'usage: featbit_node_events.mjs --out FILE --sdk-key KEY [--evaluations N] [--seed S] [--forward URL] [--status CODE]';

function parseArgs(argv) {
  const args = { out: null, sdkKey: null, evaluations: 3000, seed: 1, forward: null, status: 202 };
  const names = {
    '--out': 'out', '--sdk-key': 'sdkKey', '--evaluations': 'evaluations', '--seed': 'seed',
    '--forward': 'forward', '--status': 'status',
  };
  const numeric = new Set(['evaluations', 'seed', 'status']);
  for (let i = 0; i < argv.length; i += 2) {
    const name = names[argv[i]];
    if (!name || argv[i + 1] === undefined) fail(`${USAGE} (bad argument ${argv[i]})`);
    if (numeric.has(name)) {
      if (!/^\d+$/.test(argv[i + 1])) fail(`${argv[i]} needs a non-negative integer, not ${argv[i + 1]}`);
      args[name] = Number.parseInt(argv[i + 1], 10);
    } else {
      args[name] = argv[i + 1];
    }
  }
  if (!args.out) fail(`--out FILE is required; ${USAGE}`);
  if (!args.sdkKey) fail(`--sdk-key KEY is required; ${USAGE}`);
  if (args.status < 200 || args.status > 299) fail(`--status must be a 2xx status, not ${args.status}`);
  if (args.forward) {
    try {
      if (new URL(args.forward).protocol !== 'http:') throw new Error('not http:');
    } catch (e) {
      fail(`--forward needs an http:// URL (${e.message})`);
    }
  }
  return args;
}

// The SDK (CommonJS): resolved from the given node_modules directory, or NODE_PATH.
function loadSdk() {
  const modules = process.env.FLAGTALLY_TEST_FEATBIT_NODE_MODULES;
  const require = createRequire(modules ? join(modules, 'flagtally-resolve.cjs') : import.meta.url);
  const name = '@featbit/node-server-sdk';
  try {
    const fb = require(name);
    // Its package.json is found above the resolved entry point (dist/cjs/index.js).
    let dir = dirname(require.resolve(name));
    while (!existsSync(join(dir, 'package.json')) || require(join(dir, 'package.json')).name !== name) {
      if (dirname(dir) === dir) throw new Error(`no package.json of ${name}`);
      dir = dirname(dir);
    }
    return { fb, version: require(join(dir, 'package.json')).version };
  } catch (e) {
    return fail(`cannot load ${name} (set FLAGTALLY_TEST_FEATBIT_NODE_MODULES to a node_modules directory holding it): ${e.message}`);
  }
}

// ---- flags (identical in featbit_python_events.py) -------------------------------------
// FeatBit's data-sync shape. Variation values are strings, also for boolean flags.
const UPDATED_AT = '2024-05-01T12:00:00.000Z';

function rollout(pairs) {
  // [[variationId, from, to], …] → a rollout split.
  return pairs.map(([id, from, to]) => ({ id, rollout: [from, to], exptRollout: 1 }));
}

function flag(key, variationType, variations, fallthrough, extra = {}) {
  return {
    id: `flag-${key}`,
    envId: 'flagtally-test-env',
    name: key,
    key,
    variationType,
    variations: variations.map(([id, value]) => ({ id, value })),
    targetUsers: [],
    rules: [],
    isEnabled: true,
    disabledVariationId: variations[variations.length - 1][0],
    fallthrough: { dispatchKey: null, includedInExpt: true, variations: fallthrough },
    exptIncludeAllTargets: true,
    tags: [],
    isArchived: false,
    creatorId: 'flagtally',
    updatorId: 'flagtally',
    createdAt: UPDATED_AT,
    updatedAt: UPDATED_AT,
    ...extra,
  };
}

function rule(id, property, op, value, variationId) {
  return {
    id, name: id, dispatchKey: null, includedInExpt: false,
    conditions: [{ property, op, value }],
    variations: rollout([[variationId, 0, 1]]),
  };
}

const FLAGS = [
  // Boolean, a 50/50 percentage rollout on the user key.
  flag('dark-mode', 'boolean', [['dm-true', 'true'], ['dm-false', 'false']],
    rollout([['dm-true', 0, 0.5], ['dm-false', 0.5, 1]])),
  // Multi-variation string: users in "nz" get purple by a rule, the others a 30/26/44 split.
  flag('theme', 'string', [['th-red', 'red'], ['th-green', 'green'], ['th-blue', 'blue'], ['th-purple', 'purple']],
    rollout([['th-red', 0, 0.3], ['th-green', 0.3, 0.56], ['th-blue', 0.56, 1]]),
    { rules: [rule('nz-purple', 'country', 'Equal', 'nz', 'th-purple')] }),
  // Individual user targeting, then a rule on the gold plan, else off.
  flag('beta-access', 'string', [['ba-on', 'on'], ['ba-gold', 'gold'], ['ba-off', 'off']],
    rollout([['ba-off', 0, 1]]),
    {
      targetUsers: [{ keyIds: ['user-1', 'user-3'], variationId: 'ba-on' },
        { keyIds: [], variationId: 'ba-gold' }, { keyIds: [], variationId: 'ba-off' }],
      rules: [rule('gold-plan', 'plan', 'IsOneOf', '["gold"]', 'ba-gold')],
    }),
  // Disabled: serves its disabledVariationId.
  flag('new-checkout', 'boolean', [['nc-true', 'true'], ['nc-false', 'false']],
    rollout([['nc-true', 0, 1]]), { isEnabled: false, disabledVariationId: 'nc-false' }),
];
const BOOTSTRAP = { messageType: 'data-sync', data: { eventType: 'full', featureFlags: FLAGS, segments: [] } };

// ---- users (identical in featbit_python_events.py) -------------------------------------
const USERS = Array.from({ length: 20 }, (_, i) => {
  const props = [{ name: 'country', value: i % 2 ? 'nz' : 'de' }];
  if (i % 3 === 0) props.push({ name: 'plan', value: 'gold' });
  return { key: `user-${i}`, name: `User ${i}`, customizedProperties: props };
});

// The same 32-bit xorshift as featbit_python_events.py (and the LaunchDarkly scripts).
function xorshift32(seed) {
  let x = (seed >>> 0) || 0x9e3779b9;
  return () => {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    return x;
  };
}

// ---- the capturing server --------------------------------------------------------------
const posts = []; // { headers (lower-case names), body: Buffer, status }
const unexpected = [];
const forwarded = {};

// Bounded: whatever hangs, the script stops (saying how far the SDK got).
setTimeout(() => fail(`not done within ${TIMEOUT_MS / 1000} s (${posts.length} POSTs so far`
  + `${Object.keys(forwarded).length ? `, collector statuses ${JSON.stringify(forwarded)}` : ''})`), TIMEOUT_MS).unref();

// Passes one POST on to the collector; resolves with its status (0: no answer).
function forward(base, req, raw) {
  return new Promise((resolve) => {
    const url = new URL(req.url, base);
    const headers = { ...req.headers, host: url.host, 'content-length': raw.length };
    delete headers['transfer-encoding']; // the body is passed on whole
    const out = http.request(url, { method: 'POST', headers, timeout: 30_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
      res.on('error', () => resolve(0));
    });
    out.on('error', () => resolve(0));
    out.on('timeout', () => out.destroy());
    out.end(raw);
  });
}

function startServer(forwardTo, okStatus) {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      if (req.method !== 'POST' || req.url !== INSIGHT_PATH) {
        unexpected.push(`${req.method} ${req.url}`);
        res.writeHead(404).end();
        return;
      }
      const raw = Buffer.concat(chunks);
      let status = okStatus;
      if (forwardTo) {
        status = await forward(forwardTo, req, raw);
        forwarded[status] = (forwarded[status] || 0) + 1;
      }
      posts.push({ headers: req.headers, body: raw, status });
      res.writeHead(status || 503).end();
    });
  });
  server.keepAliveTimeout = 1000;
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { fb, version } = loadSdk();
  const server = await startServer(args.forward, args.status);
  const base = `http://127.0.0.1:${server.address().port}`;
  const started = Date.now();

  const logger = new fb.BasicLogger({ level: 'warn', destination: (line) => process.stderr.write(`${line}\n`) });
  const client = new fb.FbClientBuilder()
    .sdkKey(args.sdkKey)
    .offline(false) // offline mode would also turn events off
    .useJsonBootstrapProvider(JSON.stringify(BOOTSTRAP))
    .streamingUri(base) // never used: the data synchronizer below never connects
    .eventsUri(base)
    // (clientContext, store, dataSourceUpdates, initSuccess, errorHandler): no connection;
    // the bootstrapped flags are all there is, so the client is ready at once.
    .dataSynchronizer((_ctx, _store, _updates, initSuccess) => ({
      start: () => initSuccess(), stop: () => {}, close: () => {},
    }))
    .flushInterval(1000)
    .maxEventsInQueue(1_000_000)
    .startWaitTime(5000)
    .logger(logger)
    .build();
  const sdkErrors = [];
  client.on('error', (err) => sdkErrors.push(err.message));
  try {
    await client.waitForInitialization();
  } catch (e) {
    fail(`the SDK did not start from its bootstrap: ${e.message}`);
  }

  const rng = xorshift32(args.seed);
  const perFlag = Object.fromEntries(FLAGS.map((f) => [f.key, 0]));
  const perFlagVariation = {};
  let metrics = 0;
  let pending = new Set(); // events of the current batch that the SDK would dedupe
  const flushes = [];
  // Ends the batch before an event equal to one already in it (see the header).
  const once = (id) => {
    if (pending.has(id)) {
      flushes.push(client.flush());
      pending = new Set();
    }
    pending.add(id);
  };
  for (let i = 0; i < args.evaluations; i += 1) {
    const f = FLAGS[rng() % FLAGS.length];
    const user = USERS[rng() % USERS.length];
    once(`${f.key}\u0000${user.key}`);
    const value = f.variationType === 'boolean'
      ? await client.boolVariation(f.key, user, false)
      : await client.stringVariation(f.key, user, 'default');
    const served = f.variations.find((v) => v.value === String(value));
    if (!served) fail(`${f.key} for ${user.key} gave ${JSON.stringify(value)}, none of its variations`);
    perFlag[f.key] += 1;
    const vk = `${f.key}/${served.id}`;
    perFlagVariation[vk] = (perFlagVariation[vk] ?? 0) + 1;
    if (i % 300 === 150) {
      once(`metric\u0000${user.key}\u0000${i}`);
      client.track(user, 'checkout', i / 10);
      metrics += 1;
    }
  }
  const flushed = await client.flush(); // resolves once every batch was posted
  await Promise.all(flushes);
  await client.close(); // flushes again (nothing left) and stops the dispatcher
  server.close();
  const ended = Date.now();
  if (unexpected.length) fail(`the SDK made requests other than POST ${INSIGHT_PATH}: ${unexpected.join(', ')}`);
  if (sdkErrors.length) fail(`the SDK reported errors: ${sdkErrors.slice(0, 5).join('; ')}`);
  if (!flushed) fail('the SDK reported a failed flush');

  const stored = posts.filter((p) => p.status === args.status);
  writeFileSync(args.out, Buffer.concat(stored.flatMap((p) => {
    if (p.body.includes(0x0a) || p.body.includes(0x0d)) fail('a POST body contains a newline: cannot write it as one line');
    return [p.body, Buffer.from('\n')];
  })));
  const stats = {
    sdk: `@featbit/node-server-sdk ${version}`,
    evaluations: args.evaluations,
    per_flag: perFlag,
    per_flag_variation: sorted(perFlagVariation),
    metrics,
    posts: posts.length,
    stored: stored.length,
    forwarded,
  };
  check(args, stats, stored, started, ended);
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  process.exit(0);
}

function sorted(o) {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

// What the kept bodies hold, against what the script evaluated.
function check(args, stats, stored, started, ended) {
  const problems = [];
  const perFlag = Object.fromEntries(Object.keys(stats.per_flag).map((k) => [k, 0]));
  const perFlagVariation = {};
  let metrics = 0;
  const badTime = [];
  const time = (t, where) => {
    // Unix milliseconds, within the run (a second of slack each side).
    if (!Number.isInteger(t) || t < started - 1000 || t > ended + 1000) badTime.push(`${where}: ${t}`);
  };
  const seen = new Map();
  for (const [n, { headers, body }] of stored.entries()) {
    const text = body.toString('utf8');
    seen.set(text, (seen.get(text) ?? 0) + 1);
    if (headers.authorization !== args.sdkKey) problems.push(`body ${n}: Authorization ${JSON.stringify(headers.authorization)}, not the SDK key`);
    if (headers['content-encoding']) problems.push(`body ${n}: Content-Encoding ${headers['content-encoding']}`);
    let entries;
    try {
      entries = JSON.parse(text);
    } catch (e) {
      problems.push(`body ${n} is not JSON: ${e.message}`);
      continue;
    }
    if (!Array.isArray(entries)) {
      problems.push(`body ${n} is not a JSON array`);
      continue;
    }
    for (const entry of entries) {
      for (const v of entry.variations ?? []) {
        perFlag[v.featureFlagKey] = (perFlag[v.featureFlagKey] ?? 0) + 1;
        const vk = `${v.featureFlagKey}/${v.variation?.id}`;
        perFlagVariation[vk] = (perFlagVariation[vk] ?? 0) + 1;
        time(v.timestamp, `${v.featureFlagKey} variation`);
      }
      for (const m of entry.metrics ?? []) {
        metrics += 1;
        time(m.timestamp, `${m.eventName} metric`);
      }
    }
  }
  const repeated = [...seen.values()].filter((c) => c > 1).length;
  const same = (a, b) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
  if (!same(perFlag, stats.per_flag)) {
    problems.push(`variation entries per flag in the kept bodies ${JSON.stringify(sorted(perFlag))} != evaluations ${JSON.stringify(stats.per_flag)}`);
  } else if (!same(perFlagVariation, stats.per_flag_variation)) {
    problems.push(`variation entries per flag/variation ${JSON.stringify(sorted(perFlagVariation))} != served ${JSON.stringify(stats.per_flag_variation)}`);
  }
  if (metrics !== stats.metrics) problems.push(`metric entries in the kept bodies: ${metrics}, tracked: ${stats.metrics}`);
  if (badTime.length) problems.push(`timestamps not Unix milliseconds within the run: ${badTime.slice(0, 3).join(', ')}`);
  if (problems.length) {
    const context = [`${stats.posts} POSTs, ${stats.stored} kept (answered ${args.status})`];
    if (args.forward) context.push(`collector statuses ${JSON.stringify(stats.forwarded)}`);
    if (repeated) context.push(`${repeated} kept bodies arrived more than once, byte-identical: the SDK re-posted them`);
    fail(`${problems.join('; ')} (${context.join('; ')})`);
  }
}

main().catch((e) => fail(e.stack || String(e)));
