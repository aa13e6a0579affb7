// HPKE key wrapping, docs/protocol.md section 5.3: RFC 9180 base mode, single-shot, empty aad,
// wrapped = enc || ct; X25519 (KEM 0x0020) and X-Wing (KEM 0x647a), HKDF-SHA256, AES-256-GCM.
import crypto from "node:crypto";
import { Aes256Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { XWing } from "@hpke/hybridkem-x-wing";
import { x25519 } from "@noble/curves/ed25519.js";
import { sha3_256, shake256 } from "@noble/hashes/sha3.js";
import { concat, VerificationError } from "./bytes.mjs";

export const X25519_SUITE = 1;
export const XWING_SUITE = 2;
const XWING_LABEL = Uint8Array.from([0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c]); // "\./" "/^\"

// ISB stores X-Wing private keys in X-Wing's expanded form (ML-KEM-768 seed d||z, then the X25519
// private key: 96 bytes), because they are generated from independent parts; the library's keys
// are 32-byte seeds. Decapsulation is the draft's, from the expanded key.
class ExpandedXWing extends XWing {
  constructor() {
    super();
    this.privateKeySize = 96;
  }

  async decap(params) {
    await this._setup();
    const enc = new Uint8Array(params.enc);
    if (enc.length !== 1120) throw new Error("X-Wing enc is 1120 bytes");
    const sk = new Uint8Array(await this.serializePrivateKey(params.recipientKey));
    const [, skM] = await this._m.deriveKeyPair(sk.subarray(0, 64)); // the library's ML-KEM-768
    const skX = sk.subarray(64, 96);
    const ctM = enc.subarray(0, 1088);
    const ctX = enc.subarray(1088);
    const ssM = await this._m.decap(ctM, skM);
    const ssX = x25519.getSharedSecret(skX, ctX);
    return sha3_256(concat(ssM, ssX, ctX, x25519.getPublicKey(skX), XWING_LABEL)).buffer;
  }
}

const SUITES = {
  [X25519_SUITE]: { kem: () => new DhkemX25519HkdfSha256(), enc: 32, publicKey: 32, privateKey: 32 },
  [XWING_SUITE]: { kem: () => new ExpandedXWing(), enc: 1120, publicKey: 1216, privateKey: 96 },
};

function suiteOf(id) {
  const params = SUITES[id];
  if (!params) throw new VerificationError(`unsupported key suite ${id}`);
  const kem = params.kem();
  return { ...params, kem, suite: new CipherSuite({ kem, kdf: new HkdfSha256(), aead: new Aes256Gcm() }) };
}

export function checkPublicKey(id, publicKey) {
  const s = suiteOf(id);
  if (publicKey.length !== s.publicKey) {
    throw new VerificationError(`public key of suite ${id} is ${publicKey.length} bytes, not ${s.publicKey}`);
  }
}

/** HPKE-Seal of the content key for one recipient: enc || ct. */
export async function wrap(id, publicKey, info, contentKey) {
  const s = suiteOf(id);
  checkPublicKey(id, publicKey);
  // A copy: the library serializes keys through `.buffer`, which must not be a view into a larger one.
  const recipientPublicKey = await s.kem.importKey("raw", Uint8Array.from(publicKey), true);
  const sealed = await s.suite.seal({ recipientPublicKey, info }, contentKey, new Uint8Array(0));
  return concat(new Uint8Array(sealed.enc), new Uint8Array(sealed.ct ?? sealed.ciphertext));
}

/** HPKE-Open of enc || ct; raise VerificationError when it does not open. */
export async function unwrap(id, privateKey, info, wrapped) {
  const s = suiteOf(id);
  if (wrapped.length <= s.enc) throw new VerificationError("wrapped key is too short");
  try {
    const recipientKey = await s.kem.importKey("raw", Uint8Array.from(privateKey), false);
    const pt = await s.suite.open({ recipientKey, enc: wrapped.subarray(0, s.enc), info },
      wrapped.subarray(s.enc), new Uint8Array(0));
    return new Uint8Array(pt);
  } catch (error) {
    throw new VerificationError(`wrapped key does not decrypt (${error.name})`);
  }
}

/** A fresh key pair in the layouts of section 5.3. */
export async function generate(id) {
  if (id === X25519_SUITE) {
    const privateKey = x25519.utils.randomSecretKey();
    return { privateKey, publicKey: x25519.getPublicKey(privateKey) };
  }
  if (id === XWING_SUITE) {
    const seed = crypto.randomBytes(32);
    const pair = await new XWing().generateKeyPairDerand(new Uint8Array(seed));
    const publicKey = new Uint8Array(await new XWing().serializePublicKey(pair.publicKey));
    return { privateKey: shake256(seed, { dkLen: 96 }), publicKey }; // X-Wing's expandDecapsulationKey
  }
  throw new Error(`unsupported key suite ${id}`);
}
