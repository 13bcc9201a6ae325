// The JavaScript half of tether in the browser: drives the tether-browser wasm module (a
// token-merge client Peer with journal sync) over browser WebSockets and timers.
//
// The whole driver is the tether contract (src/driver.rs): after every input, poll the
// machine until it says Wait, acting on each output on the way.
//
//   the machine says        | the driver does
//   ------------------------|----------------------------------------------------------
//   Open(main)              | new WebSocket(url), binaryType 'arraybuffer', a fresh link id;
//                           | onopen -> opened(link); a failure before open -> opened + closed
//   Transmit(link, bytes)   | one binary message on that link's WebSocket (tether's frames)
//   Close(link)             | ws.close(), then closed(link) at once
//   Wait(deadline)          | setTimeout until the deadline, then timeout()
//   Event                   | handed to onEvent({ name, key? })
//   a message arrives       | received(link, bytes), in chunks of at most INPUT_MAX
//   onclose / onerror       | closed(link) (once per link)
//
// Time is performance.now() in microseconds, given on every input. Randomness for the
// client's token, its jitter and its journal epoch comes from crypto.getRandomValues.
// Plain ES module, no bundler, no wasm-bindgen: exported functions and linear memory.

const KIND_WAIT = 0;
const KIND_TRANSMIT = 1;
const KIND_OPEN = 2;
const KIND_CLOSE = 3;
const KIND_EVENT = 4;

/** Event codes of the module (browser/src/client.rs) to names. */
export const EVENTS = {
  1: 'up-fresh',
  2: 'up-resumed',
  3: 'down',
  4: 'ended',
  5: 'applied',
  6: 'refused',
  7: 'completed',
  8: 'confirmed',
  9: 'other',
};

const INPUT_MAX = 64 * 1024;
/** Outputs handled in one go before yielding to the event loop (the machine bounds its own
 * output; this only keeps a page responsive). */
const POLL_BUDGET = 10000;

/** Fetches and instantiates the module: it imports nothing. */
export async function instantiate(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`fetching ${url}: HTTP ${response.status}`);
  const { instance } = await WebAssembly.instantiate(await response.arrayBuffer(), {});
  return instance.exports;
}

/** Decodes `[len: u8][author][len: u8][resource]...` into [author, resource] pairs. */
export function decodeKeys(bytes) {
  const text = new TextDecoder();
  const keys = [];
  let i = 0;
  while (i < bytes.length) {
    const pair = [];
    for (let k = 0; k < 2 && i < bytes.length; k++) {
      const n = bytes[i];
      pair.push(text.decode(bytes.subarray(i + 1, i + 1 + n)));
      i += 1 + n;
    }
    keys.push(pair);
  }
  return keys;
}

export class TetherDriver {
  /**
   * @param exports the module's exports (from `instantiate`)
   * @param url the server's ws:// URL
   * @param onEvent called with { name, key } for every event of the machine
   * @param onError called with (what, code, message) when the machine refuses an input
   */
  constructor(exports, { url, onEvent = () => {}, onError = () => {} }) {
    this.wasm = exports;
    this.url = url;
    this.onEvent = onEvent;
    this.onError = onError;
    this.nextLink = 1;
    this.sockets = new Map(); // link id -> WebSocket
    this.timer = null;
    this.scheduled = false;
  }

  now() {
    return performance.now() * 1000;
  }

  /** The module's bytes at [ptr, ptr + len), copied (memory may grow and move). */
  bytes(ptr, len) {
    return new Uint8Array(this.wasm.memory.buffer, ptr, len).slice();
  }

  /** Copies `bytes` into the input buffer; false if too long. */
  put(bytes) {
    const ptr = this.wasm.input_buffer(bytes.length);
    if (ptr === 0) return false;
    new Uint8Array(this.wasm.memory.buffer, ptr, bytes.length).set(bytes);
    return true;
  }

  /** Checks a result code: a negative one is an error, reported with the module's text. */
  check(what, code) {
    if (code < 0) {
      const text = new TextDecoder().decode(this.bytes(this.wasm.error_ptr(), this.wasm.error_len()));
      this.onError(what, code, text);
    }
    return code;
  }

  /** Creates the client with fresh randomness and lets it ask for its first WebSocket. */
  start() {
    const seed = new Uint8Array(16 + 16); // token, then jitter seed and journal epoch
    crypto.getRandomValues(seed);
    this.put(seed);
    if (this.check('create', this.wasm.create(this.now(), 16)) < 0) return false;
    this.pump();
    return true;
  }

  /** Appends a journal entry (strings); returns the module's code. */
  append(author, resource, payload) {
    const enc = new TextEncoder();
    const [a, r, p] = [enc.encode(author), enc.encode(resource), enc.encode(payload)];
    const all = new Uint8Array(a.length + r.length + p.length);
    all.set(a, 0);
    all.set(r, a.length);
    all.set(p, a.length + r.length);
    if (!this.put(all)) {
      this.onError('append', -2, 'entry over the input buffer');
      return -2;
    }
    const code = this.check('append', this.wasm.append(this.now(), a.length, r.length, p.length));
    this.pump();
    return code;
  }

  /** The journal's [author, resource] keys, in journal order. */
  journal() {
    const n = this.check('journal_dump', this.wasm.journal_dump());
    if (n < 0) return [];
    return decodeKeys(this.bytes(this.wasm.output_ptr(), n));
  }

  journalLength() {
    return this.wasm.journal_len();
  }

  /** Drains the machine's outputs until it waits, then arms the timer. */
  pump() {
    for (let i = 0; i < POLL_BUDGET; i++) {
      const kind = this.wasm.poll();
      switch (kind) {
        case KIND_TRANSMIT: {
          const ws = this.sockets.get(this.wasm.out_link());
          const payload = this.bytes(this.wasm.output_ptr(), this.wasm.output_len());
          // A link already gone: drop the bytes, the machine learns of the close anyway.
          if (ws && ws.readyState === WebSocket.OPEN) ws.send(payload);
          break;
        }
        case KIND_OPEN:
          this.open();
          break;
        case KIND_CLOSE: {
          const link = this.wasm.out_link();
          const ws = this.sockets.get(link);
          if (ws) {
            this.sockets.delete(link);
            ws.close();
          }
          this.check('closed', this.wasm.closed(this.now(), link));
          break;
        }
        case KIND_EVENT: {
          const name = EVENTS[this.wasm.out_event()] || 'other';
          const event = { name };
          if (name === 'applied') {
            [event.key] = decodeKeys(this.bytes(this.wasm.output_ptr(), this.wasm.output_len()));
          }
          this.onEvent(event);
          break;
        }
        case KIND_WAIT:
          this.arm(this.wasm.out_deadline_us());
          return;
        default:
          this.check('poll', kind);
          return;
      }
    }
    // Over budget: yield to the event loop and go on.
    if (!this.scheduled) {
      this.scheduled = true;
      setTimeout(() => {
        this.scheduled = false;
        this.pump();
      }, 0);
    }
  }

  arm(deadlineUs) {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (deadlineUs < 0) return;
    // +1 ms: a timer that fires a hair early (clock coarsening) would only come back.
    const delay = Math.max(0, deadlineUs / 1000 - performance.now()) + 1;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.check('timeout', this.wasm.timeout(this.now()));
      this.pump();
    }, delay);
  }

  /** Opens a WebSocket as a fresh link: bytes of an old socket are never taken for it. */
  open() {
    const link = this.nextLink++;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      // A bad URL: the transport opened and failed at once; the machine retries later.
      this.check('opened', this.wasm.opened(this.now(), link));
      this.check('closed', this.wasm.closed(this.now(), link));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.sockets.set(link, ws);
    let isOpen = false;
    ws.onopen = () => {
      if (this.sockets.get(link) !== ws) return;
      isOpen = true;
      this.check('opened', this.wasm.opened(this.now(), link));
      this.pump();
    };
    ws.onmessage = (ev) => {
      if (this.sockets.get(link) !== ws) return;
      if (!(ev.data instanceof ArrayBuffer)) {
        // tether's frames travel as binary messages only: text is a broken peer.
        this.onError('received', -2, 'a text message on a binary link');
        this.lost(link, ws, isOpen);
        return;
      }
      const data = new Uint8Array(ev.data);
      for (let at = 0; at < data.length; at += INPUT_MAX) {
        const chunk = data.subarray(at, Math.min(at + INPUT_MAX, data.length));
        this.put(chunk);
        this.check('received', this.wasm.received(this.now(), link, chunk.length));
      }
      this.pump();
    };
    ws.onclose = () => this.lost(link, ws, isOpen);
    ws.onerror = () => this.lost(link, ws, isOpen);
  }

  /** The link's socket closed or failed: tell the machine once. */
  lost(link, ws, isOpen) {
    if (this.sockets.get(link) !== ws) return;
    this.sockets.delete(link);
    try {
      ws.close();
    } catch (e) {
      // already closed
    }
    if (!isOpen) this.check('opened', this.wasm.opened(this.now(), link));
    this.check('closed', this.wasm.closed(this.now(), link));
    this.pump();
  }
}
