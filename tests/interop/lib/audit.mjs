// The audit log: entries (docs/protocol.md 11.1), the RFC 9162 tree and proofs (11.2, 11.3),
// checkpoints in C2SP signed notes (12) and export files (13).
import { ed25519 } from "@noble/curves/ed25519.js";
import { concat, equal, fromBase64, fromHex, SHA256, toBase64, toHex, utf8, VerificationError } from "./bytes.mjs";

// --- entries -------------------------------------------------------------------------------------
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

function canonical(value) {
  if (typeof value === "string") return JSON.stringify(value);
  if (Number.isSafeInteger(value)) return String(value);
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  throw new VerificationError(`no canonical form for ${JSON.stringify(value)}`);
}

/** Parse an entry, check it is the canonical JSON of a version-1 entry; return the object. */
export function parseEntry(bytes) {
  let doc;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new VerificationError("audit entry is not UTF-8 JSON");
  }
  const isString = (v) => typeof v === "string";
  if (!doc || typeof doc !== "object" || Array.isArray(doc) || doc.v !== 1) {
    throw new VerificationError("audit entry is not a version 1 entry");
  }
  const allowed = new Set(["v", "index", "event", "actor", "time", "message_id", "agency", "fields"]);
  for (const key of Object.keys(doc)) if (!allowed.has(key)) throw new VerificationError(`unknown member ${key}`);
  if (!Number.isSafeInteger(doc.index) || doc.index < 0) throw new VerificationError("bad index");
  if (!isString(doc.event) || !doc.event || !isString(doc.actor) || !doc.actor) {
    throw new VerificationError("entry needs an event and an actor");
  }
  if (!isString(doc.time) || !TIME.test(doc.time)) throw new VerificationError("bad time");
  for (const key of ["message_id", "agency"]) {
    if (key in doc && !isString(doc[key])) throw new VerificationError(`bad ${key}`);
  }
  if ("fields" in doc) {
    const f = doc.fields;
    if (!f || typeof f !== "object" || Array.isArray(f) || Object.keys(f).length === 0) {
      throw new VerificationError("fields must be a non-empty object");
    }
    for (const v of Object.values(f)) {
      const ok = isString(v) || Number.isSafeInteger(v) || (Array.isArray(v) && v.every(isString));
      if (!ok) throw new VerificationError("a field is not a string, an integer or a list of strings");
    }
  }
  if (!equal(utf8(canonical(doc)), bytes)) throw new VerificationError("audit entry is not in canonical form");
  return doc;
}

// --- tree ----------------------------------------------------------------------------------------
export const EMPTY_ROOT = SHA256(new Uint8Array(0));
export const leafHash = (entry) => SHA256(concat(Uint8Array.of(0), entry));
export const nodeHash = (l, r) => SHA256(concat(Uint8Array.of(1), l, r));
const split = (n) => 2 ** Math.floor(Math.log2(n - 1));

/** MTH(D[n]) over leaf hashes (RFC 9162 2.1.1). */
export function root(leaves) {
  if (leaves.length === 0) return EMPTY_ROOT;
  if (leaves.length === 1) return leaves[0];
  const k = split(leaves.length);
  return nodeHash(root(leaves.slice(0, k)), root(leaves.slice(k)));
}

/** PROOF(m, D[n]) (RFC 9162 2.1.4.1), over leaf hashes. */
export function consistencyProof(m, leaves) {
  if (m === 0 || m === leaves.length) return [];
  const sub = (m, d, b) => {
    if (m === d.length) return b ? [] : [root(d)];
    const k = split(d.length);
    return m <= k ? [...sub(m, d.slice(0, k), b), root(d.slice(k))] : [...sub(m - k, d.slice(k), false), root(d.slice(0, k))];
  };
  return sub(m, leaves, true);
}

const check32 = (hashes) => {
  if (hashes.some((h) => h.length !== 32)) throw new VerificationError("a hash is not 32 bytes");
};

/** RFC 9162 2.1.3.2 steps 1-5: the root an inclusion proof leads to (the caller compares it). */
export function rootFromInclusion(leaf, index, size, proof) {
  check32([leaf, ...proof]);
  if (!(index >= 0 && index < size)) throw new VerificationError("leaf index is not in the tree");
  let fn = BigInt(index);
  let sn = BigInt(size - 1);
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) throw new VerificationError("inclusion proof is too long");
    if (fn & 1n || fn === sn) {
      r = nodeHash(p, r);
      if (!(fn & 1n)) while (fn !== 0n && !(fn & 1n)) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new VerificationError("inclusion proof is too short");
  return r;
}

/** RFC 9162 2.1.3.2. */
export function verifyInclusion(leaf, index, size, proof, expectedRoot) {
  check32([expectedRoot]);
  const r = rootFromInclusion(leaf, index, size, proof);
  if (!equal(r, expectedRoot)) throw new VerificationError("inclusion proof leads to another root");
}

/** RFC 9162 2.1.4.2, with the degenerate cases of docs/protocol.md 11.3. */
export function verifyConsistency(size1, size2, root1, root2, proof) {
  check32([root1, root2, ...proof]);
  if (size1 > size2) throw new VerificationError("the first tree is larger than the second");
  if (size1 === size2 || size1 === 0) {
    if (proof.length) throw new VerificationError("expected an empty proof");
    if (size1 === size2 && !equal(root1, root2)) throw new VerificationError("equal sizes, different roots");
    if (size1 === 0 && !equal(root1, EMPTY_ROOT)) throw new VerificationError("the empty tree has another root");
    return;
  }
  if (proof.length === 0) throw new VerificationError("the proof is empty");
  const path = (size1 & (size1 - 1)) === 0 ? [root1, ...proof] : [...proof];
  let fn = BigInt(size1 - 1);
  let sn = BigInt(size2 - 1);
  while (fn & 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) throw new VerificationError("consistency proof is too long");
    if (fn & 1n || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (!(fn & 1n)) while (fn !== 0n && !(fn & 1n)) { fn >>= 1n; sn >>= 1n; }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new VerificationError("consistency proof is too short");
  if (!equal(fr, root1) || !equal(sr, root2)) throw new VerificationError("consistency proof leads to other roots");
}

// --- signed notes and checkpoints -----------------------------------------------------------------
export const keyId = (name, publicKey) => SHA256(concat(utf8(name), Uint8Array.of(0x0a, 0x01), publicKey)).subarray(0, 4);

/** Parse `<name>+<hex id>+<base64(0x01 || key)>`, checking the key id. */
export function parseVkey(vkey) {
  const [name, hexId, ...rest] = vkey.trim().split("+");
  const material = fromBase64(rest.join("+"));
  if (!name || rest.length === 0 || material.length !== 33 || material[0] !== 1) {
    throw new VerificationError("not an Ed25519 vkey");
  }
  const publicKey = material.subarray(1);
  if (toHex(keyId(name, publicKey)) !== hexId) throw new VerificationError("vkey id does not match its key");
  return { name, publicKey };
}

export const encodeVkey = (name, publicKey) => `${name}+${toHex(keyId(name, publicKey))}+${toBase64(concat(Uint8Array.of(1), publicKey))}`;

/** The raw Ed25519 key of a PEM SubjectPublicKeyInfo (audit.pub). */
export function ed25519FromPem(pem) {
  const der = fromBase64(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
  const prefix = fromHex("302a300506032b6570032100");
  if (der.length !== 44 || !equal(der.subarray(0, 12), prefix)) throw new VerificationError("not an Ed25519 PEM key");
  return der.subarray(12);
}

/** Verify a signed note by (name, publicKey); return its text (C2SP signed-note). */
export function openNote(note, name, publicKey) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(note);
  } catch {
    throw new VerificationError("note is not UTF-8");
  }
  if (/[\u0000-\u0009\u000b-\u001f]/.test(text)) throw new VerificationError("note holds a control character");
  const split = text.lastIndexOf("\n\n");
  if (split < 0 || !text.endsWith("\n")) throw new VerificationError("note has no blank line before its signatures");
  const body = text.slice(0, split + 1);
  const lines = text.slice(split + 2, -1).split("\n");
  const wanted = keyId(name, publicKey);
  let found = false;
  for (const line of lines) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new VerificationError(`malformed signature line ${line}`);
    const blob = fromBase64(m[2]);
    if (toBase64(blob) !== m[2] || blob.length < 5) throw new VerificationError("signature is not base64");
    if (m[1] !== name || !equal(blob.subarray(0, 4), wanted)) continue; // another signer: ignored
    if (blob.length !== 68 || !ed25519.verify(blob.subarray(4), utf8(body), publicKey)) {
      throw new VerificationError("note signature does not verify");
    }
    found = true;
  }
  if (!found) throw new VerificationError("note carries no signature by the trusted key");
  return body;
}

/** Verify a checkpoint note of log `origin`; returns {origin, size, root, extensions}. */
export function verifyCheckpoint(note, { name, publicKey, origin }) {
  const text = openNote(note, name, publicKey);
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3 || lines.some((l) => !l)) throw new VerificationError("checkpoint needs three non-empty lines");
  const [o, sizeText, rootText] = lines;
  if (o !== origin) throw new VerificationError(`checkpoint is for ${o}, not ${origin}`);
  if (!/^(0|[1-9][0-9]*)$/.test(sizeText)) throw new VerificationError("tree size is not canonical decimal");
  const rootHash = fromBase64(rootText);
  if (rootHash.length !== 32 || toBase64(rootHash) !== rootText) throw new VerificationError("root is not canonical base64");
  const timestamp = lines.slice(3).find((l) => /^timestamp (0|[1-9][0-9]*)$/.test(l));
  return { origin: o, size: Number(sizeText), root: rootHash, extensions: lines.slice(3),
    timestamp: timestamp ? Number(timestamp.split(" ")[1]) : null };
}

// --- export files -------------------------------------------------------------------------------

/** Verify an export (text of JSON Lines) with the trusted audit key; returns a report. */
export function verifyExport(text, { name, publicKey }) {
  if (!text.endsWith("\n")) throw new VerificationError("export does not end with a newline");
  const lines = text.slice(0, -1).split("\n").map((line, i) => {
    if (!line.trim()) throw new VerificationError(`line ${i + 1} is empty`);
    try {
      return JSON.parse(line);
    } catch {
      throw new VerificationError(`line ${i + 1} is not JSON`);
    }
  });
  const header = lines[0];
  if (!header || header.type !== "header" || header.format !== "isb-audit-export/1") {
    throw new VerificationError("export does not start with an isb-audit-export/1 header");
  }
  const leaves = [];
  let last = { size: 0, root: EMPTY_ROOT };
  let checkpoints = 0;
  for (const [i, record] of lines.slice(1).entries()) {
    if (record.type === "entry") {
      const entry = fromBase64(record.entry);
      if (record.index !== leaves.length) throw new VerificationError(`line ${i + 2}: entry ${leaves.length} expected`);
      if (parseEntry(entry).index !== leaves.length) throw new VerificationError(`entry ${leaves.length} names another index`);
      const leaf = leafHash(entry);
      if (toHex(leaf) !== record.leaf_hash) throw new VerificationError(`entry ${leaves.length} does not match its leaf hash`);
      leaves.push(leaf);
    } else if (record.type === "checkpoint") {
      const cp = verifyCheckpoint(fromBase64(record.note), { name, publicKey, origin: header.origin });
      if (cp.size > leaves.length) throw new VerificationError(`checkpoint of size ${cp.size} follows ${leaves.length} entries`);
      if (cp.size < last.size) throw new VerificationError("checkpoints go backwards");
      verifyConsistency(last.size, cp.size, last.root, cp.root, consistencyProof(last.size, leaves.slice(0, cp.size)));
      if (!equal(root(leaves.slice(0, cp.size)), cp.root)) throw new VerificationError(`entries do not match checkpoint ${cp.size}`);
      last = { size: cp.size, root: cp.root };
      checkpoints += 1;
    } else {
      throw new VerificationError(`line ${i + 2} has type ${record.type}`);
    }
  }
  if (checkpoints === 0) throw new VerificationError("export has no checkpoint");
  return { origin: header.origin, entries: leaves.length, checkpoints, treeSize: last.size, root: last.root,
    unsignedEntries: leaves.length - last.size };
}
