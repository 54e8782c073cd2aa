// Captures the event payloads that LaunchDarkly's real Node server SDK posts.
//
// The Node twin of tests/sdk/ld_python_events.py, on the same flags and the same seeded
// sequence: the SDK runs fully offline (a file data source reads a flags JSON written to a
// temporary directory; every LaunchDarkly URI points at a tiny HTTP server on 127.0.0.1
// that records each POST (202) and refuses anything else). The Rust tests feed the captured
// /bulk bodies to flagtally and check it counts every evaluation exactly once.
//
// usage: node ld_node_events.mjs --out FILE [--evaluations N] [--seed S] [--flush-every K]
//                                [--forward URL]
// With --forward, the server passes every POST on to URL (flagtally's collector: same
// path, headers and body) and answers the SDK with the collector's status; it keeps
// every payload the SDK posted, once (a retry repeats its payload id), whatever the
// collector answered: with every answer 202, FILE holds what reached Kafka; after 503s
// (a broker outage), what flagtally must still count once.
// The SDK is loaded from $FLAGTALLY_TEST_LD_NODE_MODULES (the node_modules directory that
// `bash scripts/infra.sh sdks` prints), else through NODE_PATH. Writes one line per /bulk
// POST body (verbatim) to FILE, diagnostic bodies to FILE.diagnostic, and prints one JSON
// object of counts; it checks the summary counters and the feature, identify and custom
// events against what the sequence implies and exits non-zero on any mismatch or failure
// (every wait is bounded).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';

const TIMEOUT_MS = 60_000;

function fail(msg) {
  process.stderr.write(`ld_node_events: ${msg}\n`);
  process.exit(1);
}

// Bounded: whatever hangs, the script stops.
setTimeout(() => fail(`not done within ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS).unref();

function parseArgs(argv) {
  const args = { out: null, evaluations: 5000, seed: 1, flushEvery: 1000, forward: null };
  const names = { '--out': 'out', '--evaluations': 'evaluations', '--seed': 'seed', '--flush-every': 'flushEvery', '--forward': 'forward' };
  for (let i = 0; i < argv.length; i += 2) {
    const name = names[argv[i]];
    if (!name || argv[i + 1] === undefined) fail(`usage: ld_node_events.mjs --out FILE [--evaluations N] [--seed S] [--flush-every K] (bad argument ${argv[i]})`);
    args[name] = name === 'out' || name === 'forward' ? argv[i + 1] : Number.parseInt(argv[i + 1], 10);
  }
  if (!args.out) fail('--out FILE is required');
  return args;
}

// The SDK (CommonJS): resolved from the given node_modules directory, or NODE_PATH.
function loadSdk() {
  const modules = process.env.FLAGTALLY_TEST_LD_NODE_MODULES;
  const require = createRequire(modules ? join(modules, 'flagtally-resolve.cjs') : import.meta.url);
  try {
    const name = '@launchdarkly/node-server-sdk';
    const ld = require(name);
    // Its package.json is not exported: found above the resolved entry point.
    let dir = dirname(require.resolve(name));
    while (!existsSync(join(dir, 'package.json')) || require(join(dir, 'package.json')).name !== name) {
      if (dirname(dir) === dir) throw new Error(`no package.json of ${name}`);
      dir = dirname(dir);
    }
    return { ld, version: require(join(dir, 'package.json')).version };
  } catch (e) {
    return fail(`cannot load @launchdarkly/node-server-sdk (set FLAGTALLY_TEST_LD_NODE_MODULES from \`bash scripts/infra.sh sdks\`): ${e.message}`);
  }
}

// ---- flags (identical in ld_python_events.py) ------------------------------------------
function flag(key, version, variations, fallthrough, offVariation, extra = {}) {
  const f = {
    key, version, on: true, variations, fallthrough, targets: [], rules: [], prerequisites: [],
    trackEvents: false, trackEventsFallthrough: false, salt: `salt-${key}`,
  };
  if (offVariation !== undefined) f.offVariation = offVariation;
  return Object.assign(f, extra);
}

function goldRule(id, variation, trackEvents) {
  return {
    id, variation, trackEvents,
    clauses: [{ contextKind: 'user', attribute: 'plan', op: 'in', values: ['gold'], negate: false }],
  };
}

const FLAGS = Object.fromEntries([
  // Tracked: every evaluation (also as a prerequisite) gives a feature event.
  flag('tracked-bool', 7, [true, false], { variation: 0 }, 1, { trackEvents: true }),
  // Untracked boolean with individual targets.
  flag('plain-bool', 3, [true, false], { variation: 1 }, 1,
    { targets: [{ values: ['user-1', 'user-3'], variation: 0 }] }),
  // Multi-variation string: an org-kind rule, a percentage rollout as fallthrough.
  flag('colour', 12, ['red', 'green', 'blue', 'yellow'],
    { rollout: { variations: [{ variation: 0, weight: 40000 }, { variation: 1, weight: 30000 }, { variation: 2, weight: 30000 }] } }, 0,
    { rules: [{ id: 'org-rule', variation: 3, trackEvents: false,
      clauses: [{ contextKind: 'org', attribute: 'key', op: 'in', values: ['org-0', 'org-2'], negate: false }] }] }),
  // Tracked only when its rule matches (users on the gold plan).
  flag('rule-tracked', 5, ['a', 'b', 'c'], { variation: 0 }, 0, { rules: [goldRule('gold-tracked', 2, true)] }),
  // Tracked only on fallthrough (its untracked rule matches gold users).
  flag('fallthrough-tracked', 9, [true, false], { variation: 1 }, 1,
    { rules: [goldRule('gold-untracked', 0, false)], trackEventsFallthrough: true }),
  // Two prerequisites, both always evaluated: tracked-bool always passes (fallthrough 0).
  flag('parent', 4, ['enabled', 'disabled'], { variation: 0 }, 1,
    { prerequisites: [{ key: 'tracked-bool', variation: 0 }, { key: 'prereq-base', variation: 0 }] }),
  flag('prereq-base', 2, [true, false], { variation: 0 }, 1,
    { targets: [{ values: ['user-2', 'user-5'], variation: 1 }] }),
  flag('versioned', 42, ['v-one', 'v-two'], { variation: 1 }, 0),
  flag('off-flag', 6, ['on-value', 'off-value'], { variation: 0 }, 1, { on: false }),
  // Off without an offVariation: the default value, a counter without "variation".
  flag('off-default', 1, ['x', 'y'], { variation: 0 }, undefined, { on: false }),
].map((f) => [f.key, f]));
const PREREQS = { parent: ['tracked-bool', 'prereq-base'] };
// Evaluated in the sequence, with their defaults; "missing-flag" is not defined.
const EVALUATED = [['tracked-bool', false], ['plain-bool', false], ['colour', 'none'],
  ['rule-tracked', 'none'], ['fallthrough-tracked', false], ['parent', 'none'],
  ['prereq-base', false], ['versioned', 'none'], ['off-flag', 'none'],
  ['off-default', 'none'], ['missing-flag', 'none']];

// ---- contexts (identical specs in ld_python_events.py) ---------------------------------
function userAttrs(i) {
  const u = { key: `user-${i}`, name: `User ${i}`, country: i % 2 ? 'nz' : 'de' };
  if (i % 3 === 0) u.plan = 'gold';
  if (i === 11) u.anonymous = true;
  return u;
}
function orgAttrs(i) {
  const o = { key: `org-${i}`, name: `Org ${i}` };
  if (i === 1) o.plan = 'gold'; // an org attribute: the user-kind gold rules ignore it
  return o;
}
// [context, has a user on the gold plan]
const CONTEXTS = [
  ...Array.from({ length: 12 }, (_, i) => [{ kind: 'user', ...userAttrs(i) }, i % 3 === 0]),
  ...Array.from({ length: 4 }, (_, i) => [{ kind: 'org', ...orgAttrs(i) }, false]),
  ...Array.from({ length: 4 }, (_, j) => [{ kind: 'multi', user: userAttrs(j), org: orgAttrs(j % 4) }, j % 3 === 0]),
];

// The same 32-bit xorshift as ld_python_events.py, so both SDKs see one sequence.
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
const posts = []; // { path, headers (lower-case names), body: Buffer }
const unexpected = [];

const forwarded = { statuses: {} };
const keptIds = new Set();

// Passes one POST on to the collector; resolves with its status (0: no answer).
function forward(base, req, raw) {
  return new Promise((resolve) => {
    const url = new URL(req.url, base);
    const headers = { ...req.headers, host: url.host, 'content-length': raw.length };
    const out = http.request(url, { method: 'POST', headers, timeout: 30_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    out.on('error', () => resolve(0));
    out.on('timeout', () => out.destroy());
    out.end(raw);
  });
}

function startServer(forwardTo) {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      if (req.method !== 'POST') {
        unexpected.push(`${req.method} ${req.url}`);
        res.writeHead(404).end();
        return;
      }
      const raw = Buffer.concat(chunks);
      let status = 202;
      if (forwardTo) {
        status = await forward(forwardTo, req, raw);
        forwarded.statuses[status] = (forwarded.statuses[status] || 0) + 1;
      }
      // Each payload once (a retry repeats its payload id); forwarding, whatever the
      // collector answered: the SDK sent it, and flagtally must count it once.
      const id = req.headers['x-launchdarkly-payload-id'];
      if ((status === 202 || forwardTo) && !(id && keptIds.has(id))) {
        if (id) keptIds.add(id);
        let body = raw;
        if ((req.headers['content-encoding'] || '').toLowerCase() === 'gzip') body = gunzipSync(body);
        posts.push({ path: req.url, headers: req.headers, body });
      }
      res.writeHead(status || 503).end();
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function waitFor(what, cond, ms) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) fail(`${what} not received within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { ld, version } = loadSdk();
  const server = await startServer(args.forward);
  const base = `http://127.0.0.1:${server.address().port}`;

  const tmp = mkdtempSync(join(tmpdir(), 'ld-node-flags-'));
  const flagsPath = join(tmp, 'flags.json');
  writeFileSync(flagsPath, JSON.stringify({ flags: FLAGS }));

  const client = ld.init('sdk-flagtally-test', {
    updateProcessor: new ld.integrations.FileDataSourceFactory({ paths: [flagsPath] }).getFactory(),
    sendEvents: true,
    eventsUri: base,
    baseUri: base,
    streamUri: base,
    stream: false,
    capacity: 100000,
    flushInterval: 300, // flushes are the script's
    diagnosticOptOut: false,
    logger: ld.basicLogger({ level: 'warn' }),
  });
  // Evaluating the undefined "missing-flag" is an error by design; any other is reported.
  const sdkErrors = [];
  client.on('error', (err) => {
    if (!/Unknown feature flag "missing-flag"/.test(err.message)) sdkErrors.push(err.message);
  });
  try {
    await client.waitForInitialization({ timeout: 10 });
  } catch (e) {
    fail(`the SDK did not load the flags file: ${e.message}`);
  }

  const rng = xorshift32(args.seed);
  const direct = Object.fromEntries(EVALUATED.map(([key]) => [key, 0]));
  let tracked = 0;
  let identifies = 0;
  let customs = 0;
  for (let i = 0; i < args.evaluations; i += 1) {
    const [key, def] = EVALUATED[rng() % EVALUATED.length];
    const [context, gold] = CONTEXTS[rng() % CONTEXTS.length];
    await client.variation(key, context, def);
    direct[key] += 1;
    // The feature events the flags' tracking settings imply (all flags but the off ones
    // are on; parent's prerequisites always run, tracked-bool among them).
    tracked += { 'tracked-bool': 1, parent: 1, 'rule-tracked': gold ? 1 : 0, 'fallthrough-tracked': gold ? 0 : 1 }[key] ?? 0;
    if (i % 400 === 200) {
      client.identify(context);
      identifies += 1;
    }
    if (i % 300 === 150) {
      client.track('checkout', context, { i }, i / 10);
      customs += 1;
    }
    if ((i + 1) % args.flushEvery === 0) await client.flush(); // resolves once posted
  }
  await client.flush();
  client.close(); // the Node SDK's close does not flush
  rmSync(tmp, { recursive: true, force: true });
  // The diagnostic init event is posted at start, without being awaited.
  await waitFor('the diagnostic init event', () => posts.some((p) => p.path.includes('diagnostic')), 10_000);
  server.close();
  if (unexpected.length) fail(`the SDK made requests other than POSTs: ${unexpected.join(', ')}`);
  if (sdkErrors.length) fail(`the SDK reported errors: ${sdkErrors.slice(0, 5).join('; ')}`);

  const expectedCounts = { ...direct };
  for (const [parent, prereqs] of Object.entries(PREREQS)) {
    for (const p of prereqs) expectedCounts[p] += direct[parent];
  }
  const { stats, countsByFlag } = summarize(args.out);
  const total = Object.values(expectedCounts).reduce((a, b) => a + b, 0);
  Object.assign(stats, {
    evaluations: args.evaluations,
    prerequisite_evaluations: total - args.evaluations,
    tracked_evaluations: tracked,
    sdk: `node-server-sdk ${version}`,
  });
  if (args.forward) stats.forwarded = forwarded.statuses;
  check(stats, countsByFlag, expectedCounts, tracked, identifies, customs);
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  process.exit(0);
}

// Writes the bodies out and counts what they hold.
function summarize(out) {
  const kinds = { feature: 0, debug: 0, index: 0, custom: 0, identify: 0 };
  const countsByFlag = {};
  const schemas = new Set();
  const payloadIds = new Set();
  const bulk = [];
  const diagnostic = [];
  for (const { path, headers, body } of posts) {
    if (body.includes(0x0a) || body.includes(0x0d)) fail(`a POST body to ${path} contains a newline: cannot write it as one line`);
    if (path.includes('diagnostic')) {
      diagnostic.push(body);
      continue;
    }
    if (path !== '/bulk') fail(`unexpected POST path ${path}`);
    bulk.push(body);
    schemas.add(String(headers['x-launchdarkly-event-schema']));
    if (headers['x-launchdarkly-payload-id']) payloadIds.add(headers['x-launchdarkly-payload-id']);
    for (const event of JSON.parse(body.toString('utf8'))) {
      if (event.kind === 'summary') {
        for (const [key, feature] of Object.entries(event.features)) {
          for (const counter of feature.counters) countsByFlag[key] = (countsByFlag[key] ?? 0) + counter.count;
        }
      } else {
        kinds[event.kind] = (kinds[event.kind] ?? 0) + 1;
      }
    }
  }
  const lines = (bodies) => Buffer.concat(bodies.flatMap((b) => [b, Buffer.from('\n')]));
  writeFileSync(out, lines(bulk));
  writeFileSync(`${out}.diagnostic`, lines(diagnostic));
  const { feature, debug, index, custom, identify, ...other } = kinds;
  const stats = {
    payloads: bulk.length,
    summary_count_total: Object.values(countsByFlag).reduce((a, b) => a + b, 0),
    feature_events: feature,
    debug_events: debug,
    index_events: index,
    custom_events: custom,
    identify_events: identify,
    other_events: other,
    event_schema: [...schemas].sort().join(','),
    payload_ids_distinct: payloadIds.size,
  };
  return { stats, countsByFlag };
}

function check(stats, countsByFlag, expectedCounts, tracked, identifies, customs) {
  const problems = [];
  const sorted = (o) => JSON.stringify(Object.fromEntries(Object.entries(o).filter(([, v]) => v).sort()));
  if (sorted(countsByFlag) !== sorted(expectedCounts)) {
    problems.push(`summary counts by flag ${sorted(countsByFlag)} != expected ${sorted(expectedCounts)}`);
  }
  for (const [name, want] of [['feature_events', tracked], ['identify_events', identifies],
    ['custom_events', customs], ['payload_ids_distinct', stats.payloads]]) {
    if (stats[name] !== want) problems.push(`${name} = ${stats[name]}, expected ${want}`);
  }
  if (stats.payloads === 0) problems.push('no /bulk payload received');
  if (problems.length) fail(problems.join('; '));
}

main().catch((e) => fail(e.stack || String(e)));
