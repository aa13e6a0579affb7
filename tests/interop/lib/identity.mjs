// Identity signatures (docs/protocol.md section 5.1) and agency certificates (section 2).
import crypto from "node:crypto";
import { p256 } from "@noble/curves/nist.js";
import { fromBase64, SHA256, VerificationError } from "./bytes.mjs";

const b64url = (s) => Uint8Array.from(Buffer.from(s, "base64url"));

/** An ECDSA P-256 identity key from PEM (PKCS#8 or SEC1), as noble wants it. */
export function privateKeyFromPem(pem) {
  const jwk = crypto.createPrivateKey(pem).export({ format: "jwk" });
  if (jwk.crv !== "P-256") throw new Error("identity keys are P-256");
  return b64url(jwk.d);
}

/** Sign(key, m): ECDSA P-256 over SHA-256(m), DER. */
export function sign(privateKey, message) {
  return p256.sign(message, privateKey, { prehash: true, format: "der", lowS: false });
}

/** The uncompressed P-256 point of a certificate's key; refuse any other key type. */
export function publicKeyOf(cert) {
  const key = cert.publicKey;
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails.namedCurve !== "prime256v1") {
    throw new VerificationError("certificate key is not an ECDSA P-256 identity key");
  }
  const jwk = key.export({ format: "jwk" });
  return Uint8Array.from([4, ...b64url(jwk.x), ...b64url(jwk.y)]);
}

/** Verify(certificate, m, sig): high-s signatures are valid (section 5.1). */
export function verify(cert, message, signature, what) {
  let ok = false;
  try {
    ok = p256.verify(signature, message, publicKeyOf(cert), { prehash: true, format: "der", lowS: false });
  } catch {
    ok = false;
  }
  if (!ok) throw new VerificationError(`${what} signature does not verify`);
}

export const parseCertificate = (data) => new crypto.X509Certificate(data);
export const fingerprint = (cert) => SHA256(cert.raw);

function uriSans(cert) {
  const names = (cert.subjectAltName ?? "").split(", ").filter(Boolean);
  return names;
}

// keyUsage (2.5.29.15): node does not expose its bits; read them from the DER.
function hasDigitalSignature(cert) {
  const der = cert.raw;
  const oid = Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x0f]);
  let i = der.indexOf(oid);
  if (i < 0) return false;
  i += oid.length;
  if (der[i] === 0x01) i += 3; // critical BOOLEAN
  if (der[i] !== 0x04) return false; // OCTET STRING { BIT STRING }
  i += 2;
  if (der[i] !== 0x03) return false;
  return (der[i + 3] & 0x80) !== 0; // bit 0, digitalSignature
}

/** Accept `cert` as agency `agency` of `trustDomain` at `when` (section 2). */
export function verifyAgencyCertificate(cert, { ca, agency, trustDomain, when }) {
  // 1. Chain (one level: the vectors and the dev PKI issue leaves from the root) and validity.
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new VerificationError(`certificate of ${agency} does not chain to the CA`);
  }
  const t = new Date(when).getTime();
  for (const c of [cert, ca]) {
    if (t < Date.parse(c.validFrom) || t > Date.parse(c.validTo)) {
      throw new VerificationError(`certificate ${c.subject.replace(/\n/g, ",")} is not valid at ${new Date(when).toISOString()}`);
    }
  }
  // 2. Exactly one URI SAN, the agency's SPIFFE id (and no other name).
  const names = uriSans(cert);
  const expected = `URI:spiffe://${trustDomain}/agency/${agency}`;
  if (names.length !== 1 || names[0] !== expected) {
    throw new VerificationError(`certificate names ${names.join(" ")}, expected ${expected}`);
  }
  // 3. A leaf, digitalSignature, clientAuth.
  if (cert.ca) throw new VerificationError("certificate is a CA certificate");
  if (!hasDigitalSignature(cert)) throw new VerificationError("certificate lacks digitalSignature");
  const eku = cert.keyUsage ?? [];
  if (!eku.includes("1.3.6.1.5.5.7.3.2")) throw new VerificationError("certificate lacks the clientAuth usage");
  // 4. P-256.
  publicKeyOf(cert);
}

/** The agency id of a certificate's single `spiffe://TD/agency/ID` SAN. */
export function agencyOf(cert) {
  const names = uriSans(cert);
  const match = names.length === 1 && /^URI:spiffe:\/\/[^/]+\/agency\/([^/]+)$/.exec(names[0]);
  if (!match) throw new VerificationError("certificate does not name one agency");
  return match[1];
}

export const pemToDer = (pem) => fromBase64(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
