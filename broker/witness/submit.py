"""The client side of add-checkpoint: what the broker uses to collect cosignatures."""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker.errors import AuthenticationError
from broker.identity import Role, parse_spiffe_id
from broker.protocol import _cosignature, _note
from broker.protocol.errors import ProtocolError, VerificationError
from broker.witness.core import SIZE_CONTENT_TYPE, request_body


@dataclass(frozen=True, slots=True)
class Answer:
    """A witness's answer to one add-checkpoint call."""

    status: int
    content_type: str
    body: bytes

    @property
    def size(self) -> int | None:
        """The witness's size, from a 409 `text/x.tlog.size` answer."""
        if self.status != 409 or self.content_type.split(";")[0].strip() != SIZE_CONTENT_TYPE:
            return None
        text = self.body.decode("ascii", errors="replace")
        if not text.endswith("\n") or not text[:-1].isdigit() or len(text) > 21:
            raise ProtocolError(f"witness answered 409 with a malformed size {text[:40]!r}")
        return int(text[:-1])

    @property
    def reason(self) -> str:
        """The first line of a refusal, for logs."""
        return self.body.decode("utf-8", errors="replace").split("\n", 1)[0][:300]


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """TLS client context presenting `cert` and trusting only the deployment CA `ca`."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _peer_is_witness(connection: http.client.HTTPSConnection, trust_domain: str) -> None:
    sock = connection.sock
    peer = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    names: Any = (peer or {}).get("subjectAltName", ())
    uris = [str(pair[1]) for pair in names if pair[0] == "URI"]
    for uri in uris:
        try:
            spiffe = parse_spiffe_id(uri, trust_domain)
        except (AuthenticationError, ValueError):
            continue
        if spiffe.role is Role.WITNESS:
            return
    raise VerificationError(f"the server is not a witness of {trust_domain} (SPIFFE ids: {uris})")


def add_checkpoint(
    url: str,
    context: ssl.SSLContext,
    old_size: int,
    proof: list[bytes],
    note: bytes,
    *,
    trust_domain: str,
    timeout: float = 10.0,
) -> Answer:
    """POST one add-checkpoint request to the witness whose submission prefix is `url`."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ProtocolError(f"witness URL {url!r} is not an https:// URL")
    connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=context, timeout=timeout)
    try:
        connection.connect()
        _peer_is_witness(connection, trust_domain)
        body = request_body(old_size, proof, note)
        connection.request(
            "POST", f"{parts.path.rstrip('/')}/add-checkpoint", body=body, headers={"Content-Type": "text/plain"}
        )
        response = connection.getresponse()
        data = response.read(1 << 16)
        return Answer(response.status, response.getheader("Content-Type", ""), data)
    finally:
        connection.close()


def cosignature_lines(answer: Answer, cosigner: _cosignature.Cosigner, note: bytes) -> list[str]:
    """The verified cosignature line(s) of `cosigner` in a 200 answer; other keys' lines are dropped."""
    lines = _cosignature.parse_signature_lines(answer.body)
    text, _ = _cosignature.split_note(note)
    kept = []
    for line in lines:
        name, blob = _note.parse_signature_line(line.rstrip("\n"))
        if name == cosigner.name and blob[:4] == cosigner.key_id:
            _cosignature.verify_cosignature(text, cosigner, blob)
            kept.append(line)
    if not kept:
        raise VerificationError(f"witness {cosigner.name!r} answered 200 without its cosignature")
    return kept
