// Key bundles (docs/protocol.md section 8), receipts (9), forward consents (10).
import { VerificationError } from "./bytes.mjs";
import { agencyOf, parseCertificate, sign, verify, verifyAgencyCertificate } from "./identity.mjs";
import { checkPublicKey } from "./hpke.mjs";
import { verifySigned } from "./batch.mjs";
import { pae, TYPES } from "./pae.mjs";
import { dateOf, decode, encode, timestampOf } from "./proto.mjs";

/** 8.1: a signed bundle for `key` = {suite, key_id, publicKey}. */
export function makeKeyBundle({ agency, key, identityKey, certificateDer, notBefore, notAfter }) {
  const bundle = encode("KeyBundle", { agency, key_id: key.key_id, suite: key.suite, public_key: key.publicKey,
    not_before: timestampOf(notBefore), not_after: timestampOf(notAfter) });
  return { bundle, signature: sign(identityKey, pae(TYPES.KEY_BUNDLE, bundle)), certificate: certificateDer };
}

/** 8.2: verify a SignedKeyBundle of `agency` at `when`; returns the KeyBundle. */
export function verifyKeyBundle(signed, { ca, agency, trustDomain, when }) {
  let cert;
  try {
    cert = parseCertificate(signed.certificate);
  } catch {
    throw new VerificationError("key bundle certificate does not parse");
  }
  verifyAgencyCertificate(cert, { ca, agency, trustDomain, when });
  verify(cert, pae(TYPES.KEY_BUNDLE, signed.bundle), signed.signature, "key bundle");
  const bundle = decode("KeyBundle", signed.bundle);
  if (bundle.agency !== agency) throw new VerificationError(`key bundle is for ${bundle.agency}, not ${agency}`);
  if (!bundle.key_id) throw new VerificationError("key bundle has no key id");
  checkPublicKey(bundle.suite, bundle.public_key ?? new Uint8Array(0));
  if (!bundle.not_before || !bundle.not_after) throw new VerificationError("key bundle has no validity window");
  const t = new Date(when).getTime();
  if (t < dateOf(bundle.not_before).getTime() || t >= dateOf(bundle.not_after).getTime()) {
    throw new VerificationError("key bundle is not valid now");
  }
  return bundle;
}

/** 9: a signed receipt. */
export function makeReceipt({ messageId, envelopeSha256, recipient, status, reason, identityKey, time }) {
  const receipt = encode("Receipt", { message_id: messageId, envelope_sha256: envelopeSha256, recipient,
    status, reason: reason ?? "", time: timestampOf(time ?? new Date()) });
  return { receipt, signature: sign(identityKey, pae(TYPES.RECEIPT, receipt)) };
}

/** 9: verify a SignedReceipt with the recipient's (accepted) certificate, signed alone or in a batch (21). */
export function verifyReceipt(signed, cert, expectedRecipient) {
  verifySigned(TYPES.RECEIPT, signed.receipt, signed.signature, signed.batch_signature, cert, "receipt");
  const r = decode("Receipt", signed.receipt);
  if (r.recipient !== agencyOf(cert)) throw new VerificationError("receipt names another agency than its signer");
  if (expectedRecipient && r.recipient !== expectedRecipient) throw new VerificationError("unexpected recipient");
  if (!r.status) throw new VerificationError("receipt status is unspecified");
  if (!r.envelope_sha256 || r.envelope_sha256.length !== 32) throw new VerificationError("bad envelope digest");
  if (!r.time) throw new VerificationError("receipt has no time");
  return r;
}

/** 10.2: verify a SignedForwardConsent with the original sender's certificate. */
export function verifyForwardConsent(signed, cert) {
  verify(cert, pae(TYPES.FORWARD_CONSENT, signed.consent), signed.signature, "forward consent");
  const c = decode("ForwardConsent", signed.consent);
  if (!c.message_id || !c.forwarder || !(c.recipients ?? []).length || !c.not_after) {
    throw new VerificationError("forward consent must name the message, the forwarder, recipients and an expiry");
  }
  return c;
}
