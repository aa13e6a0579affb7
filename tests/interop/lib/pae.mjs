// Pre-authentication encoding, docs/protocol.md section 4.
import { compareBytes, concat, utf8 } from "./bytes.mjs";

const SP = utf8(" ");
const len = (bytes) => utf8(String(bytes.length));
const asBytes = (x) => (typeof x === "string" ? utf8(x) : x);

/** PAE(type, f1..fn) = "ISBv1" SP LEN(type) SP type (SP LEN(fi) SP fi)* */
export function pae(type, ...fields) {
  const t = utf8(type);
  const parts = [utf8("ISBv1"), SP, len(t), SP, t];
  for (const field of fields) {
    const f = asBytes(field);
    parts.push(SP, len(f), SP, f);
  }
  return concat(...parts);
}

/** LIST(x1..xk) = (LEN(xi) SP xi SP)* */
export function list(items) {
  return concat(...items.map(asBytes).flatMap((item) => [len(item), SP, item, SP]));
}

/** ASCII decimal of a non-negative integer (number, bigint, protobufjs Long or decimal string). */
export function int(value) {
  const text = value === undefined || value === null ? "0" : value.toString();
  if (!/^(0|[1-9][0-9]*)$/.test(text)) throw new Error(`not a non-negative integer: ${text}`);
  return utf8(text);
}

/** SECONDS "." NANOS(9 digits), or the empty string when the timestamp is not set. */
export function timestamp(ts) {
  if (ts === undefined || ts === null) return new Uint8Array(0);
  const seconds = (ts.seconds ?? 0).toString();
  const nanos = String(ts.nanos ?? 0).padStart(9, "0");
  return utf8(`${seconds}.${nanos}`);
}

/** LIST(ASCII(tlp), classification, ASCII(source_reliability), ASCII(information_accuracy)). */
export function handling(h) {
  const v = h ?? {};
  return list([int(v.tlp ?? 0), utf8(v.classification ?? ""), int(v.source_reliability ?? 0),
    int(v.information_accuracy ?? 0)]);
}

/** Recipients as a LIST, sorted by UTF-8 bytes or in header order. */
export function recipients(names, { sort }) {
  const encoded = names.map(utf8);
  return list(sort ? [...encoded].sort(compareBytes) : encoded);
}

/** ATTACHMENTS(H): LIST of LIST(sha256, ASCII(size), ASCII(chunk_size), media_type), section 19.1. */
export function attachments(refs) {
  return list((refs ?? []).map((a) => list([a.sha256 ?? new Uint8Array(0), int(a.size ?? 0), int(a.chunk_size ?? 0),
    utf8(a.media_type ?? "")])));
}

export const TYPES = Object.freeze({
  HEADER: "isb.v1.header",
  CONTENT: "isb.v1.content",
  CONTENT_AAD: "isb.v1.content-aad",
  KEY_WRAP: "isb.v1.key-wrap",
  WRAPPED_KEY: "isb.v1.wrapped-key",
  KEY_BUNDLE: "isb.v1.key-bundle",
  RECEIPT: "isb.v1.receipt",
  FORWARD_CONSENT: "isb.v1.forward-consent",
  ATTACHMENT_KEY: "isb.v1.attachment-key",
});
