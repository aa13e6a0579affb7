// Merkle batch signatures, docs/protocol.md section 21: one signature over the RFC 9162 tree head
// of a batch, an inclusion path per member; each member verifies alone.
import { leafHash as entryLeafHash, rootFromInclusion } from "./audit.mjs";
import { SHA256, VerificationError } from "./bytes.mjs";
import { verify } from "./identity.mjs";
import { int, pae } from "./pae.mjs";

const MAX_BATCH = 4096;
const MAX_PATH = 12;

/** SHA-256(0x00 || SHA-256(PAE(T, b))): the leaf hash of structure bytes `b` of purpose `T`. */
export const leafHash = (purpose, bytes) => entryLeafHash(SHA256(pae(purpose, bytes)));

/** PAE(T || "-batch", ASCII(n), root): what the batch signature covers. */
export const rootSigningInput = (purpose, size, root) => pae(`${purpose}-batch`, int(size), root);

/** The root the path leads to (RFC 9162 2.1.3.2 without the final comparison), step 1 if it fails. */
export function rootFromPath(leaf, index, size, path) {
  try {
    return rootFromInclusion(leaf, index, size, path);
  } catch (error) {
    throw new VerificationError(`batch path: ${error.message}`, 1);
  }
}

/**
 * Verify structure bytes `bytes` of purpose `T` with its single `signature` or, when `batch` is
 * present, its BatchSignature (21.3), against the accepted certificate `cert`. `what` names it.
 */
export function verifySigned(purpose, bytes, signature, batch, cert, what) {
  if (!batch) {
    verify(cert, pae(purpose, bytes), signature, what);
    return;
  }
  if (signature && signature.length) throw new VerificationError(`${what}: both a signature and a batch signature`, 1);
  const size = Number(batch.tree_size ?? 0);
  const index = Number(batch.leaf_index ?? 0);
  const path = batch.path ?? [];
  if (!batch.signature || batch.signature.length === 0 || batch.signature.length > 256) {
    throw new VerificationError(`${what}: batch signature missing or over 256 bytes`, 1);
  }
  if (!(size >= 2 && size <= MAX_BATCH)) throw new VerificationError(`${what}: batch tree_size outside 2..4096`, 1);
  if (index >= size) throw new VerificationError(`${what}: batch leaf_index is not in the tree`, 1);
  if (path.length > MAX_PATH || path.some((h) => h.length !== 32)) {
    throw new VerificationError(`${what}: batch path of more than 12 hashes or not of 32-byte hashes`, 1);
  }
  const root = rootFromPath(leafHash(purpose, bytes), index, size, path);
  verify(cert, rootSigningInput(purpose, size, root), batch.signature, `${what} batch`);
}
