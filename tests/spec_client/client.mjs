// An independent Paintbridge client written only from protocol/SPEC.md: no Paintbridge code, no npm packages.
// Its own msgpack codec, Node's WebSocket (node >= 20 with --experimental-websocket) and node:crypto.
// Usage: node --experimental-websocket client.mjs URL USERNAME PASSWORD
// Prints one JSON object with what it checked; exits non-zero on the first failure.
import { createHash, randomBytes } from "node:crypto";

// ---- msgpack (the subset the spec uses: nil, bool, int, float64, str, bin, array, map) ----------------------
function encode(value) {
  const parts = [];
  const u8 = (...b) => parts.push(Buffer.from(b));
  const be = (n, bytes) => { const b = Buffer.alloc(bytes); b.writeUIntBE(n, 0, bytes); parts.push(b); };
  const walk = (v) => {
    if (v === null || v === undefined) u8(0xc0);
    else if (v === true) u8(0xc3);
    else if (v === false) u8(0xc2);
    else if (typeof v === "number" && Number.isInteger(v)) {
      if (v >= 0 && v < 128) u8(v);
      else if (v < 0 && v >= -32) u8(v & 0xff);
      else if (v >= 0 && v < 2 ** 32) { u8(0xce); be(v, 4); }
      else if (v >= 0) { u8(0xcf); const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(v)); parts.push(b); }
      else { u8(0xd3); const b = Buffer.alloc(8); b.writeBigInt64BE(BigInt(v)); parts.push(b); }
    } else if (typeof v === "number") { u8(0xcb); const b = Buffer.alloc(8); b.writeDoubleBE(v); parts.push(b); }
    else if (typeof v === "string") {
      const s = Buffer.from(v, "utf8");
      if (s.length < 32) u8(0xa0 | s.length); else if (s.length < 256) u8(0xd9, s.length);
      else if (s.length < 65536) { u8(0xda); be(s.length, 2); } else { u8(0xdb); be(s.length, 4); }
      parts.push(s);
    } else if (Buffer.isBuffer(v) || v instanceof Uint8Array) {
      if (v.length < 256) u8(0xc4, v.length); else if (v.length < 65536) { u8(0xc5); be(v.length, 2); }
      else { u8(0xc6); be(v.length, 4); }
      parts.push(Buffer.from(v.buffer, v.byteOffset, v.length));
    } else if (Array.isArray(v)) {
      if (v.length < 16) u8(0x90 | v.length); else { u8(0xdc); be(v.length, 2); }
      v.forEach(walk);
    } else {
      const keys = Object.keys(v);
      if (keys.length < 16) u8(0x80 | keys.length); else { u8(0xde); be(keys.length, 2); }
      for (const k of keys) { walk(k); walk(v[k]); }
    }
  };
  walk(value);
  return Buffer.concat(parts);
}

function decode(buf) {
  let i = 0;
  const take = (n) => { const s = buf.subarray(i, i + n); i += n; return s; };
  const map = (n) => { const o = {}; for (let k = 0; k < n; k++) { const key = read(); o[key] = read(); } return o; };
  const arr = (n) => { const a = []; for (let k = 0; k < n; k++) a.push(read()); return a; };
  const read = () => {
    const t = buf[i++];
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 256;
    if ((t & 0xf0) === 0x80) return map(t & 0x0f);
    if ((t & 0xf0) === 0x90) return arr(t & 0x0f);
    if ((t & 0xe0) === 0xa0) return take(t & 0x1f).toString("utf8");
    switch (t) {
      case 0xc0: return null; case 0xc2: return false; case 0xc3: return true;
      case 0xc4: return Buffer.from(take(take(1).readUInt8(0)));
      case 0xc5: return Buffer.from(take(take(2).readUInt16BE(0)));
      case 0xc6: return Buffer.from(take(take(4).readUInt32BE(0)));
      case 0xca: return take(4).readFloatBE(0); case 0xcb: return take(8).readDoubleBE(0);
      case 0xcc: return take(1).readUInt8(0); case 0xcd: return take(2).readUInt16BE(0);
      case 0xce: return take(4).readUInt32BE(0); case 0xcf: return Number(take(8).readBigUInt64BE(0));
      case 0xd0: return take(1).readInt8(0); case 0xd1: return take(2).readInt16BE(0);
      case 0xd2: return take(4).readInt32BE(0); case 0xd3: return Number(take(8).readBigInt64BE(0));
      case 0xd9: return take(take(1).readUInt8(0)).toString("utf8");
      case 0xda: return take(take(2).readUInt16BE(0)).toString("utf8");
      case 0xdb: return take(take(4).readUInt32BE(0)).toString("utf8");
      case 0xdc: return arr(take(2).readUInt16BE(0)); case 0xdd: return arr(take(4).readUInt32BE(0));
      case 0xde: return map(take(2).readUInt16BE(0)); case 0xdf: return map(take(4).readUInt32BE(0));
      default: throw new Error("unsupported msgpack type 0x" + t.toString(16));
    }
  };
  return read();
}

// ---- a tiny request/reply client ---------------------------------------------------------------------------
const [url, username, password] = process.argv.slice(2);
const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
const waiting = new Map();
const events = [];
const anonymous = [];
let nextId = 1;
ws.onmessage = (m) => {
  const msg = decode(Buffer.from(m.data));
  if ("event" in msg) { events.push(msg); return; }
  if (msg.re === null) { anonymous.push(msg); return; }
  const w = waiting.get(msg.re);
  if (w) { waiting.delete(msg.re); w(msg); }
};
const send = (frame) => ws.send(frame);
const request = (op, args) => new Promise((resolve) => {
  const id = nextId++;
  waiting.set(id, resolve);
  send(encode({ id, op, args }));
});
const call = async (op, args) => {
  const r = await request(op, args);
  if (!r.ok) throw new Error(`${op}: ${r.error.code}: ${r.error.message}`);
  return r.result;
};
const expectError = async (op, args, code) => {
  const r = await request(op, args);
  check(!r.ok && r.error.code === code, `${op} should fail with ${code}, got ${JSON.stringify(r.error ?? r.result)}`);
  return r;
};
function check(cond, what) { if (!cond) { console.log(JSON.stringify({ ok: false, failed: what })); process.exit(1); } }
const nextAnonymous = async () => {
  for (let t = 0; t < 200 && anonymous.length === 0; t++) await new Promise((r) => setTimeout(r, 25));
  return anonymous.shift();
};

await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
const report = {};

// 1. nothing works before signing in; then auth.login
await expectError("ping", {}, "unauthenticated");
const login = await call("auth.login", { username, password, remember_me: true });
check(typeof login.token === "string" && login.expires_at > Date.now() / 1000, "login returns a token");
report.user = login.user.name;
const frameLimit = login.limits.frame_limit;

// 2. a 40 MiB layer in chunks, then fetched back in ranges
const size = 40 * 1024 * 1024;
const layer = randomBytes(size);
const sha = createHash("sha256").update(layer).digest("hex");
check((await call("blob.has", { hashes: [sha] })).missing[0] === sha, "new blob is missing");
const chunk = 4 * 1024 * 1024;
let last;
for (let off = 0; off < size; off += chunk) {
  const end = Math.min(off + chunk, size);
  last = await call("blob.put", { upload: "js-1", offset: off, data: layer.subarray(off, end), final: end === size });
}
check(last.sha256 === sha && last.size === size, "final chunk reply names the blob");
check((await call("blob.has", { hashes: [sha] })).missing.length === 0, "uploaded blob is present");
const back = [];
for (let off = 0; off < size;) {
  const r = await call("blob.get", { sha256: sha, offset: off, length: chunk });
  check(r.size === size && r.data.length > 0, "range read");
  back.push(r.data);
  off += r.data.length;
}
check(createHash("sha256").update(Buffer.concat(back)).digest("hex") === sha, "40 MiB round trip is exact");
report.layer_mib = size / 1048576;

// 3. each bad input gets a typed error and the connection stays usable
send("this is a text frame");
check((await nextAnonymous()).error.code === "bad_request", "text frame");
send(Buffer.from([0xc1]));
check((await nextAnonymous()).error.code === "bad_request", "bytes that are not msgpack");
send(encode([1, 2, 3]));
check((await nextAnonymous()).error.code === "bad_request", "msgpack that is not a map");
await expectError("no.such.op", {}, "bad_request");
await expectError("blob.has", { hashes: "not a list" }, "bad_request");
await expectError("blob.get", { sha256: 42 }, "bad_request");
const big = await request("blob.put", { data: Buffer.alloc(frameLimit + 1024) });
check(!big.ok && big.error.code === "too_large", "oversized frame is too_large");
await expectError("blob.put", { upload: "js-2", offset: 7, data: Buffer.from("x"), final: true }, "bad_request");
await call("blob.put", { upload: "js-3", offset: 0, data: Buffer.from("abc"), final: false });
const wrong = await expectError("blob.put", { upload: "js-3", offset: 99, data: Buffer.from("d"), final: true }, "bad_request");
check(wrong.error.details.expected === 3, "bad offset reports the expected one");
await expectError("blob.get", { sha256: "0".repeat(64) }, "not_found");
await expectError("hello", { protocol: 9, token: "x" }, "unsupported_version");
check(typeof (await call("ping", {})).time === "number", "connection still usable");
report.bad_inputs = "all answered";
report.refreshed = events.some((e) => e.event === "auth.refreshed");
console.log(JSON.stringify({ ok: true, ...report }));
ws.close();
process.exit(0);
