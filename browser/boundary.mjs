// The JS/wasm boundary of tether-browser under bad input, in node (no browser needed):
// every misuse and every garbage byte sequence gets a code back, never a trap (a panic in
// the module would throw a RuntimeError here). Exits 1 on the first surprise.
//
// Usage: node browser/boundary.mjs [path/to/tether_browser.wasm]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const file = process.argv[2] ||
  path.join(here, 'target/wasm/wasm32-unknown-unknown/release/tether_browser.wasm');
const { instance } = await WebAssembly.instantiate(readFileSync(file), {});
const w = instance.exports;

function fail(msg) {
  console.error(`boundary: FAIL: ${msg}`);
  process.exit(1);
}
function expect(what, got, want) {
  if (got !== want) fail(`${what} = ${got}, expected ${want}`);
}
function put(bytes) {
  const ptr = w.input_buffer(bytes.length);
  if (ptr === 0) fail(`input_buffer(${bytes.length}) = 0`);
  new Uint8Array(w.memory.buffer, ptr, bytes.length).set(bytes);
}
/** Polls until Wait; returns the kinds seen. */
function drain() {
  const kinds = [];
  for (let i = 0; i < 10000; i++) {
    const k = w.poll();
    kinds.push(k);
    if (k <= 0) return kinds;
  }
  fail('poll never said wait');
}

// Before create: every input is refused with "no client".
expect('poll before create', w.poll(), -1);
expect('opened before create', w.opened(0, 1), -1);
expect('journal_len before create', w.journal_len(), -1);
expect('journal_dump before create', w.journal_dump(), -1);
// Lengths over the buffer: refused, nothing done.
expect('input_buffer(64 KiB + 1)', w.input_buffer(64 * 1024 + 1), 0);
expect('create with a token over the buffer', w.create(0, 0xffffffff), -2);
expect('received over the buffer', w.received(0, 1, 64 * 1024 + 1), -2);
put(new Uint8Array(16 + 4 + 16));
expect('create with a 4-byte token (too short for tether)', w.create(0, 4), -3);

// A client, on link 1; NaN and negative times are harmless.
put(crypto.getRandomValues(new Uint8Array(32)));
expect('create', w.create(NaN, 16), 0);
expect('first output asks for a transport', w.poll(), 2);
expect('opened', w.opened(-5, 1), 0);
drain();
expect('opened twice: a code, no trap', w.opened(1000, 1) <= 0, true);
expect('append with a 65-byte author', w.append(1000, 65, 1, 0), -2);
expect('append over the buffer', w.append(1000, 64, 64, 64 * 1024), -2);
put(new TextEncoder().encode('mer1hello'));
expect('append', w.append(1000, 2, 2, 5), 0);
put(new TextEncoder().encode('mer1hello'));
expect('append again (duplicate)', w.append(1000, 2, 2, 5), -5);
expect('journal_len', w.journal_len(), 1);
drain();

// Garbage from the network, many times over, on live and stale links.
let seed = 7;
const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 16;
let link = 1;
for (let round = 0; round < 300; round++) {
  const len = rand() % 600;
  const bytes = new Uint8Array(len).map(() => rand() & 0xff);
  if (round % 3 === 0 && len >= 4) bytes.set([0, 0, 0, Math.min(len - 4, 255)], 0);
  put(bytes);
  const code = w.received(2000 + round * 100000, link, len);
  if (code > 0 || code < -6) fail(`received returned ${code}`);
  const now = 2000 + round * 100000;
  const settle = () => {
    for (const k of drain()) {
      if (k === 2) {
        link += 1;
        expect('opened (new link)', w.opened(now, link), 0);
        settle();
        return;
      }
    }
  };
  settle();
  if (round % 50 === 0) w.closed(now, link);
  w.timeout(now + 50000);
  settle();
}
expect('journal survives garbage', w.journal_len(), 1);
if (link < 3) fail(`the garbage never made the client drop its link (${link - 1} reconnections)`);
console.log(`boundary: misuse and 300 garbage inputs (${link - 1} reconnections): codes, no trap: ok`);
