// The browser's own check of the inclusion proofs on a message page, with WebCrypto only.
//
// It trusts no verdict of the console process: from the entry bytes, the audit path and the signed
// checkpoint note embedded in the page, it recomputes (RFC 9162 section 2.1):
//   leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right),
// folds the path as section 2.1.3.2 says, and compares the result with the root hash written in the
// checkpoint text; it checks the checkpoint's Ed25519 signature with the auditor's verifier key where
// the browser's WebCrypto has Ed25519. Indices are BigInt: JavaScript's bit operators are 32-bit.
"use strict";
(function () {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const encoder = new TextEncoder();

  function fromBase64(text) {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  }
  function fromHex(text) {
    if (!/^([0-9a-f]{2})*$/.test(text)) throw new Error("not a hex string");
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
    return out;
  }
  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }
  function equal(a, b) {
    return a.length === b.length && a.every((v, i) => v === b[i]);
  }
  async function sha256(data) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  }
  const leafHash = (entry) => sha256(concat(Uint8Array.of(0), entry));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  // RFC 9162 section 2.1.3.2, step by step.
  async function verifyInclusion(leaf, index, size, path, root) {
    // 1. The index must be inside the tree.
    if (index >= size) throw new Error(`index ${index} is not in a tree of size ${size}`);
    // 2-3.
    let fn = index, sn = size - 1n, r = leaf;
    // 4.
    for (const p of path) {
      if (p.length !== 32) throw new Error("a path hash is not 32 bytes");
      if (sn === 0n) throw new Error("the audit path is longer than the tree is deep");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        if ((fn & 1n) === 0n) {
          while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n; sn >>= 1n;
    }
    // 5.
    if (sn !== 0n) throw new Error("the audit path is shorter than the tree is deep");
    if (!equal(r, root)) {
      throw new Error(`its bytes and audit path lead to root ${toHex(r).slice(0, 16)}…, ` +
                      `not to the signed root ${toHex(root).slice(0, 16)}…`);
    }
    return r;
  }

  // A C2SP tlog-checkpoint signed note: text lines, a blank line, signature lines.
  function parseCheckpoint(note) {
    const text = decoder.decode(note);
    const split = text.lastIndexOf("\n\n");
    if (split < 0) throw new Error("the checkpoint note has no signature block");
    const body = text.slice(0, split + 1);
    const lines = body.slice(0, -1).split("\n");
    if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("malformed checkpoint text");
    const root = fromBase64(lines[2]);
    if (root.length !== 32) throw new Error("the checkpoint root is not a SHA-256 hash");
    const signatures = [];
    for (const line of text.slice(split + 2).split("\n")) {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (m) signatures.push({ name: m[1], blob: fromBase64(m[2]) });
    }
    return { body, origin: lines[0], size: BigInt(lines[1]), root, signatures };
  }

  // Returns "verified", or "unsupported" when this browser's WebCrypto has no Ed25519; throws on a bad signature.
  async function checkSignature(checkpoint, vkey) {
    const first = vkey.indexOf("+"), second = vkey.indexOf("+", first + 1);
    const name = vkey.slice(0, first), id = fromHex(vkey.slice(first + 1, second));
    const material = fromBase64(vkey.slice(second + 1));
    if (material.length !== 33 || material[0] !== 1) throw new Error("the audit key is not an Ed25519 verifier key");
    const signature = checkpoint.signatures.find((s) => s.name === name && equal(s.blob.slice(0, 4), id));
    if (!signature) throw new Error(`the checkpoint carries no signature by ${name}`);
    let key;
    try {
      key = await crypto.subtle.importKey("raw", material.slice(1), { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      return "unsupported";
    }
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, signature.blob.slice(4), encoder.encode(checkpoint.body));
    if (!ok) throw new Error("the checkpoint's Ed25519 signature does not verify with your audit key");
    return "verified";
  }

  function show(cell, ok, text, title) {
    cell.textContent = text;
    cell.className = "check browser " + (ok ? "ok" : "fail");
    if (title) cell.title = title;
    if (!ok) cell.closest("tr").classList.add("bad");
  }

  async function run() {
    const holder = document.getElementById("isb-proofs");
    const verdict = document.getElementById("browser-verdict");
    if (!holder || !verdict) return;
    const data = JSON.parse(holder.textContent);
    const cells = Array.from(document.querySelectorAll("td.browser"));
    let checkpoint, signature;
    try {
      if (!data.note) throw new Error("no checkpoint with a valid signature covers these entries");
      checkpoint = parseCheckpoint(fromBase64(data.note));
      signature = await checkSignature(checkpoint, data.vkey);
    } catch (e) {
      cells.forEach((cell) => show(cell, false, "✗ " + e.message));
      verdict.className = "browser-verdict fail";
      verdict.textContent = "Browser check FAILED: " + e.message;
      document.body.dataset.browserCheck = "failed";
      return;
    }
    const failed = [];
    for (const [i, step] of data.steps.entries()) {
      const cell = cells[i];
      try {
        const entry = fromBase64(step.entry);
        const declared = JSON.parse(decoder.decode(entry)).index;
        if (declared !== step.index) throw new Error(`it holds the content of entry ${declared}`);
        const leaf = await leafHash(entry);
        await verifyInclusion(leaf, BigInt(step.index), checkpoint.size, step.proof.map(fromHex), checkpoint.root);
        show(cell, true, "✓ proven", `leaf ${toHex(leaf)}; ${step.proof.length} path hashes; root ${toHex(checkpoint.root)}`);
      } catch (e) {
        failed.push(step.index);
        show(cell, false, `✗ entry ${step.index}: ${e.message}`);
      }
    }
    const where = `the checkpoint of tree size ${checkpoint.size} (root ${toHex(checkpoint.root).slice(0, 16)}…)`;
    const signed = signature === "verified"
      ? "its Ed25519 signature verified in this browser"
      : "its signature not checked here (this browser's WebCrypto has no Ed25519; the console process checked it)";
    if (failed.length) {
      verdict.className = "browser-verdict fail";
      verdict.textContent = `Browser check FAILED for entry ${failed.join(", ")}: not proven included in ${where}; ` +
        `${data.steps.length - failed.length} of ${data.steps.length} entries proven; ${signed}.`;
    } else {
      verdict.className = "browser-verdict ok";
      verdict.textContent = `Browser check passed: all ${data.steps.length} entries proven included in ${where}; ${signed}.`;
    }
    document.body.dataset.browserCheck = failed.length ? "failed" : "passed";
    document.body.dataset.signature = signature;
  }

  // Exposed for the browser tests, which check this code against the Python verifier on many trees.
  window.isbVerify = Object.freeze({ verifyInclusion, leafHash, fromHex, toHex });
  run();
})();
