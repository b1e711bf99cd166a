// bootseed.mjs: the boot seed (TOOLGATE_BOOT_SEED) that lets a Go instance boot at the module's top level,
// where workerd allows no random values (see GoInstance.bootAtStartup in goruntime.mjs). It imports nothing,
// so worker/internal/bridge's tests run it under Node against Go's crypto/sha256.

// BOOT_SEED_MIN_BYTES is the least entropy a boot seed must carry (TOOLGATE_BOOT_SEED: hex).
export const BOOT_SEED_MIN_BYTES = 32;

// parseBootSeed returns the bytes of a boot seed given as hex digits (e.g. `openssl rand -hex 32`), or
// throws saying what is wrong with it (never echoing it: it is a secret).
export function parseBootSeed(text) {
  const hex = typeof text === "string" ? text.trim() : "";
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new Error("TOOLGATE_BOOT_SEED is not an even number of hex digits");
  if (hex.length < 2 * BOOT_SEED_MIN_BYTES) {
    throw new Error(`TOOLGATE_BOOT_SEED has ${hex.length / 2} bytes; it needs at least ${BOOT_SEED_MIN_BYTES} (openssl rand -hex 32)`);
  }
  const seed = new Uint8Array(hex.length / 2);
  for (let i = 0; i < seed.length; i++) seed[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return seed;
}

// seedStream returns a function that fills arrays with the stream SHA-256(seed || counter), counter a
// big-endian uint32 from 0: what Go reads as random data while it boots at start-up. workerd's
// SubtleCrypto is asynchronous, and Go asks synchronously, hence sha256 below.
export function seedStream(seed) {
  const input = new Uint8Array(seed.length + 4);
  input.set(seed);
  const view = new DataView(input.buffer);
  let counter = 0;
  let block = new Uint8Array(0);
  let used = 0;
  return (out) => {
    for (let i = 0; i < out.length; i++) {
      if (used === block.length) {
        view.setUint32(seed.length, counter++);
        block = sha256(input);
        used = 0;
      }
      out[i] = block[used++];
    }
  };
}

const SHA256_K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

// sha256 returns the SHA-256 digest of data (FIPS 180-4), synchronously.
export function sha256(data) {
  const padded = new Uint8Array((((data.length + 8) >> 6) + 1) << 6);
  padded.set(data);
  padded[data.length] = 0x80;
  const pv = new DataView(padded.buffer);
  pv.setUint32(padded.length - 8, Math.floor(data.length / 0x20000000));
  pv.setUint32(padded.length - 4, (data.length << 3) >>> 0);
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = pv.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i];
      const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      k = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) ov.setUint32(4 * i, h[i]);
  return out;
}
