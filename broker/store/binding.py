"""The database's deployment: recorded when the database is created, checked at every start.

A database holds one deployment's audit log, signed with that deployment's audit key and full of
certificates of that deployment's CA. A broker started with another PKI on it would append its own
certificates and sign checkpoints with a key no auditor of this deployment trusts, and every later
export would fail verification. So the first start records the trust domain, the CA certificate's
fingerprint and the audit key id, and a broker whose PKI differs refuses to start, naming the item.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.engine import Connection

from broker.errors import ConfigurationError
from broker.store import tables
from broker.store.db import now_us

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Deployment:
    """What binds a database to a deployment; `ca_fingerprints` are those of every CA certificate in the bundle."""

    trust_domain: str
    ca_fingerprints: tuple[str, ...]
    audit_key_id: str

    @classmethod
    def of(cls, trust_domain: str, ca_certificates: list[x509.Certificate], audit_vkey: str) -> Deployment:
        """The deployment of a broker: its trust domain, CA bundle, and audit key (C2SP vkey `name+hash+key`)."""
        fingerprints = tuple(hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest() for c in ca_certificates)
        return cls(trust_domain, fingerprints, audit_vkey.rsplit("+", 1)[0])


def bind_deployment(conn: Connection, mine: Deployment, where: str) -> bool:
    """Record `mine` in a database that has no deployment yet (return True), or check that it is the same.

    Raises `ConfigurationError` naming each item that differs. A CA bundle that still holds the
    recorded CA certificate (a bundle during a CA rotation) matches.
    """
    row = conn.execute(sa.select(tables.deployment).where(tables.deployment.c.id == 1)).first()
    if row is None:
        conn.execute(
            tables.deployment.insert().values(
                id=1,
                trust_domain=mine.trust_domain,
                ca_fingerprint=mine.ca_fingerprints[0],
                audit_key_id=mine.audit_key_id,
                created_us=now_us(),
            )
        )
        log.info(
            "deployment.bound",
            trust_domain=mine.trust_domain,
            ca_fingerprint=mine.ca_fingerprints[0],
            audit_key_id=mine.audit_key_id,
        )
        return True
    differences = []
    if row.trust_domain != mine.trust_domain:
        differences.append(f"trust domain: the database's is {row.trust_domain!r}, this broker's {mine.trust_domain!r}")
    if row.ca_fingerprint not in mine.ca_fingerprints:
        differences.append(
            f"CA certificate: the database's has SHA-256 {row.ca_fingerprint}, this broker's CA "
            f"bundle holds {', '.join(mine.ca_fingerprints)}"
        )
    if row.audit_key_id != mine.audit_key_id:
        differences.append(f"audit key: the database's is {row.audit_key_id}, this broker's {mine.audit_key_id}")
    if differences:
        raise ConfigurationError(
            f"database {where} belongs to another deployment; {'; '.join(differences)}. Start this broker with "
            "that deployment's PKI (cert_dir, ca_bundle, audit_key) or give it its own database_url"
        )
    return False
