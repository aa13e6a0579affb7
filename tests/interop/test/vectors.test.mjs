// Every vector of tests/vectors/ (see its README), checked by this independent implementation.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { fromHex, SHA256, toHex, utf8, VerificationError } from "../lib/bytes.mjs";
import * as audit from "../lib/audit.mjs";
import * as batch from "../lib/batch.mjs";
import * as env from "../lib/envelope.mjs";
import { unwrap } from "../lib/hpke.mjs";
import { parseCertificate, privateKeyFromPem, verifyAgencyCertificate } from "../lib/identity.mjs";
import * as P from "../lib/pae.mjs";
import { decode, enums } from "../lib/proto.mjs";
import { verifyForwardConsent, verifyKeyBundle, verifyReceipt } from "../lib/signed.mjs";
import * as witness from "../lib/witness.mjs";

const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../vectors");
const load = (name) => JSON.parse(fs.readFileSync(path.join(DIR, `${name}.json`), "utf8"));
const cert = (pem) => parseCertificate(pem);
const SUITE = (name) => enums.KeySuite[name];
const refused = async (fn) => assert.rejects(async () => fn(), VerificationError);

test("PAE encodings", () => {
  const v = load("pae");
  for (const c of v.pae) assert.equal(toHex(P.pae(c.inputs.type, ...c.inputs.fields_hex.map(fromHex))), c.output_hex);
  for (const c of v.list) assert.equal(toHex(P.list(c.inputs.items.map(utf8))), c.output_hex);
  for (const c of v.recipients) assert.equal(toHex(P.recipients(c.inputs.recipients, { sort: c.inputs.sort })), c.output_hex);
  for (const c of v.integer) assert.equal(toHex(P.int(c.inputs.decimal)), c.output_hex);
  for (const c of v.timestamp) {
    const ts = c.inputs.seconds === null ? null : { seconds: c.inputs.seconds, nanos: c.inputs.nanos };
    assert.equal(toHex(P.timestamp(ts)), c.output_hex);
  }
  for (const c of v.handling) assert.equal(toHex(P.handling(c.inputs)), c.output_hex);
});

for (const name of ["envelope-x25519-three-recipients", "envelope-hybrid-and-classical"]) {
  const v = load(name);
  const ca = cert(v.ca_certificate_pem);
  const sender = cert(v.sender.certificate_pem);
  const keysOf = (p) => ({ [p.key_id]: { suite: SUITE(p.suite), privateKey: fromHex(p.hpke_private_key_hex) } });
  const envelopeOf = (hex) => decode("Envelope", fromHex(hex));

  test(`${name}: certificates and key bundles verify`, () => {
    for (const p of [v.sender, ...v.recipients, v.non_recipient]) {
      verifyAgencyCertificate(cert(p.certificate_pem), { ca, agency: p.agency, trustDomain: v.trust_domain,
        when: v.verification_time });
      const bundle = verifyKeyBundle(decode("SignedKeyBundle", fromHex(p.signed_key_bundle_hex)),
        { ca, agency: p.agency, trustDomain: v.trust_domain, when: v.verification_time });
      assert.equal(toHex(bundle.public_key), p.hpke_public_key_hex);
      assert.equal(bundle.key_id, p.key_id);
    }
  });

  test(`${name}: every recipient opens the envelope, the non-recipient cannot`, async () => {
    const envelope = envelopeOf(v.envelope_hex);
    for (const p of v.recipients) {
      const opened = await env.openEnvelope(envelope, { recipient: p.agency, keys: keysOf(p), senderCert: sender });
      assert.equal(toHex(opened.body), v.inputs.body_hex);
      assert.equal(opened.contentType, v.inputs.content_type);
      // Justification (section 22, Justification): in the signed header only, as the sender set it.
      for (const [field, value] of Object.entries(v.inputs.justification ?? {})) {
        assert.equal(opened.header[field], value);
      }
    }
    await refused(() => env.openEnvelope(envelope, { recipient: v.non_recipient.agency, keys: keysOf(v.non_recipient),
      senderCert: sender }));
  });

  test(`${name}: intermediate values recompute byte for byte`, async () => {
    const s = v.intermediate;
    const envelope = envelopeOf(v.envelope_hex);
    const h = env.verifyOuter(envelope, sender);
    assert.equal(toHex(env.headerSigningInput(envelope.header)), s.header_signing_input_hex);
    assert.equal(toHex(env.contentSigningInput(h, v.inputs.content_type, fromHex(v.inputs.body_hex))),
      s.content_signing_input_hex);
    assert.equal(toHex(env.contentAad(h)), s.content_aad_hex);
    assert.equal(toHex(SHA256(envelope.ciphertext)), s.ciphertext_sha256_hex);
    assert.equal(toHex(SHA256(sender.raw)), s.sender_cert_sha256_hex);
    for (const [i, k] of envelope.wrapped_keys.entries()) {
      const info = env.keyWrapInfo(1, h.message_id, k.recipient);
      assert.equal(toHex(info), s.wrapped_keys[i].info_hex);
      assert.equal(toHex(P.pae(P.TYPES.WRAPPED_KEY, k.recipient, k.key_id, k.enc)), s.wrapped_keys[i].pae_hex);
      const p = v.recipients.find((r) => r.agency === k.recipient);
      const contentKey = await unwrap(SUITE(p.suite), fromHex(p.hpke_private_key_hex), info, k.enc);
      assert.equal(toHex(contentKey), v.inputs.content_key_hex);
    }
    assert.equal(toHex(env.wrappedKeysSha256(envelope.wrapped_keys)), s.wrapped_keys_sha256_hex);
    assert.equal(toHex(env.envelopeSha256(envelope)), v.envelope_sha256_hex);
    // Sealing with the vector's content key and nonce reproduces content and ciphertext.
    const sealed = await env.seal({
      header: { message_id: h.message_id, sender: h.sender, sender_cert_sha256: h.sender_cert_sha256,
        recipients: h.recipients, kind: h.kind, handling: h.handling, priority: h.priority, created: h.created,
        expires: h.expires },
      contentType: v.inputs.content_type, body: fromHex(v.inputs.body_hex),
      bundles: Object.fromEntries(v.recipients.map((p) => [p.agency, decode("KeyBundle", fromHex(p.key_bundle_hex))])),
      identityKey: privateKeyFromPem(v.sender.identity_key_pem),
      contentKey: fromHex(v.inputs.content_key_hex), nonce: fromHex(v.inputs.nonce_hex) });
    // The inner signature is deterministic in the vectors (RFC 6979), so the ciphertext matches too.
    assert.equal(toHex(sealed.ciphertext), s.ciphertext_hex);
    for (const p of v.recipients) {
      const opened = await env.openEnvelope(sealed, { recipient: p.agency, keys: keysOf(p), senderCert: sender });
      assert.equal(toHex(opened.body), v.inputs.body_hex);
    }
  });

  test(`${name}: the receipt verifies`, () => {
    const signer = v.recipients.find((p) => p.agency === v.receipt.signer);
    const signed = decode("SignedReceipt", fromHex(v.receipt.signed_receipt_hex));
    assert.equal(toHex(P.pae(P.TYPES.RECEIPT, signed.receipt)), v.receipt.receipt_signing_input_hex);
    const r = verifyReceipt(signed, cert(signer.certificate_pem), signer.agency);
    assert.equal(toHex(r.envelope_sha256), v.envelope_sha256_hex);
  });

  test(`${name}: every must_be_refused envelope is refused at its step`, async () => {
    assert.deepEqual([...new Set(v.must_be_refused.map((c) => c.step))].sort(), [1, 3, 4, 5, 6, 7, 8, 9]);
    for (const c of v.must_be_refused) {
      const envelope = envelopeOf(c.envelope_hex);
      if (c.step <= 5) {
        assert.throws(() => env.verifyOuter(envelope, sender),
          (error) => error instanceof VerificationError && (error.step ?? 1) === (c.step === 2 ? 1 : c.step),
          c.description);
        continue;
      }
      env.verifyOuter(envelope, sender);
      const p = v.recipients.find((r) => r.agency === c.open_as);
      await assert.rejects(env.openEnvelope(envelope, { recipient: p.agency, keys: keysOf(p), senderCert: sender }),
        (error) => error instanceof VerificationError && error.step === c.step, c.description);
    }
  });
}

test("key bundles", async () => {
  const v = load("key-bundle");
  const ca = cert(v.ca_certificate_pem);
  const opts = (agency) => ({ ca, agency, trustDomain: v.trust_domain, when: v.verification_time });
  for (const c of v.valid) {
    const signed = decode("SignedKeyBundle", fromHex(c.signed_key_bundle_hex));
    assert.equal(toHex(P.pae(P.TYPES.KEY_BUNDLE, signed.bundle)), c.signing_input_hex);
    const bundle = verifyKeyBundle(signed, opts(c.agency));
    assert.equal(toHex(bundle.public_key), c.hpke_public_key_hex);
    assert.equal(bundle.suite, SUITE(c.suite));
  }
  for (const c of v.must_be_refused) {
    assert.throws(() => verifyKeyBundle(decode("SignedKeyBundle", fromHex(c.signed_key_bundle_hex)),
      opts(c.expected_agency)), VerificationError, c.description);
  }
});

test("receipts", () => {
  const v = load("receipt");
  const signer = cert(v.signer.certificate_pem);
  for (const c of v.valid) {
    const signed = decode("SignedReceipt", fromHex(c.signed_receipt_hex));
    assert.equal(toHex(P.pae(P.TYPES.RECEIPT, signed.receipt)), c.signing_input_hex);
    const receipt = verifyReceipt(signed, signer, v.signer.agency);
    assert.equal(receipt.status, enums.ReceiptStatus[c.status]);
    assert.equal(receipt.reason ?? "", c.reason);
    // Section 22, Erasure: an ERASED receipt's reason starts with the id of the message it erased.
    if (c.status === "ERASED") assert.match(c.reason, /^[0-9a-f-]{36}: erased /);
  }
  for (const c of v.must_be_refused) {
    assert.throws(() => verifyReceipt(decode("SignedReceipt", fromHex(c.signed_receipt_hex)), signer,
      v.signer.agency), VerificationError, c.description);
  }
});

test("forward consents", () => {
  const v = load("forward-consent");
  const signer = cert(v.signer.certificate_pem);
  for (const c of v.valid) {
    const signed = decode("SignedForwardConsent", fromHex(c.signed_forward_consent_hex));
    assert.equal(toHex(P.pae(P.TYPES.FORWARD_CONSENT, signed.consent)), c.signing_input_hex);
    assert.deepEqual(verifyForwardConsent(signed, signer).recipients, c.recipients);
  }
  for (const c of v.must_be_refused) {
    assert.throws(() => verifyForwardConsent(decode("SignedForwardConsent", fromHex(c.signed_forward_consent_hex)),
      signer), VerificationError, c.description);
  }
});

test("audit entries", () => {
  const v = load("audit-entries");
  for (const c of v.valid) {
    assert.equal(audit.parseEntry(fromHex(c.entry_hex)).index, c.index);
    assert.equal(toHex(audit.leafHash(fromHex(c.entry_hex))), c.leaf_hash_hex);
  }
  for (const c of v.must_be_refused) assert.throws(() => audit.parseEntry(utf8(c.entry_utf8)), VerificationError, c.description);
});

test("void audit entries (section 24.3)", () => {
  const v = load("audit-void");
  for (const c of v.valid) {
    const entry = audit.parseEntry(fromHex(c.entry_hex));
    assert.equal(entry.index, c.index);
    assert.equal(entry.event, "audit.void");
    assert.deepEqual(entry.fields, { reason: c.reason });
    assert.equal(toHex(audit.leafHash(fromHex(c.entry_hex))), c.leaf_hash_hex);
  }
  for (const c of v.must_be_refused) {
    let parsed;
    try {
      parsed = audit.parseEntry(utf8(c.entry_utf8));
    } catch (e) {
      assert.ok(e instanceof VerificationError, c.description);
      continue;
    }
    assert.notEqual(parsed.index, c.position, c.description);
  }
});

test("checkpoints and the audit key", () => {
  const v = load("checkpoint");
  const k = v.audit_key;
  const publicKey = audit.ed25519FromPem(k.audit_pub_pem);
  assert.equal(toHex(publicKey), k.ed25519_public_key_hex);
  assert.equal(toHex(audit.keyId(k.key_name, publicKey)), k.key_id_hex);
  assert.equal(audit.encodeVkey(k.key_name, publicKey), k.vkey);
  assert.equal(toHex(audit.parseVkey(k.vkey).publicKey), k.ed25519_public_key_hex);
  const trusted = { name: k.key_name, publicKey, origin: k.origin };
  for (const c of v.valid) {
    const cp = audit.verifyCheckpoint(utf8(c.note), trusted);
    assert.equal(cp.size, c.tree_size);
    assert.equal(toHex(cp.root), c.root_hash_hex);
    assert.equal(cp.timestamp, c.timestamp);
  }
  for (const c of v.must_be_refused) {
    assert.throws(() => audit.verifyCheckpoint(fromHex(c.note_hex), trusted), VerificationError, c.description);
  }
});

test("audit log: roots, proofs and exports", () => {
  const v = load("audit-log");
  const leaves = v.entries_hex.map((e) => audit.leafHash(fromHex(e)));
  assert.deepEqual(leaves.map(toHex), v.leaf_hashes_hex);
  assert.deepEqual(v.roots_hex.map((_, n) => toHex(audit.root(leaves.slice(0, n)))), v.roots_hex);
  for (const c of v.inclusion) {
    audit.verifyInclusion(fromHex(c.leaf_hash_hex), c.index, c.tree_size, c.proof_hex.map(fromHex), fromHex(c.root_hash_hex));
  }
  for (const c of v.consistency) {
    assert.deepEqual(audit.consistencyProof(c.first, leaves.slice(0, c.second)).map(toHex), c.proof_hex);
    audit.verifyConsistency(c.first, c.second, fromHex(c.first_root_hex), fromHex(c.second_root_hex), c.proof_hex.map(fromHex));
  }
  for (const c of v.inclusion_must_fail) {
    assert.throws(() => audit.verifyInclusion(fromHex(c.leaf_hash_hex), c.index, c.tree_size, c.proof_hex.map(fromHex),
      fromHex(c.root_hash_hex)), VerificationError, c.description);
  }
  for (const c of v.consistency_must_fail) {
    assert.throws(() => audit.verifyConsistency(c.first, c.second, fromHex(c.first_root_hex), fromHex(c.second_root_hex),
      c.proof_hex.map(fromHex)), VerificationError, c.description);
  }
  const key = { name: v.audit_key.key_name, publicKey: audit.ed25519FromPem(v.audit_key.audit_pub_pem) };
  const report = audit.verifyExport(fs.readFileSync(path.join(DIR, v.export.file), "utf8"), key);
  assert.deepEqual([report.entries, report.checkpoints, report.treeSize, toHex(report.root)],
    [v.export.entries, v.export.checkpoints, v.export.tree_size, v.export.root_hash_hex]);
  const tail = audit.verifyExport(`${v.export_with_unsigned_tail.lines.join("\n")}\n`, key);
  assert.equal(tail.unsignedEntries, v.export_with_unsigned_tail.unsigned_entries);
  for (const c of v.exports_must_fail) {
    assert.throws(() => audit.verifyExport(`${c.lines.join("\n")}\n`, key), VerificationError, c.description);
  }
});

test("RFC 6962 reference vectors", () => {
  const v = JSON.parse(fs.readFileSync(path.join(DIR, "merkle_rfc6962.json"), "utf8"));
  const leaves = v.leaves.map((l) => audit.leafHash(fromHex(l)));
  v.roots.forEach((r, n) => assert.equal(toHex(audit.root(leaves.slice(0, n))), r));
  for (const c of v.inclusion) {
    audit.verifyInclusion(leaves[c.index], c.index, c.tree_size, c.proof.map(fromHex), fromHex(v.roots[c.tree_size]));
  }
  for (const c of v.consistency) {
    audit.verifyConsistency(c.first, c.second, fromHex(v.roots[c.first]), fromHex(v.roots[c.second]), c.proof.map(fromHex));
  }
});

test("cosigned checkpoints under a tlog-policy", () => {
  const v = load("cosigned-checkpoint");
  const policy = witness.parsePolicy(v.policy);
  for (const w of v.witnesses) {
    assert.equal(toHex(witness.parseCosignerVkey(w.vkey).keyId), w.key_id_hex);
  }
  for (const c of v.valid) {
    const cp = witness.verifyCheckpointUnderPolicy(utf8(c.note), policy, v.audit_key.origin);
    assert.deepEqual([...cp.cosigned].sort(), c.cosigned_by, c.description);
  }
  for (const c of v.must_be_refused) {
    assert.throws(() => witness.verifyCheckpointUnderPolicy(utf8(c.note), policy, v.audit_key.origin),
      VerificationError, c.description);
  }
});

test("directory bundle inclusion proofs", () => {
  const v = load("directory-proof");
  const policy = witness.parsePolicy(v.policy);
  const check = (c) => {
    const signedBundle = decode("SignedKeyBundle", fromHex(c.signed_key_bundle_hex));
    const keyId = decode("KeyBundle", signedBundle.bundle).key_id; // recomputed from the bundle received
    assert.equal(keyId, v.valid.key_id);
    return witness.verifyDirectoryProof({
      policy, origin: v.origin, note: utf8(c.checkpoint_note), consistency: c.consistency_path_hex.map(fromHex),
      held: { size: c.held_tree_size, root: fromHex(c.held_root_hash_hex) }, signedBundle, agency: c.agency, keyId,
      auditIndex: c.key_bundle_audit_index, entry: utf8(c.entry_utf8), inclusionPath: c.inclusion_path_hex.map(fromHex),
    });
  };
  const signed = decode("SignedKeyBundle", fromHex(v.valid.signed_key_bundle_hex));
  assert.equal(toHex(SHA256(signed.bundle)), v.valid.bundle_sha256_hex);
  assert.equal(toHex(audit.leafHash(utf8(v.valid.entry_utf8))), v.valid.leaf_hash_hex);
  assert.ok(check(v.valid).size > v.valid.key_bundle_audit_index);
  for (const c of v.must_be_refused) {
    assert.throws(() => check({ ...v.valid, ...c.changes }), VerificationError, c.description);
  }
});

test("batch signatures: every member verifies alone, intermediates recompute, tampered members are refused", async () => {
  const v = load("batch-signatures");
  const sender = cert(v.sender.certificate_pem);
  const recipient = cert(v.recipient.certificate_pem);
  const keys = { [v.recipient.key_id]: { suite: SUITE(v.recipient.suite),
    privateKey: fromHex(v.recipient.hpke_private_key_hex) } };
  const checkMember = (purpose, bytes, proof, m) => {
    assert.equal(toHex(SHA256(P.pae(purpose, bytes))), m.leaf_data_hex);
    const leaf = batch.leafHash(purpose, bytes);
    assert.equal(toHex(leaf), m.leaf_hash_hex);
    assert.deepEqual(proof.path.map(toHex), m.path_hex);
    const root = batch.rootFromPath(leaf, Number(proof.leaf_index ?? 0), Number(proof.tree_size), proof.path);
    assert.equal(toHex(root), m.root_hex);
    assert.equal(toHex(batch.rootSigningInput(purpose, Number(proof.tree_size), root)), m.root_signing_input_hex);
  };
  for (const m of v.envelopes.members) {
    const envelope = decode("Envelope", fromHex(m.envelope_hex));
    assert.equal(Number(envelope.batch_signature.tree_size), v.envelopes.tree_size);
    checkMember(v.envelopes.purpose, envelope.header, envelope.batch_signature, m);
    const opened = await env.openEnvelope(envelope, { recipient: v.recipient.agency, keys, senderCert: sender });
    assert.equal(toHex(opened.body), m.body_hex);
    assert.equal(toHex(env.envelopeSha256(envelope)), m.envelope_sha256_hex);
  }
  assert.ok(v.envelopes.must_be_refused.length >= 5);
  for (const c of v.envelopes.must_be_refused) {
    assert.throws(() => env.verifyOuter(decode("Envelope", fromHex(c.envelope_hex)), sender), VerificationError,
      c.description);
  }
  for (const m of v.receipts.members) {
    const signed = decode("SignedReceipt", fromHex(m.signed_receipt_hex));
    checkMember(v.receipts.purpose, signed.receipt, signed.batch_signature, m);
    const r = verifyReceipt(signed, recipient, v.recipient.agency);
    assert.equal(r.status, enums.ReceiptStatus[m.status]);
  }
  for (const c of v.receipts.must_be_refused) {
    assert.throws(() => verifyReceipt(decode("SignedReceipt", fromHex(c.signed_receipt_hex)), recipient),
      VerificationError, c.description);
  }
});
