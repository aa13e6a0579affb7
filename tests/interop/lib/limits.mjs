// docs/protocol.md "Limits and refusals": the range or format of every envelope and header field.
import { VerificationError } from "./bytes.mjs";
import { enums } from "./proto.mjs";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const AGENCY = /^[A-Z0-9]{2,5}-[A-Z0-9-]{2,32}$/;
const GROUP = /^[A-Z0-9][A-Z0-9-]{1,39}$/;
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;
const LEGAL_BASIS = /^[A-Z0-9][A-Z0-9._-]{0,31}$/;
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;
const MIN_SECONDS = -62135596800n;
const MAX_SECONDS = 253402300799n;
const chars = (s) => [...(s ?? "")].length;

function refuse(message) {
  throw new VerificationError(message, 3);
}

function known(enumName, value, name, unspecifiedOk) {
  const values = Object.values(enums[enumName]);
  const v = value ?? 0;
  if (!values.includes(v) || (v === 0 && !unspecifiedOk)) refuse(`${name} is unknown or unspecified (${v})`);
}

function timestampInRange(ts, name) {
  const seconds = BigInt((ts.seconds ?? 0).toString());
  if (seconds < MIN_SECONDS || seconds > MAX_SECONDS) refuse(`${name} is outside the Timestamp range`);
  if (!((ts.nanos ?? 0) >= 0 && (ts.nanos ?? 0) <= 999999999)) refuse(`${name} has bad nanos`);
}

const later = (a, b) => {
  const [sa, sb] = [BigInt((a.seconds ?? 0).toString()), BigInt((b.seconds ?? 0).toString())];
  return sa > sb || (sa === sb && (a.nanos ?? 0) > (b.nanos ?? 0));
};

/** The envelope's own fields, before anything is verified. */
export function checkEnvelope(e) {
  if (!e.header || e.header.length === 0) refuse("envelope has no header");
  if (e.header.length > 65536) refuse("envelope.header is over 65,536 bytes");
  if ((e.header_signature ?? []).length > 256) refuse("envelope.header_signature is over 256 bytes");
  const keys = e.wrapped_keys ?? [];
  if (keys.length > 4096) refuse("too many wrapped keys");
  for (const k of keys) {
    if (!AGENCY.test(k.recipient ?? "")) refuse("a wrapped key's recipient is not an agency id");
    if (chars(k.key_id) > 128) refuse("a wrapped key's key_id is over 128 characters");
    if ((k.enc ?? []).length > 4096) refuse("a wrapped key is over 4,096 bytes");
  }
}

/** Every header field in its range or format. */
export function checkHeader(h, maxRecipients = 256) {
  if (!UUID7.test(h.message_id ?? "")) refuse("header.message_id is not a lowercase canonical UUIDv7");
  if (!AGENCY.test(h.sender ?? "")) refuse("header.sender is not an agency id");
  for (const name of ["sender_cert_sha256", "ciphertext_sha256", "wrapped_keys_sha256"]) {
    if ((h[name] ?? []).length !== 32) refuse(`header.${name} is not a SHA-256 digest`);
  }
  const recipients = h.recipients ?? [];
  if (recipients.length === 0 || recipients.length > maxRecipients) refuse("header.recipients: bad count");
  for (const r of recipients) if (!(AGENCY.test(r) || GROUP.test(r))) refuse(`header.recipients: ${r} is not a name`);
  if (new Set(recipients).size !== recipients.length) refuse("header.recipients names a recipient twice");
  known("Kind", h.kind, "header.kind", false);
  const handling = h.handling ?? {};
  known("Tlp", handling.tlp, "header.handling.tlp", true);
  known("SourceReliability", handling.source_reliability, "header.handling.source_reliability", true);
  known("InformationAccuracy", handling.information_accuracy, "header.handling.information_accuracy", true);
  known("Priority", h.priority, "header.priority", true);
  if (chars(handling.classification) > 64) refuse("header.handling.classification is over 64 characters");
  if (!h.created) refuse("header.created is missing");
  timestampInRange(h.created, "header.created");
  if (h.expires) {
    timestampInRange(h.expires, "header.expires");
    if (!later(h.expires, h.created)) refuse("header.expires is not later than header.created");
  }
  for (const name of ["in_reply_to", "references"]) {
    if (h[name] && !UUID.test(h[name])) refuse(`header.${name} is not a canonical UUID`);
  }
  if (chars(h.watchlist_id) > 120) refuse("header.watchlist_id is over 120 characters");
  if (BigInt((h.watchlist_version ?? 0).toString()) > 2n ** 63n - 1n) refuse("header.watchlist_version is too large");
  const refs = h.attachments ?? [];  // section 19.1
  if (refs.length > 16) refuse("header.attachments has more than 16 items");
  refs.forEach((a, i) => {
    const name = `header.attachments[${i}]`;
    if ((a.sha256 ?? []).length !== 32) refuse(`${name}.sha256 is not a SHA-256 digest`);
    if (BigInt((a.size ?? 0).toString()) > 2n ** 40n) refuse(`${name}.size is over 2^40`);
    if (!((a.chunk_size ?? 0) >= 16384 && (a.chunk_size ?? 0) <= 1048576)) refuse(`${name}.chunk_size is out of range`);
    if (chars(a.media_type) > 255 || !MEDIA_TYPE.test(a.media_type ?? "")) refuse(`${name}.media_type is not type/subtype`);
  });
  // Justification, section 22, Justification: each field optional; the broker's policy says which it requires.
  if (h.legal_basis && !LEGAL_BASIS.test(h.legal_basis)) refuse("header.legal_basis is not a legal-basis code");
  for (const name of ["case_reference", "operator"]) {
    if (chars(h[name]) > 128) refuse(`header.${name} is over 128 characters`);
    if (CONTROL.test(h[name] ?? "")) refuse(`header.${name} contains a control character`);
  }
}
