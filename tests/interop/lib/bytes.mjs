// Byte helpers and the digests of docs/protocol.md section 1.
import { sha256 } from "@noble/hashes/sha2.js";

export const utf8 = (text) => new TextEncoder().encode(text);
export const fromHex = (hex) => Uint8Array.from(Buffer.from(hex, "hex"));
export const toHex = (bytes) => Buffer.from(bytes).toString("hex");
export const fromBase64 = (text) => Uint8Array.from(Buffer.from(text, "base64"));
export const toBase64 = (bytes) => Buffer.from(bytes).toString("base64");

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

export function equal(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export const SHA256 = (data) => sha256(data);

/** Compare two byte strings by unsigned lexicographic order (the "sorted by UTF-8 bytes" of the spec). */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** A refusal: what a verifier raises (docs/protocol.md: every failed check refuses the object). */
export class VerificationError extends Error {
  constructor(message, step) {
    super(message);
    this.name = "VerificationError";
    this.step = step;
  }
}
