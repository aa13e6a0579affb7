// The messages of proto/ (package isb.v1), with protobufjs, which @grpc/proto-loader uses too.
import path from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

export const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../proto");

const root = new protobuf.Root();
root.resolvePath = (origin, target) =>
  target.startsWith("google/protobuf/") ? protobuf.util.path.resolve(origin, target) : path.join(PROTO_DIR, target);
root.loadSync(
  ["envelope.proto", "broker.proto", "audit.proto"].map((f) => `broker/api/v1/${f}`),
  { keepCase: true },
);
root.resolveAll();

export const types = new Proxy({}, { get: (_, name) => root.lookupType(`isb.v1.${name}`) });
export const enums = new Proxy({}, { get: (_, name) => root.lookupEnum(`isb.v1.${name}`).values });

/** Serialize a message of `type` from a plain object (only the fields we set are written). */
export function encode(typeName, object) {
  const type = types[typeName];
  const problem = type.verify(object);
  if (problem) throw new Error(`${typeName}: ${problem}`);
  return type.encode(type.fromObject(object)).finish();
}

/** Parse bytes as `type`; message fields that are absent are null (proto3 presence). */
export function decode(typeName, bytes) {
  return types[typeName].decode(bytes);
}

/** A google.protobuf.Timestamp from a Date (millisecond precision) or ISO string. */
export function timestampOf(when) {
  const ms = new Date(when).getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

export function dateOf(ts) {
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}

// Canonical serialization of an Envelope (docs/protocol.md section 6.9): fields in field-number
// order, each non-default field once, no unknown fields; what the broker stores and digests.
function field(writer, number, bytes) {
  if (bytes && bytes.length) writer.uint32((number << 3) | 2).bytes(bytes);
}

export function canonicalEnvelope(envelope) {
  const w = protobuf.Writer.create();
  field(w, 1, envelope.header);
  field(w, 2, envelope.header_signature);
  field(w, 3, envelope.ciphertext);
  for (const key of envelope.wrapped_keys ?? []) {
    const k = protobuf.Writer.create();
    field(k, 1, Buffer.from(key.recipient ?? "", "utf8"));
    field(k, 2, Buffer.from(key.key_id ?? "", "utf8"));
    field(k, 3, key.enc);
    w.uint32((4 << 3) | 2).bytes(k.finish());
  }
  const batch = envelope.batch_signature;
  if (batch) {  // section 21: a message field, written when present, its own fields in number order
    const b = protobuf.Writer.create();
    field(b, 1, batch.signature);
    if (Number(batch.tree_size ?? 0)) b.uint32(2 << 3).uint64(batch.tree_size);
    if (Number(batch.leaf_index ?? 0)) b.uint32(3 << 3).uint64(batch.leaf_index);
    for (const h of batch.path ?? []) b.uint32((4 << 3) | 2).bytes(h);
    w.uint32((10 << 3) | 2).bytes(b.finish());
  }
  return w.finish();
}
