// A gRPC client of the broker over mutual TLS (docs/protocol.md section 14), from proto/ with
// @grpc/proto-loader and @grpc/grpc-js.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { PROTO_DIR } from "./proto.mjs";

const definition = protoLoader.loadSync(["broker/api/v1/broker.proto", "broker/api/v1/audit.proto"], {
  includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: Number, defaults: false, oneofs: true,
});
const api = grpc.loadPackageDefinition(definition).isb.v1;

/** Stubs for `name` (an agency id, or "auditor") from a PKI folder laid out like certs/dev/. */
export function connect(target, certDir, name) {
  const read = (file) => fs.readFileSync(path.join(certDir, file));
  const credentials = grpc.credentials.createSsl(read("ca.crt"), read(`${name}.key`), read(`${name}.crt`));
  const service = name === "auditor" ? api.AuditService : api.BrokerService;
  const stub = new service(target, credentials);
  const call = (method, request) => new Promise((resolve, reject) => {
    stub[method](request, { deadline: Date.now() + 20_000 }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
  return { stub, call, close: () => stub.close() };
}

/** Collect a server stream's messages until it ends. */
export function collect(stream) {
  return new Promise((resolve, reject) => {
    const items = [];
    stream.on("data", (item) => items.push(item));
    stream.on("error", reject);
    stream.on("end", () => resolve(items));
  });
}

/** A UUIDv7 (RFC 9562 section 5.7) in lowercase canonical text. */
export function uuid7() {
  const bytes = crypto.randomBytes(16);
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i++) bytes[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
