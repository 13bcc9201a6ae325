// Instantiates the tether-wasm cdylib in node and checks, exactly, what happened inside it:
// a token-merge handshake between two tether peers, a transport cut mid-sync, a resumption,
// and a journal sync that ends with both journals equal, every entry applied exactly once.
// Exits 1 unless every number is the only right one.
//
// Build first: /work/shared/tools/wasm-build wasm --release
// Then: node wasm/run.js [path/to/tether_wasm.wasm]
'use strict';
const fs = require('fs');
const path = require('path');

const file = process.argv[2] ||
  path.join(__dirname, 'target/wasm/wasm32-unknown-unknown/release/tether_wasm.wasm');

// The scenario's constants (wasm/src/lib.rs): entries each side appends before the cut and
// while the transport is down.
const BEFORE_CUT = 50;
const WHILE_DOWN = 10;
const PER_SIDE = BEFORE_CUT + WHILE_DOWN;
const ALL = 2 * PER_SIDE;

function fail(msg) {
  console.error('wasm: FAIL: ' + msg);
  process.exit(1);
}

(async () => {
  const bytes = fs.readFileSync(file);
  // No imports: the module needs nothing from the host (no clock, no randomness, no I/O).
  const { instance } = await WebAssembly.instantiate(bytes, {});
  const { run, applied, applied_before_cut } = instance.exports;
  if ([run, applied, applied_before_cut].some((f) => typeof f !== 'function')) {
    fail('missing exports');
  }

  const started = process.hrtime.bigint();
  const packed = run() >>> 0;
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const flags = packed >>> 28;
  const clientEntries = (packed >>> 14) & 0x3fff;
  const serverEntries = packed & 0x3fff;
  const both = applied() >>> 0;
  const clientApplied = both >>> 16;
  const serverApplied = both & 0xffff;
  const beforeCut = applied_before_cut() >>> 0;

  console.log(`wasm: ${bytes.length} bytes, run() took ${ms.toFixed(1)} ms`);
  console.log(`wasm: fresh=${flags & 1 ? 1 : 0} lost=${flags & 2 ? 1 : 0} ` +
    `resumed=${flags & 4 ? 1 : 0} journals_equal=${flags & 8 ? 1 : 0}`);
  console.log(`wasm: entries client=${clientEntries} server=${serverEntries}; ` +
    `applied from the peer, each exactly once: client=${clientApplied} server=${serverApplied}; ` +
    `cut with ${beforeCut} of ${BEFORE_CUT} server entries applied on the client`);

  const expectPacked = (0xf << 28 | ALL << 14 | ALL) >>> 0;
  const expectApplied = (PER_SIDE << 16 | PER_SIDE) >>> 0;
  if (packed !== expectPacked) {
    fail(`run() = 0x${packed.toString(16)}, expected 0x${expectPacked.toString(16)}`);
  }
  if (both !== expectApplied) {
    fail(`applied() = 0x${both.toString(16)}, expected 0x${expectApplied.toString(16)}`);
  }
  if (!(beforeCut > 0 && beforeCut < BEFORE_CUT)) fail('the cut did not fall in the middle of the sync');
  console.log('wasm: handshake, cut, resumption and journal sync inside WebAssembly: ok');
})().catch((e) => fail(e && e.stack || String(e)));
