// Witnesses (docs/protocol.md section 18): tlog-cosignature/v1 lines (18.1), tlog-policy files and
// the quorum (18.2), and directory transparency, a key bundle's publication proven to a cosigned
// checkpoint (18.4).
import { ed25519 } from "@noble/curves/ed25519.js";
import { parseEntry, leafHash, parseVkey, verifyCheckpoint, verifyConsistency, verifyInclusion } from "./audit.mjs";
import { concat, equal, fromBase64, SHA256, toBase64, toHex, utf8, VerificationError } from "./bytes.mjs";

const COSIGNATURE_V1 = 0x04;
const cosignerKeyId = (name, publicKey) =>
  SHA256(concat(utf8(name), Uint8Array.of(0x0a, COSIGNATURE_V1), publicKey)).subarray(0, 4);

/** Parse `<name>+<hex key id>+<base64(0x04 || key)>`, checking the key id. */
export function parseCosignerVkey(vkey) {
  const [name, hexId, ...rest] = vkey.split("+");
  const material = fromBase64(rest.join("+"));
  if (!name || rest.length === 0 || material.length !== 33 || material[0] !== COSIGNATURE_V1) {
    throw new VerificationError("not a cosignature/v1 vkey");
  }
  const publicKey = material.subarray(1);
  if (toHex(cosignerKeyId(name, publicKey)) !== hexId) throw new VerificationError("vkey id does not match its key");
  return { name, publicKey, keyId: cosignerKeyId(name, publicKey) };
}

/** The witnesses of `cosigners` whose line on `note` verifies, as a Map name -> timestamp. */
export function verifyCosignatures(note, cosigners) {
  const text = new TextDecoder("utf-8", { fatal: true }).decode(note);
  const split = text.lastIndexOf("\n\n");
  if (split < 0) throw new VerificationError("note has no signature lines");
  const body = text.slice(0, split + 1);
  const found = new Map();
  for (const line of text.slice(split + 2, -1).split("\n")) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new VerificationError(`malformed signature line ${line}`);
    const blob = fromBase64(m[2]);
    const cosigner = cosigners.find((c) => c.name === m[1] && equal(blob.subarray(0, 4), c.keyId));
    if (!cosigner) continue; // the log's signature, or an unknown witness: ignored
    if (blob.length !== 76 || toBase64(blob) !== m[2]) throw new VerificationError("cosignature is not 76 bytes");
    const timestamp = new DataView(blob.buffer, blob.byteOffset + 4, 8).getBigUint64(0);
    if (timestamp >= 2n ** 63n) throw new VerificationError("cosignature timestamp out of range");
    const message = utf8(`cosignature/v1\ntime ${timestamp}\n${body}`);
    if (!ed25519.verify(blob.subarray(12), message, cosigner.publicKey)) {
      throw new VerificationError(`cosignature of ${cosigner.name} does not verify`);
    }
    found.set(cosigner.name, Number(timestamp));
  }
  return found;
}

/** Parse a tlog-policy: {logs: [{name, publicKey}], witnesses: Map, groups: Map, quorum}. */
export function parsePolicy(text) {
  if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(text)) throw new VerificationError("policy holds a forbidden octet");
  const logs = [];
  const witnesses = new Map();
  const groups = new Map();
  let quorum = null;
  const defined = (name) => witnesses.has(name) || groups.has(name);
  for (const raw of text.split("\n")) {
    const line = raw.replace(/^[ \t]+|[ \t]+$/g, "");
    if (!line || line.startsWith("#")) continue;
    const [keyword, ...args] = line.split(/[ \t]+/);
    if (keyword === "log") {
      logs.push(parseVkey(args[0]));
    } else if (keyword === "witness") {
      if (args.length < 2 || defined(args[0]) || args[0] === "none") throw new VerificationError("bad witness line");
      witnesses.set(args[0], parseCosignerVkey(args[1]));
    } else if (keyword === "group") {
      const [name, k, ...members] = args;
      if (!name || defined(name) || members.length === 0 || !members.every(defined)
          || new Set(members).size !== members.length) {
        throw new VerificationError(`bad group line ${line}`);
      }
      const threshold = k === "all" ? members.length : k === "any" ? 1 : /^[1-9][0-9]*$/.test(k) ? Number(k) : 0;
      if (threshold < 1 || threshold > members.length) throw new VerificationError(`bad threshold ${k}`);
      groups.set(name, { threshold, members });
    } else if (keyword === "quorum") {
      if (quorum !== null || args.length !== 1 || !(args[0] === "none" || defined(args[0]))) {
        throw new VerificationError(`bad quorum line ${line}`);
      }
      quorum = args[0];
    } else {
      throw new VerificationError(`unknown policy keyword ${keyword}`);
    }
  }
  if (quorum === null) throw new VerificationError("policy has no quorum line");
  return { logs, witnesses, groups, quorum };
}

function satisfied(policy, name, cosigned) {
  if (name === "none") return true;
  const group = policy.groups.get(name);
  if (!group) return cosigned.has(name);
  return group.members.filter((m) => satisfied(policy, m, cosigned)).length >= group.threshold;
}

/** Accept a checkpoint note only if a policy log of `origin` signed it and the quorum cosigned it. */
export function verifyCheckpointUnderPolicy(note, policy, origin) {
  const log = policy.logs.find((l) => l.name === origin);
  if (!log) throw new VerificationError(`the policy trusts no log ${origin}`);
  const checkpoint = verifyCheckpoint(note, { name: log.name, publicKey: log.publicKey, origin });
  const byKey = verifyCosignatures(note, [...policy.witnesses.values()]);
  const cosigned = new Set([...policy.witnesses].filter(([, w]) => byKey.has(w.name)).map(([name]) => name));
  if (!satisfied(policy, policy.quorum, cosigned)) {
    throw new VerificationError(`checkpoint lacks the witness quorum (cosigned by ${[...cosigned].join(", ") || "none"})`);
  }
  return { ...checkpoint, cosigned };
}

/**
 * Section 18.4, steps 1-4: the directory's checkpoint under the policy, not smaller than and
 * consistent with the held one, and the bundle's publication entry included in it.
 */
export function verifyDirectoryProof({ policy, origin, note, consistency, held, signedBundle, agency, keyId, auditIndex,
  entry, inclusionPath }) {
  const checkpoint = verifyCheckpointUnderPolicy(note, policy, origin);
  if (held) {
    if (checkpoint.size < held.size) throw new VerificationError("the checkpoint is smaller than the held one: a rollback");
    verifyConsistency(held.size, checkpoint.size, held.root, checkpoint.root, consistency);
  }
  const doc = parseEntry(entry);
  if (doc.index !== auditIndex) throw new VerificationError(`the entry is ${doc.index}, not ${auditIndex}`);
  const digest = toHex(SHA256(signedBundle.bundle));
  if (doc.event !== "keybundle.published" || doc.agency !== agency || doc.fields?.key_id !== keyId
      || doc.fields?.bundle_sha256 !== digest) {
    throw new VerificationError("the entry is not the publication of this key bundle");
  }
  verifyInclusion(leafHash(entry), doc.index, checkpoint.size, inclusionPath, checkpoint.root);
  return checkpoint;
}
