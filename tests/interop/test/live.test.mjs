// Against a live broker over mutual TLS, with the Python SDK on the other side (driven by
// tests/e2e/test_interop_node.py, which sets the environment below):
//   ISB_INTEROP_TARGET host:port, ISB_INTEROP_CERTS the PKI folder, ISB_INTEROP_TRUST_DOMAIN,
//   ISB_INTEROP_WORK a folder with node-key.json (from bin/publish-key.mjs) and python-sent.json.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fromHex, toHex, utf8 } from "../lib/bytes.mjs";
import * as audit from "../lib/audit.mjs";
import { collect, connect, uuid7 } from "../lib/client.mjs";
import { envelopeSha256, openEnvelope, seal } from "../lib/envelope.mjs";
import { fingerprint, parseCertificate, privateKeyFromPem, verifyAgencyCertificate } from "../lib/identity.mjs";
import { dateOf, decode, enums, timestampOf } from "../lib/proto.mjs";
import { makeReceipt, verifyKeyBundle } from "../lib/signed.mjs";
import * as witness from "../lib/witness.mjs";

const { ISB_INTEROP_TARGET: target, ISB_INTEROP_CERTS: certs, ISB_INTEROP_WORK: work } = process.env;
const trustDomain = process.env.ISB_INTEROP_TRUST_DOMAIN ?? "isb.dev";
const skip = target ? false : "ISB_INTEROP_TARGET is not set (run through tests/e2e/test_interop_node.py)";
const read = (file) => fs.readFileSync(path.join(certs, file), "utf8");
const leafPem = (pem) => pem.slice(0, pem.indexOf("-----END CERTIFICATE-----") + 25);

test("opens an alert the Python SDK sent, and acknowledges it with a signed receipt", { skip }, async () => {
  const expected = JSON.parse(fs.readFileSync(path.join(work, "python-sent.json"), "utf8"));
  const stored = JSON.parse(fs.readFileSync(path.join(work, "node-key.json"), "utf8"));
  const keys = { [stored.key_id]: { suite: stored.suite, privateKey: fromHex(stored.private_key) } };
  const ca = parseCertificate(read("ca.crt"));
  const me = connect(target, certs, "NL-FIOD");
  const call = me.stub.Subscribe({ max_in_flight: 16 });
  const delivery = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no delivery within 20 s")), 20_000);
    call.on("data", (batch) => {
      for (const d of batch.deliveries ?? []) {
        clearTimeout(timer);
        resolve(d);
      }
    });
    call.on("error", (error) => {
      if (error.code !== 1) reject(error); // 1: CANCELLED, our own cancel below
    });
  });
  call.cancel();
  // The sender certificate first, for the sender and time the (not yet verified) header claims.
  const senderCert = parseCertificate(delivery.sender_certificate);
  const claimed = decode("Header", delivery.envelope.header);
  verifyAgencyCertificate(senderCert, { ca, agency: claimed.sender, trustDomain, when: dateOf(claimed.created) });
  const opened = await openEnvelope(delivery.envelope, { recipient: "NL-FIOD", keys, senderCert });
  assert.equal(opened.header.message_id, expected.message_id);
  assert.equal(opened.header.sender, "FR-CUSTOMS");
  assert.equal(toHex(opened.body), expected.body_hex);
  assert.equal(opened.contentType, expected.content_type);
  const receipt = makeReceipt({
    messageId: opened.header.message_id, envelopeSha256: envelopeSha256(delivery.envelope), recipient: "NL-FIOD",
    status: enums.ReceiptStatus.READ, identityKey: privateKeyFromPem(read("NL-FIOD.key")),
  });
  const reply = await me.call("Ack", { receipts: [receipt] });
  assert.equal(reply.acknowledged, 1);
  me.close();
});

test("seals an alert to a group and an agency, wrapping for the expansion it computed", { skip }, async () => {
  // As NL-FIOD to ["EU-CUSTOMS", "DE-BKA"]: the group expands (directory membership, minus the
  // sender) to FR-CUSTOMS, so keys are wrapped for FR-CUSTOMS (X25519) and DE-BKA (X-Wing), and the
  // header order differs from the sorted order the inner signature binds.
  const ca = parseCertificate(read("ca.crt"));
  const me = connect(target, certs, "NL-FIOD");
  const addressed = ["EU-CUSTOMS", "DE-BKA"];
  // Groups come with every directory answer; then the bundles of the expanded agencies.
  const own = await me.call("GetDirectory", { agencies: ["NL-FIOD"] });
  const groups = Object.fromEntries((own.groups ?? []).map((g) => [g.name, g.members ?? []]));
  const agencies = new Set(addressed.flatMap((r) => (r in groups ? groups[r] : [r])).filter((a) => a !== "NL-FIOD"));
  assert.deepEqual([...agencies].sort(), ["DE-BKA", "FR-CUSTOMS"]);
  const directory = await me.call("GetDirectory", { agencies: [...agencies] });
  const bundles = {};
  for (const agency of agencies) {
    const entry = directory.agencies.find((a) => a.agency === agency);
    const verified = entry.key_bundles.map((b) => verifyKeyBundle(b, { ca, agency, trustDomain, when: new Date() }));
    verified.sort((a, b) => dateOf(b.not_before) - dateOf(a.not_before));
    bundles[agency] = verified[0];
  }
  assert.deepEqual(Object.fromEntries(Object.entries(bundles).map(([a, b]) => [a, b.suite])),
    { "DE-BKA": enums.KeySuite.MLKEM768_X25519_HKDF_SHA256_AES_256_GCM,
      "FR-CUSTOMS": enums.KeySuite.X25519_HKDF_SHA256_AES_256_GCM });
  const ownCert = parseCertificate(leafPem(read("NL-FIOD.crt")));
  const body = utf8(JSON.stringify({ category: "CASH_COURIER", flight: "AF1234", from: "node" }));
  const messageId = uuid7();
  const envelope = await seal({
    header: { message_id: messageId, sender: "NL-FIOD", sender_cert_sha256: fingerprint(ownCert),
      recipients: addressed, kind: enums.Kind.ALERT,
      handling: { tlp: enums.Tlp.TLP_AMBER, classification: "NL-DEP-V", source_reliability: 2,
        information_accuracy: 3 },
      priority: enums.Priority.HIGH, created: timestampOf(new Date()),
      expires: timestampOf(new Date(Date.now() + 86_400_000)),
      legal_basis: "NAPLES-II", case_reference: "NL-2026-17", operator: "node-op-1" },
    contentType: "application/json", body, bundles,
    identityKey: privateKeyFromPem(read("NL-FIOD.key")),
  });
  const reply = await me.call("Send", { envelope });
  assert.equal(reply.message_id, messageId);
  assert.deepEqual([...(reply.queued_for ?? [])].sort(), ["DE-BKA", "FR-CUSTOMS"]);
  // Sending the same bytes again is idempotent (section 14).
  const again = await me.call("Send", { envelope });
  assert.equal(again.duplicate, true);
  assert.equal(again.audit_index, reply.audit_index);
  fs.writeFileSync(path.join(work, "node-sent.json"), JSON.stringify({ message_id: messageId, body_hex: toHex(body),
    audit_index: Number(reply.audit_index), envelope_sha256_hex: toHex(envelopeSha256(envelope)) }));
  me.close();
});

test("verifies a fresh checkpoint, the inclusion of its own message, and an export", { skip }, async () => {
  const sent = JSON.parse(fs.readFileSync(path.join(work, "node-sent.json"), "utf8"));
  const origin = `${trustDomain}/audit`;
  const trusted = { name: origin, publicKey: audit.ed25519FromPem(read("audit.pub")), origin };
  const auditor = connect(target, certs, "auditor");
  const reply = await auditor.call("GetCheckpoint", { fresh: true });
  const checkpoint = audit.verifyCheckpoint(reply.note, trusted);
  assert.ok(checkpoint.size > sent.audit_index);

  const justification = { legal_basis: "LED-ART8", case_reference: "AUDIT-1", operator: "node-auditor" };
  const proof = await auditor.call("GetInclusionProof", { index: sent.audit_index, tree_size: checkpoint.size,
    ...justification });
  const entry = audit.parseEntry(proof.entry.entry);
  assert.equal(entry.index, sent.audit_index);
  assert.equal(entry.event, "envelope.accepted");
  assert.equal(entry.message_id, sent.message_id);
  // The disclosure's justification (section 22, Justification), with the operator marked as asserted by the sender.
  assert.deepEqual([entry.fields.legal_basis, entry.fields.case_reference, entry.fields.operator,
    entry.fields.operator_asserted_by], ["NAPLES-II", "NL-2026-17", "node-op-1", "NL-FIOD"]);
  audit.verifyInclusion(audit.leafHash(proof.entry.entry), sent.audit_index, checkpoint.size, proof.hashes ?? [],
    checkpoint.root);

  await auditor.call("GetCheckpoint", { fresh: true }); // so that the export covers the proof's own query entry
  const items = await collect(auditor.stub.Export({ ...justification }));
  const lines = [JSON.stringify({ type: "header", format: "isb-audit-export/1", origin, key_name: origin,
    vkey: audit.encodeVkey(origin, trusted.publicKey) })];
  for (const item of items) {
    if (item.entry) {
      lines.push(JSON.stringify({ type: "entry", index: Number(item.entry.index ?? 0),
        entry: item.entry.entry.toString("base64"), leaf_hash: toHex(item.entry.leaf_hash) }));
    } else {
      lines.push(JSON.stringify({ type: "checkpoint", note: item.checkpoint.note.toString("base64") }));
    }
  }
  const text = `${lines.join("\n")}\n`;
  const report = audit.verifyExport(text, trusted);
  assert.ok(report.treeSize >= checkpoint.size);
  assert.ok(report.entries > sent.audit_index);
  // The consultation (the inclusion proof) is itself an entry carrying the auditor's justification.
  const consulted = items.filter((item) => item.entry).map((item) => audit.parseEntry(item.entry.entry))
    .filter((e) => e.event === "audit.query" && e.fields?.rpc === "GetInclusionProof");
  assert.ok(consulted.some((e) => e.fields.legal_basis === "LED-ART8" && e.fields.operator === "node-auditor"
    && e.fields.operator_asserted_by === `spiffe://${trustDomain}/auditor/audit-1`));
  fs.writeFileSync(path.join(work, "node-export.jsonl"), text);
  auditor.close();
});

test("checks the directory's key bundle proofs against the broker's checkpoint", { skip }, async () => {
  // The test broker has no witness policy, so it proves to its latest checkpoint: the policy here
  // trusts its log with `quorum none` (docs/protocol.md section 18.4).
  const origin = `${trustDomain}/audit`;
  const policy = witness.parsePolicy(`log ${audit.encodeVkey(origin, audit.ed25519FromPem(read("audit.pub")))}\nquorum none\n`);
  const me = connect(target, certs, "NL-FIOD");
  const auditor = connect(target, certs, "auditor");
  await auditor.call("GetCheckpoint", { fresh: true }); // covers every bundle published so far
  auditor.close();
  const directory = await me.call("GetDirectory", { agencies: ["DE-BKA", "FR-CUSTOMS"] });
  let proven = 0;
  for (const entry of directory.agencies) {
    entry.key_bundles.forEach((signedBundle, i) => {
      const proof = entry.key_bundle_proofs[i];
      if (!proof.entry?.length) return; // published after the checkpoint: not witnessed yet
      const keyId = decode("KeyBundle", signedBundle.bundle).key_id;
      witness.verifyDirectoryProof({ policy, origin, note: directory.checkpoint, consistency: [], held: null,
        signedBundle, agency: entry.agency, keyId, auditIndex: Number(entry.key_bundle_audit_index[i]),
        entry: proof.entry, inclusionPath: proof.inclusion_path ?? [] });
      proven += 1;
    });
  }
  assert.ok(proven >= 2, `${proven} bundles proven`);
  me.close();
});
