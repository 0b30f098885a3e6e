// GET /dashboard in a real browser: Debian's chromium, headless, driven by
// playwright-core (pinned in package.json; it downloads no browser) against
// a live `kvstash serve` with an API key (run.sh starts it: KVSTASH_ROOT_URL,
// OPENAI_API_KEY). The page asks for the key, then shows the numbers of the
// traffic sent here: requests, pool blocks, the hit rate of a repeated
// prompt, that prompt as the hottest prefix with its first words. It talks
// to its own origin only, its fetches pass the server's Origin screen, the
// Content-Security-Policy blocks nothing it does, and it weighs < 200 KB.
//
// KVSTASH_DASHBOARD_SCREENSHOT: where the screenshot goes (default
// dashboard.png beside the kvstash binary, in the build folder).
// KVSTASH_CHROMIUM: the browser (default /usr/bin/chromium).
// KVSTASH_DASHBOARD_DEMO_SECONDS: before the screenshot, send that long a
// mix of repeated prompts from 3 clients (docs/dashboard.png; default 0).
import assert from 'node:assert/strict';
import {existsSync} from 'node:fs';
import path from 'node:path';
import {after, before, test} from 'node:test';

import {chromium} from 'playwright-core';

const root = process.env.KVSTASH_ROOT_URL;
const key = process.env.OPENAI_API_KEY;
const browserPath = process.env.KVSTASH_CHROMIUM || '/usr/bin/chromium';
const screenshot = process.env.KVSTASH_DASHBOARD_SCREENSHOT ||
    path.join(path.dirname(process.env.KVSTASH_BINARY || '.'), 'dashboard.png');
assert.ok(root && key, 'run through run.sh (KVSTASH_ROOT_URL, OPENAI_API_KEY)');
assert.ok(existsSync(browserPath), `no browser at ${browserPath}`);

// Prompts of several 16-token blocks (stories260K's tokenizer: a word is
// about a token), so that their full blocks are cached.
const STORY = 'Once upon a time, there was a little girl named Lily. She ' +
    'loved to play outside in the park with her red ball and her dog Max.';
const OTHERS = [
  'One day, a big bear came to the forest. The bear was hungry and sad, ' +
      'so he looked for honey in the tall trees near the river bank.',
  'Tom had a small boat. Every morning he sailed on the lake with his ' +
      'friend Sue, and they sang songs to the fish and the birds above.',
];

let browser;
let page;
const requests = [];  // every URL the page asked for
const problems = [];  // console errors, page errors, CSP violations

async function complete(prompt, extra = {}) {
  const res = await fetch(`${root}/v1/completions`, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', Authorization: `Bearer ${key}`},
    body: JSON.stringify({prompt, max_tokens: 24, temperature: 0, ...extra}),
  });
  const body = await res.text();
  assert.equal(res.status, 200, body);
  return JSON.parse(body);
}

async function data() {
  const res = await fetch(`${root}/dashboard/data`,
                          {headers: {Authorization: `Bearer ${key}`}});
  assert.equal(res.status, 200);
  return res.json();
}

const text = (id) => page.locator(`#${id}`).textContent();
const number = async (id) => Number((await text(id)).replace(/[^0-9.]/g, ''));

// Waits until the page shows what `check` wants (polled: the page itself
// refreshes once a second).
async function until(what, check, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) assert.fail(`the page did not show ${what} in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Three clients, each sending prompts drawn with weights (the story most,
// a fifth of them unseen), at a rate that rises and falls.
async function demoTraffic(seconds) {
  if (!(seconds > 0)) return;
  const pool = [STORY, STORY, STORY, STORY, OTHERS[0], OTHERS[0], OTHERS[1],
                'The sun was hot. Ben and his mom went to the beach to swim ' +
                    'and build a big sand castle with a flag on the top.'];
  const end = Date.now() + seconds * 1000;
  let n = 0;
  const client = async (c) => {
    while (Date.now() < end) {
      const i = n++;
      const prompt = i % 5 === 4 ? `${OTHERS[i % 2]} Then ${i} birds came.` :
                                   pool[(i * 7 + c) % pool.length];
      await complete(prompt, {max_tokens: 32 + (i * 13) % 96, temperature: 0.8, seed: i});
      const phase = Math.sin((Date.now() / 1000) / 9);
      await new Promise((r) => setTimeout(r, 150 + 600 * (phase + 1)));
    }
  };
  await Promise.all([0, 1, 2].map(client));
}

before(async () => {
  browser = await chromium.launch({executablePath: browserPath, args: ['--no-sandbox', '--disable-dev-shm-usage']});
  const context = await browser.newContext({viewport: {width: 1440, height: 1000}});
  page = await context.newPage();
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
});

after(async () => {
  if (browser) await browser.close();
});

test('the data endpoint is admin-only; the page holds no data', async () => {
  assert.equal((await fetch(`${root}/dashboard/data`)).status, 401);
  assert.equal((await fetch(`${root}/dashboard/data`,
                            {headers: {Authorization: 'Bearer wrong'}})).status, 401);
  // A page of another origin is refused before anything runs.
  const foreign = await fetch(`${root}/dashboard/data`, {
    headers: {Authorization: `Bearer ${key}`, Origin: 'http://evil.example'},
  });
  assert.equal(foreign.status, 403);
  const res = await fetch(`${root}/dashboard`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /connect-src 'self'/);
  const html = await res.text();
  assert.ok(!html.includes(key));
});

test('the page asks for the key, then shows the server', async () => {
  const response = await page.goto(`${root}/dashboard`);
  assert.equal(response.status(), 200);
  const bytes = (await response.body()).length;
  assert.ok(bytes < 200 * 1024, `the page weighs ${bytes} bytes`);
  // With keys configured, the first fetch is a 401 and the page says so.
  await page.locator('#keybox').waitFor({state: 'visible'});
  assert.match(await text('status'), /needs a key/);
  assert.match(await text('keymsg'), /API key/);
  await page.fill('#key', key);
  await page.press('#key', 'Enter');
  await until('"live"', async () => (await text('status')) === 'live');
  assert.ok(await page.locator('#keybox').isHidden());
  assert.equal(await page.evaluate(() => sessionStorage.length), 1);
  await until('the model', async () => (await text('model')).includes('stories260K'));
  const d = await data();
  assert.equal(await number('free-blocks'), d.kv.free_blocks);
  assert.equal(await number('finished'), d.requests.finished);
});

test('the numbers follow the traffic', async () => {
  const before = await data();
  // A prompt repeated (hits after the first), two others once, several at
  // once.
  const first = await complete(STORY);
  const blocks = Math.floor(first.usage.prompt_tokens / before.kv.block_tokens);
  assert.ok(blocks >= 2, `${first.usage.prompt_tokens} prompt tokens`);
  await Promise.all(OTHERS.map((p) => complete(p)));
  for (let i = 0; i < 4; ++i) {
    const r = await complete(STORY, {seed: i, temperature: 0.8});
    assert.ok(r.usage.prompt_tokens_details.cached_tokens >=
              (blocks - 1) * before.kv.block_tokens);
  }
  const finished = before.requests.finished + 7;
  await until(`${finished} requests finished`,
              async () => (await number('finished')) >= finished);
  assert.ok((await number('submitted')) >= finished);
  // Cached blocks: at least the three prompts' full blocks.
  await until('the prompts\' blocks cached',
              async () => (await number('cached-blocks')) >= before.kv.cached_blocks + blocks);
  const d = await data();
  assert.equal((await number('used-blocks')) + (await number('cached-blocks')) +
                   (await number('free-blocks')),
               d.kv.capacity_blocks);
  // The hit rate: 4 of the 7 prompts were mapped from the cache.
  await until('a hit rate', async () => (await number('hit-rate')) > 0);
  const shown = await number('hit-rate');
  const rate = 100 * d.kv.hit_tokens / d.kv.queried_tokens;
  assert.ok(Math.abs(shown - rate) < 0.1, `page ${shown}%, server ${rate}%`);
  // The hit-rate chart drew a line (or a dot) for the window with hits.
  await until('the hit-rate chart',
              async () => (await page.locator('#hit-chart path, #hit-chart circle').count()) > 0);
  // The hottest prefix: the repeated story, with its first words.
  await until('the hottest prefix', async () =>
    (await page.locator('#hot tbody tr').first().textContent()).includes('Once upon a time'));
  const row = page.locator('#hot tbody tr').first().locator('td');
  assert.equal(Number(await row.nth(1).textContent()), blocks * before.kv.block_tokens);
  assert.ok(Number(await row.nth(2).textContent()) >= 4);
  // TTFT and ITL histograms have bars.
  assert.match(await text('ttft-note'), /observations/);
  assert.ok((await page.locator('#ttft-chart rect').count()) > 0);
  assert.ok((await page.locator('#itl-chart rect').count()) > 0);
});

test('running and queued requests show while they run', async () => {
  // Long generations, more than the page needs to see one poll of them.
  const prompt = 'The little dog ran';
  let seen = false;
  const burst = Promise.all(Array.from({length: 24}, (_, i) =>
    complete(prompt, {max_tokens: 400, temperature: 1, seed: i, n: 4})));
  const end = Date.now() + 30000;
  let done = false;
  burst.then(() => { done = true; }, () => { done = true; });
  while (!done && Date.now() < end) {
    if ((await number('running')) > 0 && (await number('used-blocks')) > 0) {
      seen = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await burst;
  assert.ok(seen, 'the page never showed a running request with its blocks');
});

test('only its own origin, nothing blocked, and a screenshot', async () => {
  const origin = new URL(root).origin;
  const foreign = requests.filter((u) => !u.startsWith('data:') && new URL(u).origin !== origin);
  assert.deepEqual(foreign, []);
  assert.ok(requests.filter((u) => u.endsWith('/dashboard/data')).length >= 3);
  // A 401 is logged by the browser as a failed resource; nothing else may be.
  const unexpected = problems.filter((p) => !/401/.test(p));
  assert.deepEqual(unexpected, []);
  // Let a few more polls draw the history (with demo traffic, while it
  // still runs), then take the picture.
  const demo = Number(process.env.KVSTASH_DASHBOARD_DEMO_SECONDS || 0);
  const traffic = demoTraffic(demo);
  await new Promise((r) => setTimeout(r, demo > 0 ? (demo - 2) * 1000 : 2500));
  await page.screenshot({path: screenshot, fullPage: true});
  await traffic;
  assert.ok(existsSync(screenshot));
  console.log(`dashboard_test: screenshot at ${screenshot}`);
});
