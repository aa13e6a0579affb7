// The envelope, docs/protocol.md section 6: sign, encrypt, sign.
import crypto from "node:crypto";
import { compareBytes, concat, equal, SHA256, utf8, VerificationError } from "./bytes.mjs";
import { agencyOf, fingerprint, sign, verify } from "./identity.mjs";
import { verifySigned } from "./batch.mjs";
import { unwrap, wrap } from "./hpke.mjs";
import { checkEnvelope, checkHeader } from "./limits.mjs";
import { attachments, handling, int, pae, recipients, timestamp, TYPES } from "./pae.mjs";
import { canonicalEnvelope, decode, encode } from "./proto.mjs";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const s = (v) => v ?? "";

/** 6.3: the inner signature's input. */
export function contentSigningInput(h, contentType, body) {
  return pae(TYPES.CONTENT, s(h.message_id), s(h.sender), recipients(h.recipients ?? [], { sort: true }),
    int(h.kind), handling(h.handling), timestamp(h.created), attachments(h.attachments), contentType, body);
}

/** 6.4: the AES-GCM associated data, 15 header fields without the digests. */
export function contentAad(h) {
  return pae(TYPES.CONTENT_AAD, int(h.version), s(h.message_id), s(h.sender), h.sender_cert_sha256 ?? new Uint8Array(0),
    recipients(h.recipients ?? [], { sort: false }), int(h.kind), handling(h.handling), int(h.priority),
    timestamp(h.created), timestamp(h.expires), s(h.in_reply_to), s(h.watchlist_id), int(h.watchlist_version),
    s(h.references), attachments(h.attachments));
}

/** 6.5: HPKE info. */
export const keyWrapInfo = (version, messageId, recipient) => pae(TYPES.KEY_WRAP, int(version), messageId, recipient);

/** 6.6: the outer signature's input. */
export const headerSigningInput = (headerBytes) => pae(TYPES.HEADER, headerBytes);

/** 6.7: SHA-256 over the PAE of each wrapped key, sorted by recipient bytes. */
export function wrappedKeysSha256(keys) {
  const sorted = [...keys].sort((a, b) => compareBytes(utf8(a.recipient), utf8(b.recipient)));
  return SHA256(concat(...sorted.map((k) => pae(TYPES.WRAPPED_KEY, k.recipient, s(k.key_id), k.enc))));
}

/** 6.9. */
export const envelopeSha256 = (envelope) => SHA256(canonicalEnvelope(envelope));

function aesGcmEncrypt(key, nonce, plaintext, aad) {
  const cipher = crypto.createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(aad);
  return concat(cipher.update(plaintext), cipher.final(), cipher.getAuthTag());
}

function aesGcmDecrypt(key, nonce, data, aad) {
  const decipher = crypto.createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(data.subarray(data.length - 16));
  return concat(decipher.update(data.subarray(0, data.length - 16)), decipher.final());
}

/**
 * 6.2: seal. `header` holds every field but the digests (plain object, proto field names);
 * `bundles` maps each recipient agency to its verified KeyBundle.
 */
export async function seal({ header, contentType, body, bundles, identityKey, contentKey, nonce }) {
  const h = { ...header, version: 1 };
  const innerSignature = sign(identityKey, contentSigningInput(h, contentType, body));
  const content = encode("Content", { content_type: contentType, body, inner_signature: innerSignature });
  const key = contentKey ?? crypto.randomBytes(32);
  const iv = nonce ?? crypto.randomBytes(12);
  const ciphertext = concat(iv, aesGcmEncrypt(key, iv, content, contentAad(h)));
  const wrapped = [];
  for (const agency of Object.keys(bundles).sort((a, b) => compareBytes(utf8(a), utf8(b)))) {
    const bundle = bundles[agency];
    wrapped.push({ recipient: agency, key_id: bundle.key_id,
      enc: await wrap(bundle.suite, bundle.public_key, keyWrapInfo(1, h.message_id, agency), key) });
  }
  h.ciphertext_sha256 = SHA256(ciphertext);
  h.wrapped_keys_sha256 = wrappedKeysSha256(wrapped);
  const headerBytes = encode("Header", h);
  return { header: headerBytes, header_signature: sign(identityKey, headerSigningInput(headerBytes)), ciphertext,
    wrapped_keys: wrapped };
}

/** 6.8 steps 1-5, with the sender certificate already accepted; returns the parsed header. */
export function verifyOuter(envelope, senderCert) {
  checkEnvelope(envelope);
  // Step 1: the header signature, or the batch signature of section 21.3.
  verifySigned(TYPES.HEADER, envelope.header, envelope.header_signature, envelope.batch_signature, senderCert,
    "envelope header");
  let h;
  try {
    h = decode("Header", envelope.header);
  } catch {
    throw new VerificationError("envelope header does not parse", 2);
  }
  const names = h.recipients ?? [];
  if (h.version !== 1) throw new VerificationError(`unsupported protocol version ${h.version}`, 3);
  if (!UUID.test(h.message_id)) throw new VerificationError("message id is not a lowercase canonical UUID", 3);
  if (names.length === 0 || new Set(names).size !== names.length) {
    throw new VerificationError("recipients are empty or repeated", 3);
  }
  if (!h.kind) throw new VerificationError("kind is unspecified", 3);
  if (!h.created) throw new VerificationError("no creation time", 3);
  checkHeader(h);
  if (!equal(h.sender_cert_sha256 ?? new Uint8Array(0), fingerprint(senderCert))) {
    throw new VerificationError("header names another sender certificate", 4);
  }
  if (h.sender !== agencyOf(senderCert)) throw new VerificationError("header sender is not the certificate's agency", 4);
  if (!equal(SHA256(envelope.ciphertext ?? new Uint8Array(0)), h.ciphertext_sha256 ?? new Uint8Array(0))) {
    throw new VerificationError("ciphertext does not match ciphertext_sha256", 5);
  }
  const keys = envelope.wrapped_keys ?? [];
  if (keys.length === 0 || new Set(keys.map((k) => k.recipient)).size !== keys.length) {
    throw new VerificationError("wrapped keys are missing or name a recipient twice", 5);
  }
  if (!equal(wrappedKeysSha256(keys), h.wrapped_keys_sha256 ?? new Uint8Array(0))) {
    throw new VerificationError("wrapped keys do not match wrapped_keys_sha256", 5);
  }
  return h;
}

/** 6.8 steps 1-9 for `recipient`, holding `keys` = {key_id: {suite, privateKey}}. */
export async function openEnvelope(envelope, { recipient, keys, senderCert }) {
  const h = verifyOuter(envelope, senderCert);
  const wrapped = envelope.wrapped_keys.find((k) => k.recipient === recipient);
  if (!wrapped) throw new VerificationError(`not addressed to ${recipient}`, 6);
  const key = keys[wrapped.key_id];
  if (!key) throw new VerificationError(`no private key ${wrapped.key_id}`, 6);
  let contentKey;
  try {
    contentKey = await unwrap(key.suite, key.privateKey, keyWrapInfo(h.version, h.message_id, recipient), wrapped.enc);
  } catch (error) {
    throw new VerificationError(error.message, 7);
  }
  if (contentKey.length !== 32) throw new VerificationError("content key is not 32 bytes", 7);
  const c = envelope.ciphertext;
  if (c.length < 28) throw new VerificationError("ciphertext is too short", 8);
  let plaintext;
  try {
    plaintext = aesGcmDecrypt(contentKey, c.subarray(0, 12), c.subarray(12), contentAad(h));
  } catch {
    throw new VerificationError("ciphertext does not decrypt under this header", 8);
  }
  let content;
  try {
    content = decode("Content", plaintext);
  } catch {
    throw new VerificationError("content does not parse", 9);
  }
  const contentType = content.content_type ?? "";
  const body = content.body ?? new Uint8Array(0);
  try {
    verify(senderCert, contentSigningInput(h, contentType, body), content.inner_signature ?? new Uint8Array(0), "inner");
  } catch (error) {
    throw new VerificationError(error.message, 9);
  }
  return { header: h, contentType, body, innerSignature: content.inner_signature };
}
