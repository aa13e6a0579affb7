"""Witnesses for the e2e tests: three agencies each run one, on real mutual TLS, with certificates of
the session's deployment CA (role `witness`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.identity import Role, make_spiffe_id
from broker.pki.authority import generate_identity_key, issue_certificate
from broker.pki.dev import DevPki
from broker.pki.store import CaDirectory
from broker.protocol import _cosignature, _note
from broker.protocol.witness_policy import LogKey
from broker.witness.core import Reply, Witness, WitnessState, parse_request
from broker.witness.http import WitnessHTTPServer, server_context

AGENCY_WITNESSES = {
    "FR-CUSTOMS": "witness.fr-customs.isb.dev/w1",
    "DE-BKA": "witness.de-bka.isb.dev/w1",
    "NL-FIOD": "witness.nl-fiod.isb.dev/w1",
}


def issue_tls(pki: DevPki, directory: Path, name: str, *, role: Role = Role.WITNESS) -> tuple[Path, Path]:
    """A TLS certificate and key of the deployment CA for `spiffe://isb.dev/<role>/<name>` on 127.0.0.1."""
    authority = CaDirectory.open(pki.directory).load_authority()
    key = generate_identity_key()
    cert = issue_certificate(
        authority,
        key.public_key(),
        make_spiffe_id(pki.trust_domain, role, name),
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def audit_log_key(pki: DevPki) -> LogKey:
    """The dev broker's audit log as a policy `log` line sees it."""
    key = serialization.load_pem_private_key(pki.audit_key.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return LogKey(f"{pki.trust_domain}/audit", key.public_key())


@dataclass
class RunningWitness:
    """One agency's witness serving add-checkpoint over mutual TLS."""

    agency: str
    name: str
    key: Ed25519PrivateKey
    state_path: Path
    cert: Path
    tls_key: Path
    ca: Path
    logs: dict[str, object]
    lying: bool = False
    server: WitnessHTTPServer | None = field(default=None, init=False)
    port: int = 0

    @property
    def cosigner(self) -> _cosignature.Cosigner:
        return _cosignature.Cosigner(self.name, self.key.public_key())

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/{self.agency.lower()}"

    def start(self) -> None:
        witness_cls = LyingWitness if self.lying else Witness
        witness = witness_cls(self.name, self.key, self.logs, WitnessState(self.state_path))  # type: ignore[arg-type]
        self.server = WitnessHTTPServer(
            ("127.0.0.1", self.port),
            witness,
            server_context(self.cert, self.tls_key, self.ca),
            f"/{self.agency.lower()}",
        )
        self.port = self.server.port
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server.witness.state.close()
            self.server = None


class LyingWitness(Witness):
    """A corrupt witness: it cosigns any checkpoint whose first line it can read, checking nothing."""

    def add_checkpoint(self, body: bytes) -> object:  # type: ignore[override]
        request = parse_request(body)
        text = request.note.decode().split("\n\n")[0] + "\n"
        return Reply(200, _cosignature.cosign(text, self.name, self._key, 1700000000).encode())


def start_witnesses(pki: DevPki, tmp: Path, *, lying: str | None = None) -> dict[str, RunningWitness]:
    """One witness per dev agency; `lying` names the agency whose witness cosigns anything."""
    log_key = audit_log_key(pki)
    running = {}
    for agency, name in AGENCY_WITNESSES.items():
        cert, tls_key = issue_tls(pki, tmp / "witness-tls", f"{agency.lower()}-w1")
        witness = RunningWitness(
            agency,
            name,
            Ed25519PrivateKey.generate(),
            tmp / f"witness-{agency}.db",
            cert,
            tls_key,
            pki.ca_cert,
            {log_key.origin: log_key.public_key},
            lying=agency == lying,
        )
        witness.start()
        running[agency] = witness
    return running


def policy_text(pki: DevPki, witnesses: dict[str, RunningWitness], k: int = 2, *, urls: bool = True) -> str:
    """A tlog-policy: the dev broker's log, the witnesses (with their URLs), k of them."""
    log_key = audit_log_key(pki)
    lines = [f"log {_note.encode_vkey(log_key.origin, log_key.public_key)}"]
    for agency, witness in witnesses.items():
        url = f" {witness.url}" if urls else ""
        lines.append(f"witness {agency} {witness.cosigner.vkey}{url}")
    lines += [f"group agencies {k} {' '.join(witnesses)}", "quorum agencies"]
    return "\n".join(lines) + "\n"
