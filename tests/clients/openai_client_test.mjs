// kvstash serve through the official `openai` npm package (v4, pinned in
// package.json): what a real client sends and reads, over real HTTP.
//
// Run through run.sh, which starts `kvstash serve` on stories260K and sets
//   OPENAI_BASE_URL  http://127.0.0.1:PORT/v1
//   OPENAI_API_KEY   the server's key
//   KVSTASH_MODEL_ID the model's name in the API
// Against a server of your own: set those and run
//   node --test tests/clients/openai_client_test.mjs
//
// One test per feature. stories260K is tiny and greedy decoding (temperature
// 0) is deterministic, so the tests compare whole texts. The endpoints the
// package has no method for (/tokenize, /detokenize) are called with fetch.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import OpenAI from 'openai';

const BASE_URL = process.env.OPENAI_BASE_URL;
const API_KEY = process.env.OPENAI_API_KEY;
const MODEL = process.env.KVSTASH_MODEL_ID ?? 'stories260K';
if (!BASE_URL || !API_KEY) {
  throw new Error('set OPENAI_BASE_URL and OPENAI_API_KEY (tests/clients/run.sh does)');
}
const ROOT_URL = BASE_URL.replace(/\/v1\/?$/, '');

// No retries: a failure shows at once, and a 4xx is never retried into a pass.
const client = new OpenAI({ baseURL: BASE_URL, apiKey: API_KEY, maxRetries: 0, timeout: 20_000 });
const T = { timeout: 30_000 }; // per test

const PROMPT = 'Once upon a time';
// stories260K's greedy continuation of PROMPT, and its first token ids in
// tok512 (`kvstash generate --temp 0 --json`: gen_ids), so that the tests of
// token-id options do not depend on /tokenize.
const GREEDY_START = ', there was a';
const GREEDY_IDS = [432, 383, 286, 261]; // ',' ' there' ' was' ' a'
const FORCED_ID = 400; // ' do'
const CHAT_MESSAGES = [{ role: 'user', content: 'Tell me a story about a cat.' }];
// Longer than a few KV blocks (16 tokens each), well inside the 512 context.
const LONG_PROMPT =
  'Tom had a red ball. He liked to play with it in the park every day. ' +
  'One day, the ball rolled into the pond. Tom was sad and called his mom. ' +
  'His mom came and helped him get the ball out of the water. ' +
  'Tom said thank you and they went home to eat lunch together.';

// ---- helpers ---------------------------------------------------------------

// A greedy completion of PROMPT; `params` override or add fields.
function complete(params = {}) {
  return client.completions.create({
    model: MODEL, prompt: PROMPT, max_tokens: 8, temperature: 0, ...params,
  });
}

function chat(params = {}) {
  return client.chat.completions.create({
    model: MODEL, messages: CHAT_MESSAGES, max_tokens: 8, temperature: 0, ...params,
  });
}

// Every chunk of a stream, in order.
async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

// Per choice index of a completions or chat stream: the concatenated text,
// the finish_reasons seen, and the chunks that carried that index.
function byChoice(chunks) {
  const out = new Map();
  for (const chunk of chunks) {
    for (const c of chunk.choices) {
      if (!out.has(c.index)) out.set(c.index, { text: '', finish: [], chunks: [] });
      const entry = out.get(c.index);
      entry.text += c.text ?? c.delta?.content ?? '';
      if (c.finish_reason) entry.finish.push(c.finish_reason);
      entry.chunks.push(c);
    }
  }
  return out;
}

// `promise` fails with openai.BadRequestError (400) naming `param` in its
// message and in error.param (or a part of it: "logit_bias.7").
async function expectBadRequest(promise, param) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError,
      `expected BadRequestError, got ${err?.constructor?.name}: ${err?.message}`);
    assert.equal(err.status, 400);
    assert.ok(err.message.includes(param), `message '${err.message}' does not name '${param}'`);
    assert.ok(err.param === param || /^[.[]/.test(err.param?.slice(param.length) ?? '') &&
      err.param.startsWith(param), `error.param '${err.param}' for '${param}': ${err.message}`);
    return true;
  });
}

// POST a JSON body to a kvstash endpoint outside /v1; the parsed reply.
async function postJson(path, body) {
  const res = await fetch(`${ROOT_URL}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `POST ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

async function tokenize(content) {
  const r = await postJson('/tokenize', { content, add_special: false, with_pieces: false });
  return r.tokens;
}

// The ids of `generated` as the continuation of `prompt`: the tokens that
// tokenizing prompt + generated adds after the prompt's own.
async function continuationIds(prompt, generated) {
  const a = await tokenize(prompt);
  const b = await tokenize(prompt + generated);
  assert.deepEqual(b.slice(0, a.length), a, 'the prompt tokenizes the same inside the longer text');
  return b.slice(a.length);
}

function assertClose(actual, expected, tol, what) {
  assert.equal(actual.length, expected.length, `${what}: lengths`);
  actual.forEach((a, i) => {
    if (a === null || expected[i] === null) {
      assert.equal(a, expected[i], `${what}[${i}]`);
    } else {
      assert.ok(Math.abs(a - expected[i]) <= tol, `${what}[${i}]: ${a} vs ${expected[i]}`);
    }
  });
}

function assertUsage(usage, { prompt, completion } = {}) {
  assert.ok(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0, 'prompt_tokens');
  assert.ok(Number.isInteger(usage.completion_tokens) && usage.completion_tokens >= 0,
    'completion_tokens');
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, 'total_tokens');
  assert.ok(Number.isInteger(usage.prompt_tokens_details?.cached_tokens),
    'prompt_tokens_details.cached_tokens');
  if (prompt !== undefined) assert.equal(usage.prompt_tokens, prompt, 'prompt_tokens');
  if (completion !== undefined) assert.equal(usage.completion_tokens, completion, 'completion_tokens');
}

// Completions' logprobs object: parallel arrays, logprobs <= 0, at most
// k + 1 alternatives a token (OpenAI: the k most likely and the chosen one).
function assertCompletionLogprobs(lp, k) {
  assert.ok(lp, 'choice.logprobs is set');
  const { tokens, token_logprobs: values, top_logprobs: tops, text_offset: offsets } = lp;
  for (const [name, arr] of Object.entries({ tokens, token_logprobs: values, top_logprobs: tops,
    text_offset: offsets })) {
    assert.ok(Array.isArray(arr), `logprobs.${name} is an array`);
    assert.equal(arr.length, tokens.length, `logprobs.${name} has one entry a token`);
  }
  tokens.forEach((t, i) => {
    assert.equal(typeof t, 'string', `tokens[${i}]`);
    const v = values[i];
    assert.ok(v === null || (typeof v === 'number' && v <= 0), `token_logprobs[${i}] = ${v}`);
    const top = tops[i];
    if (top !== null) {
      assert.equal(typeof top, 'object', `top_logprobs[${i}]`);
      const n = Object.keys(top).length;
      assert.ok(n <= k + 1, `top_logprobs[${i}] has ${n} entries, logprobs = ${k}`);
      for (const x of Object.values(top)) assert.ok(typeof x === 'number' && x <= 0);
    }
    assert.ok(Number.isInteger(offsets[i]) && offsets[i] >= 0, `text_offset[${i}]`);
    if (i > 0) assert.ok(offsets[i] >= offsets[i - 1], `text_offset is non-decreasing at ${i}`);
  });
}

// Each token starts where the one before it ends (byte offsets).
function assertOffsetsFollowTokens(lp) {
  for (let i = 1; i < lp.tokens.length; i++) {
    assert.equal(lp.text_offset[i] - lp.text_offset[i - 1], Buffer.byteLength(lp.tokens[i - 1]),
      `text_offset[${i}] follows token ${i - 1} (${JSON.stringify(lp.tokens[i - 1])})`);
  }
}

// Greedy: each generated token is its distribution's argmax, so its logprob is
// the largest of its alternatives, and it is one of them under its own text.
function assertGreedyLogprobs(lp, from = 0) {
  for (let i = from; i < lp.tokens.length; i++) {
    const top = lp.top_logprobs[i];
    assert.ok(top && Object.keys(top).length >= 1, `top_logprobs[${i}] is filled`);
    const best = Math.max(...Object.values(top));
    assert.ok(Math.abs(lp.token_logprobs[i] - best) <= 1e-4,
      `token ${i} (${JSON.stringify(lp.tokens[i])}): logprob ${lp.token_logprobs[i]}, top ${best}`);
    assert.ok(Object.hasOwn(top, lp.tokens[i]), `token ${i} (${JSON.stringify(lp.tokens[i])}) is in its top_logprobs`);
  }
}

// Chat's logprobs entries: {token, logprob, bytes, top_logprobs: [k of the same]}.
function assertChatLogprobs(content, k, { greedy = false } = {}) {
  assert.ok(Array.isArray(content), 'logprobs.content is an array');
  content.forEach((e, i) => {
    assert.equal(typeof e.token, 'string', `content[${i}].token`);
    assert.ok(typeof e.logprob === 'number' && e.logprob <= 0, `content[${i}].logprob`);
    assert.ok(Array.isArray(e.bytes) && e.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256),
      `content[${i}].bytes`);
    assert.equal(Buffer.from(e.bytes).toString('utf8'), e.token, `content[${i}]: bytes spell the token`);
    assert.ok(Array.isArray(e.top_logprobs), `content[${i}].top_logprobs`);
    assert.equal(e.top_logprobs.length, k, `content[${i}] has ${k} alternatives`);
    e.top_logprobs.forEach((a, j) => {
      assert.equal(typeof a.token, 'string');
      assert.ok(typeof a.logprob === 'number' && a.logprob <= 0);
      assert.ok(Array.isArray(a.bytes));
      if (j > 0) assert.ok(a.logprob <= e.top_logprobs[j - 1].logprob, 'most likely first');
    });
    if (greedy && k >= 1) {
      assert.ok(Math.abs(e.logprob - e.top_logprobs[0].logprob) <= 1e-4,
        `content[${i}]: greedy token ${JSON.stringify(e.token)} is the most likely`);
      assert.equal(e.top_logprobs[0].token, e.token);
    }
  });
}

// ---- models ----------------------------------------------------------------

test('models.list: one model with max_model_len and a kvstash object', T, async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m);
  assert.equal(models.length, 1);
  const [m] = models;
  assert.equal(m.id, MODEL);
  assert.equal(m.object, 'model');
  assert.ok(Number.isInteger(m.max_model_len) && m.max_model_len > 0, `max_model_len = ${m.max_model_len}`);
  assert.ok(m.kvstash !== null && typeof m.kvstash === 'object', 'kvstash object');
});

// ---- completions -----------------------------------------------------------

describe('completions', () => {
  test('basic: greedy text, deterministic, with usage', T, async () => {
    const r = await complete();
    assert.equal(r.object, 'text_completion');
    assert.match(r.id, /^cmpl-/);
    assert.equal(r.model, MODEL);
    assert.equal(r.choices.length, 1);
    const [c] = r.choices;
    assert.equal(c.index, 0);
    assert.equal(typeof c.text, 'string');
    assert.ok(c.text.length > 0);
    assert.equal(c.finish_reason, 'length');
    assert.equal(c.logprobs, null);
    assertUsage(r.usage, { completion: 8 });
    const again = await complete();
    assert.equal(again.choices[0].text, c.text);
  });

  test('max_tokens bounds the completion', T, async () => {
    for (const max_tokens of [1, 3, 12]) {
      const r = await complete({ max_tokens });
      assert.equal(r.usage.completion_tokens, max_tokens);
      assert.equal(r.choices[0].finish_reason, 'length');
    }
    const short = await complete({ max_tokens: 3 });
    const long = await complete({ max_tokens: 12 });
    assert.ok(long.choices[0].text.startsWith(short.choices[0].text));
    await expectBadRequest(complete({ max_tokens: -1 }), 'max_tokens');
  });

  test('usage: a repeated long prompt is served from the cache', T, async () => {
    const first = await complete({ prompt: LONG_PROMPT, max_tokens: 2 });
    const second = await complete({ prompt: LONG_PROMPT, max_tokens: 2 });
    assertUsage(first.usage);
    assertUsage(second.usage, { prompt: first.usage.prompt_tokens });
    assert.ok(first.usage.prompt_tokens > 32, `prompt_tokens = ${first.usage.prompt_tokens}`);
    const cached = second.usage.prompt_tokens_details.cached_tokens;
    assert.ok(cached > 0 && cached <= second.usage.prompt_tokens, `cached_tokens = ${cached}`);
    assert.equal(second.choices[0].text, first.choices[0].text);
  });

  test('stop strings end the text before the stop', T, async () => {
    const full = (await complete({ max_tokens: 32 })).choices[0].text;
    const words = full.split(/\s+/).filter((w) => /^[a-z]{3,}$/i.test(w));
    assert.ok(words.length >= 3, `enough words in ${JSON.stringify(full)}`);
    const stop = words[2];
    const expected = full.slice(0, full.indexOf(stop));
    for (const s of [stop, [stop], ['never-generated-xyz', stop]]) {
      const r = await complete({ max_tokens: 32, stop: s });
      assert.equal(r.choices[0].text, expected, `stop ${JSON.stringify(s)}`);
      assert.equal(r.choices[0].finish_reason, 'stop');
    }
  });

  test('stop_token_ids (vLLM extension) end the choice at that token', T, async () => {
    const full = (await complete({ max_tokens: 16 })).choices[0].text;
    assert.ok(full.startsWith(GREEDY_START), `greedy text ${JSON.stringify(full)}`);
    // ' a' (GREEDY_IDS[3]) is the 4th token; the prompt's own ' a' does not count.
    const r = await complete({ max_tokens: 16, stop_token_ids: [GREEDY_IDS[3]] });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'stop');
    assert.ok([', there was', ', there was a'].includes(c.text), `text ${JSON.stringify(c.text)}`);
    assert.ok(r.usage.completion_tokens <= 4, `completion_tokens = ${r.usage.completion_tokens}`);
    const two = await complete({ max_tokens: 16, stop_token_ids: [GREEDY_IDS[2], GREEDY_IDS[3]] });
    assert.ok([', there', ', there was'].includes(two.choices[0].text), 'the first of several ids');
    await expectBadRequest(complete({ stop_token_ids: 'x' }), 'stop_token_ids');
  });

  test('seed: the same seed at temperature 1 gives the same text', T, async () => {
    const p = { temperature: 1, max_tokens: 16 };
    const a = await complete({ ...p, seed: 1234 });
    const b = await complete({ ...p, seed: 1234 });
    assert.equal(a.choices[0].text, b.choices[0].text);
    const others = await Promise.all([1, 2, 3, 4].map((seed) => complete({ ...p, seed })));
    const texts = new Set([a, ...others].map((r) => r.choices[0].text));
    assert.ok(texts.size > 1, 'different seeds give different texts');
  });

  test('logprobs: tokens, token_logprobs, top_logprobs, text_offset', T, async () => {
    const r = await complete({ max_tokens: 6, logprobs: 3 });
    const c = r.choices[0];
    assertCompletionLogprobs(c.logprobs, 3);
    assert.equal(c.logprobs.tokens.length, 6);
    assert.equal(c.logprobs.tokens.join(''), c.text, 'the tokens spell the text');
    assertOffsetsFollowTokens(c.logprobs);
    for (const v of c.logprobs.token_logprobs) assert.equal(typeof v, 'number');
    assertGreedyLogprobs(c.logprobs);
    // The text does not change when logprobs are asked for.
    assert.equal(c.text, (await complete({ max_tokens: 6 })).choices[0].text);
  });

  test('logprobs: 0 and 20 are accepted, 21 and -1 are not', T, async () => {
    const zero = (await complete({ max_tokens: 4, logprobs: 0 })).choices[0].logprobs;
    assertCompletionLogprobs(zero, 0);
    assert.equal(zero.tokens.length, 4);
    for (const v of zero.token_logprobs) assert.equal(typeof v, 'number');
    const twenty = (await complete({ max_tokens: 2, logprobs: 20 })).choices[0].logprobs;
    assertCompletionLogprobs(twenty, 20);
    assertGreedyLogprobs(twenty);
    assert.ok(Object.keys(twenty.top_logprobs[0]).length >= 10, 'about 20 alternatives');
    await expectBadRequest(complete({ logprobs: 21 }), 'logprobs');
    await expectBadRequest(complete({ logprobs: -1 }), 'logprobs');
  });

  test('echo: the text starts with the prompt; max_tokens 0 scores the prompt', T, async () => {
    const r = await complete({ echo: true, max_tokens: 6 });
    const plain = await complete({ max_tokens: 6 });
    assert.equal(r.choices[0].text, PROMPT + plain.choices[0].text);
    assert.equal(r.usage.completion_tokens, 6);

    const only = await complete({ echo: true, max_tokens: 0 });
    assert.equal(only.choices[0].text, PROMPT);
    assert.equal(only.usage.completion_tokens, 0);
    assert.equal(only.usage.prompt_tokens, r.usage.prompt_tokens);
  });

  test('echo + logprobs: the prompt tokens first, the first unscored', T, async () => {
    const r = await complete({ echo: true, max_tokens: 4, logprobs: 2 });
    const c = r.choices[0];
    const lp = c.logprobs;
    assertCompletionLogprobs(lp, 2);
    const promptEntries = lp.tokens.length - 4;
    assert.ok(promptEntries >= 1, `${lp.tokens.length} entries for 4 generated tokens`);
    assert.equal(lp.token_logprobs[0], null);
    assert.equal(lp.top_logprobs[0], null);
    assert.equal(lp.text_offset[0], 0, 'offsets count from the start of the echoed text');
    assertOffsetsFollowTokens(lp);
    for (let i = 1; i < lp.tokens.length; i++) {
      assert.equal(typeof lp.token_logprobs[i], 'number', `token_logprobs[${i}]`);
      assert.notEqual(lp.top_logprobs[i], null, `top_logprobs[${i}]`);
    }
    assert.ok(lp.tokens.slice(0, promptEntries).join('').endsWith(PROMPT.split(' ').at(-1)),
      'the prompt tokens end with its last word');
    assertGreedyLogprobs(lp, promptEntries);
    assert.ok(c.text.startsWith(PROMPT));

    const only = (await complete({ echo: true, max_tokens: 0, logprobs: 1 })).choices[0];
    assert.equal(only.text, PROMPT);
    assertCompletionLogprobs(only.logprobs, 1);
    assert.equal(only.logprobs.tokens.length, promptEntries);
    assertClose(only.logprobs.token_logprobs, lp.token_logprobs.slice(0, promptEntries), 1e-4,
      'prompt logprobs with and without generation');
  });

  test('echo + logprobs: the prompt scores the same cached or not', T, async () => {
    const prompt = `Lily saw a big tree. ${LONG_PROMPT}`; // no block shared with earlier prompts
    const req = { prompt, echo: true, max_tokens: 0, logprobs: 1 };
    const cold = (await complete(req)).choices[0].logprobs;
    await complete({ prompt, max_tokens: 1 }); // the prompt is in the cache now
    const warm = (await complete(req)).choices[0].logprobs;
    assert.deepEqual(warm.tokens, cold.tokens);
    assertClose(warm.token_logprobs, cold.token_logprobs, 1e-4, 'token_logprobs');
  });

  test('n: greedy choices are equal, indexed 0..n-1, usage sums them', T, async () => {
    const single = await complete({ max_tokens: 6 });
    const r = await complete({ max_tokens: 6, n: 3 });
    assert.equal(r.choices.length, 3);
    assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1, 2]);
    for (const c of r.choices) {
      assert.equal(c.text, single.choices[0].text);
      assert.equal(c.finish_reason, 'length');
    }
    assertUsage(r.usage, { prompt: single.usage.prompt_tokens, completion: 18 });
    await expectBadRequest(complete({ n: 0 }), 'n');
    await expectBadRequest(complete({ n: 65 }), 'n');
  });

  test('n with a seed at temperature 1: choices differ, choice i is seed + i', T, async () => {
    const p = { temperature: 1, max_tokens: 16, seed: 77 };
    const r = await complete({ ...p, n: 4 });
    assert.equal(r.choices.length, 4);
    const texts = [...r.choices].sort((a, b) => a.index - b.index).map((c) => c.text);
    assert.ok(new Set(texts).size > 1, `choices differ: ${JSON.stringify(texts)}`);
    const again = await complete({ ...p, n: 4 });
    assert.deepEqual([...again.choices].sort((a, b) => a.index - b.index).map((c) => c.text), texts,
      'the same seeded request gives the same choices');
    // scheduler.h: choice i samples with seed + i, as the request alone would.
    const alone = await complete({ ...p, seed: 78 });
    assert.equal(texts[1], alone.choices[0].text, 'choice 1 = the request with seed + 1');
  });

  test('best_of: n of best_of choices; not with stream; not below n', T, async () => {
    const single = await complete({ max_tokens: 6 });
    const r = await complete({ max_tokens: 6, n: 2, best_of: 4 });
    assert.equal(r.choices.length, 2);
    assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1]);
    for (const c of r.choices) assert.equal(c.text, single.choices[0].text);
    const used = r.usage.completion_tokens;
    assert.ok(used >= 12 && used <= 24, `completion_tokens = ${used}`);
    const sampled = await complete({ temperature: 1, seed: 5, max_tokens: 8, best_of: 3 });
    assert.equal(sampled.choices.length, 1);
    await expectBadRequest(complete({ n: 3, best_of: 2 }), 'best_of');
    await expectBadRequest(complete({ n: 1, best_of: 3, stream: true }), 'best_of');
  });

  test('presence_penalty and frequency_penalty: in [-2, 2], change greedy text', T, async () => {
    const p = { prompt: LONG_PROMPT, max_tokens: 48 };
    const plain = (await complete(p)).choices[0].text;
    const freq = (await complete({ ...p, frequency_penalty: 2 })).choices[0].text;
    const pres = (await complete({ ...p, presence_penalty: 2 })).choices[0].text;
    assert.notEqual(freq, plain, 'frequency_penalty 2 changes the text');
    assert.notEqual(pres, plain, 'presence_penalty 2 changes the text');
    await complete({ max_tokens: 2, frequency_penalty: -2, presence_penalty: -2 });
    await expectBadRequest(complete({ presence_penalty: 2.5 }), 'presence_penalty');
    await expectBadRequest(complete({ frequency_penalty: -2.01 }), 'frequency_penalty');
  });

  test('logit_bias: +100 forces a token, -100 bans the greedy one', T, async () => {
    const six = (await complete({ max_tokens: 6, logit_bias: { [FORCED_ID]: 100 } })).choices[0].text;
    assert.equal(six, ' do'.repeat(6), 'the forced token, six times');

    const greedy = (await complete({ max_tokens: 1 })).choices[0].text;
    assert.equal(greedy, ',');
    const banned = (await complete({ max_tokens: 1, logit_bias: { [GREEDY_IDS[0]]: -100 } }))
      .choices[0].text;
    assert.notEqual(banned, greedy, `token ${GREEDY_IDS[0]} (',') is banned`);

    await expectBadRequest(complete({ logit_bias: { [FORCED_ID]: 101 } }), 'logit_bias');
    await expectBadRequest(complete({ logit_bias: { dog: 1 } }), 'logit_bias');
  });

  test('stream: the chunks spell the text; include_usage adds a usage chunk', T, async () => {
    const plain = await complete({ max_tokens: 10 });
    const chunks = await collect(await complete({
      max_tokens: 10, stream: true, stream_options: { include_usage: true },
    }));
    const choices = byChoice(chunks);
    assert.deepEqual([...choices.keys()], [0]);
    assert.equal(choices.get(0).text, plain.choices[0].text);
    assert.deepEqual(choices.get(0).finish, ['length']);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assertUsage(last.usage, { prompt: plain.usage.prompt_tokens, completion: 10 });
    for (const chunk of chunks.slice(0, -1)) assert.equal(chunk.usage ?? null, null);
  });

  test('stream with n = 2: each index has its text and a finish_reason', T, async () => {
    const plain = await complete({ max_tokens: 10 });
    const chunks = await collect(await complete({
      max_tokens: 10, n: 2, stream: true, stream_options: { include_usage: true },
    }));
    for (const chunk of chunks) assert.ok(chunk.choices.length <= 1, 'one choice a chunk');
    const choices = byChoice(chunks);
    assert.deepEqual([...choices.keys()].sort(), [0, 1]);
    for (const [i, c] of choices) {
      assert.equal(c.text, plain.choices[0].text, `choice ${i}`);
      assert.deepEqual(c.finish, ['length'], `choice ${i}`);
    }
    const usage = chunks.at(-1).usage;
    assertUsage(usage, { completion: 20 });
  });

  test('stream with logprobs: each chunk holds its tokens\' logprobs', T, async () => {
    const plain = (await complete({ max_tokens: 8, logprobs: 2 })).choices[0];
    const chunks = await collect(await complete({ max_tokens: 8, logprobs: 2, n: 2, stream: true }));
    const choices = byChoice(chunks);
    assert.deepEqual([...choices.keys()].sort(), [0, 1]);
    for (const [i, c] of choices) {
      const tokens = [];
      const values = [];
      for (const ch of c.chunks) {
        if (!ch.logprobs) continue;
        assertCompletionLogprobs(ch.logprobs, 2);
        tokens.push(...ch.logprobs.tokens);
        values.push(...ch.logprobs.token_logprobs);
      }
      assert.deepEqual(tokens, plain.logprobs.tokens, `choice ${i}: tokens`);
      assertClose(values, plain.logprobs.token_logprobs, 1e-4, `choice ${i}: token_logprobs`);
    }
  });
});

// ---- chat ------------------------------------------------------------------

describe('chat completions', () => {
  test('basic: an assistant message, deterministic, with usage', T, async () => {
    const r = await chat();
    assert.equal(r.object, 'chat.completion');
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.model, MODEL);
    assert.equal(r.choices.length, 1);
    const [c] = r.choices;
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(c.message.content.length > 0);
    assert.equal(c.finish_reason, 'length');
    assertUsage(r.usage, { completion: 8 });
    assert.equal((await chat()).choices[0].message.content, c.message.content);
    // max_completion_tokens is the newer name of max_tokens.
    const r3 = await chat({ max_tokens: undefined, max_completion_tokens: 3 });
    assert.equal(r3.usage.completion_tokens, 3);
  });

  test('stream: deltas spell the message; role first; usage chunk', T, async () => {
    const plain = await chat({ max_tokens: 10 });
    const chunks = await collect(await chat({
      max_tokens: 10, stream: true, stream_options: { include_usage: true },
    }));
    assert.equal(chunks[0].object, 'chat.completion.chunk');
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const choices = byChoice(chunks);
    assert.equal(choices.get(0).text, plain.choices[0].message.content);
    assert.deepEqual(choices.get(0).finish, ['length']);
    assertUsage(chunks.at(-1).usage, { completion: 10 });
  });

  test('stop strings', T, async () => {
    const full = (await chat({ max_tokens: 24 })).choices[0].message.content;
    const words = full.split(/\s+/).filter((w) => /^[a-z]{3,}$/i.test(w));
    assert.ok(words.length >= 2, `enough words in ${JSON.stringify(full)}`);
    const stop = words[1];
    const r = await chat({ max_tokens: 24, stop: [stop] });
    assert.equal(r.choices[0].message.content, full.slice(0, full.indexOf(stop)));
    assert.equal(r.choices[0].finish_reason, 'stop');
  });

  test('logprobs + top_logprobs: content entries with bytes and alternatives', T, async () => {
    const r = await chat({ max_tokens: 6, logprobs: true, top_logprobs: 3 });
    const c = r.choices[0];
    assert.ok(c.logprobs, 'choice.logprobs is set');
    const { content } = c.logprobs;
    assert.equal(content.length, 6);
    assertChatLogprobs(content, 3, { greedy: true });
    assert.equal(content.map((e) => e.token).join(''), c.message.content, 'the tokens spell the message');
    const none = await chat({ max_tokens: 2, logprobs: true, top_logprobs: 0 });
    assertChatLogprobs(none.choices[0].logprobs.content, 0);
    const plain = await chat({ max_tokens: 2 });
    assert.equal(plain.choices[0].logprobs ?? null, null, 'no logprobs unless asked');
    await expectBadRequest(chat({ logprobs: true, top_logprobs: 21 }), 'top_logprobs');
    await expectBadRequest(chat({ top_logprobs: 2 }), 'top_logprobs'); // needs logprobs: true
  });

  test('stream with logprobs: each chunk holds its tokens\' entries', T, async () => {
    const plain = (await chat({ max_tokens: 6, logprobs: true, top_logprobs: 2 })).choices[0];
    const chunks = await collect(await chat({ max_tokens: 6, logprobs: true, top_logprobs: 2, stream: true }));
    const entries = [];
    for (const chunk of chunks) {
      const content = chunk.choices[0]?.logprobs?.content;
      if (!content) continue;
      assertChatLogprobs(content, 2);
      entries.push(...content);
    }
    assert.deepEqual(entries.map((e) => e.token), plain.logprobs.content.map((e) => e.token));
    assertClose(entries.map((e) => e.logprob), plain.logprobs.content.map((e) => e.logprob), 1e-4,
      'logprob');
  });

  test('n and seed', T, async () => {
    const single = await chat({ max_tokens: 6 });
    const r = await chat({ max_tokens: 6, n: 2 });
    assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1]);
    for (const c of r.choices) assert.equal(c.message.content, single.choices[0].message.content);
    assertUsage(r.usage, { completion: 12 });

    const p = { temperature: 1, max_tokens: 12, seed: 99 };
    const a = await chat(p);
    const b = await chat(p);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    const sampled = await chat({ ...p, n: 3 });
    assert.ok(new Set(sampled.choices.map((c) => c.message.content)).size > 1, 'choices differ');
  });

  test('stream with n = 2', T, async () => {
    const plain = await chat({ max_tokens: 8 });
    const choices = byChoice(await collect(await chat({ max_tokens: 8, n: 2, stream: true })));
    assert.deepEqual([...choices.keys()].sort(), [0, 1]);
    for (const [i, c] of choices) {
      assert.equal(c.chunks[0].delta.role, 'assistant', `choice ${i}: its first chunk has the role`);
      assert.equal(c.text, plain.choices[0].message.content, `choice ${i}`);
      assert.deepEqual(c.finish, ['length'], `choice ${i}`);
    }
  });

  test('penalties and logit_bias', T, async () => {
    const six = await chat({ max_tokens: 6, logit_bias: { [FORCED_ID]: 100 } });
    const one = await chat({ max_tokens: 1, logit_bias: { [FORCED_ID]: 100 } });
    assert.equal(six.choices[0].message.content, one.choices[0].message.content.repeat(6));
    const p = { max_tokens: 48 };
    const plain = (await chat(p)).choices[0].message.content;
    const freq = (await chat({ ...p, frequency_penalty: 2 })).choices[0].message.content;
    assert.notEqual(freq, plain, 'frequency_penalty 2 changes the text');
    await expectBadRequest(chat({ presence_penalty: -3 }), 'presence_penalty');
    await expectBadRequest(chat({ logit_bias: { [FORCED_ID]: -101 } }), 'logit_bias');
  });
});

// ---- tokenize / detokenize ---------------------------------------------------

test('tokenize and detokenize round-trip', T, async () => {
  const text = 'Once upon a time, there was a little dog named Max.';
  const ids = await tokenize(text);
  assert.ok(Array.isArray(ids) && ids.length > 0);
  for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < 512, `id ${id}`);
  const pieces = (await postJson('/tokenize', { content: text, add_special: false, with_pieces: true })).tokens;
  assert.deepEqual(pieces.map((p) => p.id), ids);
  for (const p of pieces) assert.equal(typeof p.piece, 'string');
  const back = await postJson('/detokenize', { tokens: ids });
  assert.equal(back.content, text);
  // The ids the other tests use are those of the greedy text.
  assert.deepEqual(await continuationIds(PROMPT, GREEDY_START), GREEDY_IDS);
  assert.deepEqual(await continuationIds(PROMPT, ' do'), [FORCED_ID]);
  // add_special adds BOS in front.
  const special = (await postJson('/tokenize', { content: text, add_special: true })).tokens;
  assert.deepEqual(special.slice(-ids.length), ids);
  assert.equal(special.length, ids.length + 1);
});

// ---- errors ----------------------------------------------------------------

test('errors: a bad option is a BadRequestError naming it', T, async () => {
  await expectBadRequest(complete({ temperature: 5 }), 'temperature');
  await expectBadRequest(complete({ top_p: 0 }), 'top_p');
  await expectBadRequest(chat({ messages: [] }), 'messages');
});

test('errors: a wrong API key is an AuthenticationError', T, async () => {
  const wrong = new OpenAI({ baseURL: BASE_URL, apiKey: 'not-the-key', maxRetries: 0, timeout: 20_000 });
  await assert.rejects(wrong.models.list(), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}`);
    assert.equal(err.status, 401);
    return true;
  });
  await assert.rejects(wrong.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 1 }),
    OpenAI.AuthenticationError);
});
