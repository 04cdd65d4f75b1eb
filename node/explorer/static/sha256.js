// SHA-256 of a file in the browser. crypto.subtle where the page is a secure context
// (https, localhost); otherwise (plain http on another host) a small pure-JS SHA-256.
"use strict";

(function () {
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);

  function compress(H, W, bytes, off) {
    for (let i = 0; i < 16; i++) {
      const j = off + i * 4;
      W[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
    }
    for (let i = 16; i < 64; i++) {
      const a = W[i - 15], b = W[i - 2];
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
      W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
    }
    let a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (h + S1 + ch + K[i] + W[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + b) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }

  /** Pure-JS SHA-256 of a Uint8Array; returns 64 lower-case hex characters. */
  function sha256PureHex(bytes) {
    const H = new Int32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]);
    const W = new Int32Array(64);
    const n = bytes.length;
    const full = n - (n % 64);
    for (let off = 0; off < full; off += 64) compress(H, W, bytes, off);
    // Tail: remaining bytes, 0x80, zeros, 64-bit big-endian bit length.
    const tailLen = (n % 64) < 56 ? 64 : 128;
    const tail = new Uint8Array(tailLen);
    tail.set(bytes.subarray(full));
    tail[n - full] = 0x80;
    const bits = n * 8;
    const hi = Math.floor(bits / 0x100000000), lo = bits >>> 0;
    tail[tailLen - 8] = hi >>> 24; tail[tailLen - 7] = hi >>> 16; tail[tailLen - 6] = hi >>> 8; tail[tailLen - 5] = hi;
    tail[tailLen - 4] = lo >>> 24; tail[tailLen - 3] = lo >>> 16; tail[tailLen - 2] = lo >>> 8; tail[tailLen - 1] = lo;
    for (let off = 0; off < tailLen; off += 64) compress(H, W, tail, off);
    let hex = "";
    for (let i = 0; i < 8; i++) hex += (H[i] >>> 0).toString(16).padStart(8, "0");
    return hex;
  }

  function toHex(buf) {
    return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** SHA-256 of a File/Blob/ArrayBuffer: {hex, method} with method "crypto.subtle" or "pure-js". */
  async function sha256File(file, forcePure) {
    const buf = file instanceof ArrayBuffer ? file : await file.arrayBuffer();
    const subtle = window.crypto && window.crypto.subtle;
    if (subtle && !forcePure) {
      return { hex: toHex(await subtle.digest("SHA-256", buf)), method: "crypto.subtle" };
    }
    return { hex: sha256PureHex(new Uint8Array(buf)), method: "pure-js" };
  }

  window.medfedSha256 = { sha256PureHex, sha256File };
})();
