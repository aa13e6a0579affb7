// Generate an HPKE key for an agency, keep it in a key file (0600), and publish its signed bundle.
//   node bin/publish-key.mjs TARGET CERT_DIR AGENCY SUITE(1|2) KEY_FILE
import fs from "node:fs";
import path from "node:path";
import { SHA256, toHex } from "../lib/bytes.mjs";
import { connect } from "../lib/client.mjs";
import { generate } from "../lib/hpke.mjs";
import { parseCertificate, pemToDer, privateKeyFromPem } from "../lib/identity.mjs";
import { makeKeyBundle } from "../lib/signed.mjs";

const [target, certDir, agency, suiteText, keyFile] = process.argv.slice(2);
const suite = Number(suiteText);
const key = await generate(suite);
const keyId = toHex(SHA256(key.publicKey)).slice(0, 32);
fs.writeFileSync(keyFile, JSON.stringify({ suite, key_id: keyId, private_key: toHex(key.privateKey) }), { mode: 0o600 });
const certPem = fs.readFileSync(path.join(certDir, `${agency}.crt`), "utf8");
const leafPem = certPem.slice(0, certPem.indexOf("-----END CERTIFICATE-----") + 25);
parseCertificate(leafPem); // refuse a file that holds no certificate
const now = Date.now();
const signed = makeKeyBundle({
  agency, key: { suite, key_id: keyId, publicKey: key.publicKey },
  identityKey: privateKeyFromPem(fs.readFileSync(path.join(certDir, `${agency}.key`), "utf8")),
  certificateDer: pemToDer(leafPem), notBefore: now - 60_000, notAfter: now + 86_400_000,
});
const broker = connect(target, certDir, agency);
const reply = await broker.call("PublishKeyBundle", signed);
broker.close();
console.log(JSON.stringify({ key_id: reply.key_id, audit_index: Number(reply.audit_index) }));
