"""SPIFFE-style identities of the trust domain (DESIGN.md section 2)."""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

from broker.errors import AuthenticationError

# The trust domain of a deployment that configures none (the dev PKI's; docs/protocol.md section 2).
# Every default of the broker, the SDK and the tools is this one constant: a deployment sets its own
# once, in the broker's `trust_domain` and the clients' `[client] trust_domain` (or ISB_TRUST_DOMAIN).
DEFAULT_TRUST_DOMAIN = "isb.dev"

# An agency id such as FR-CUSTOMS, as pattern text so that longer patterns (watchlist ids) embed it.
AGENCY_ID_PATTERN = r"[A-Z0-9]{2,5}-[A-Z0-9-]{2,32}"
AGENCY_ID = re.compile(rf"^{AGENCY_ID_PATTERN}$")
GROUP_NAME = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,39}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?$")


class Role(enum.StrEnum):
    """What a certificate holder is, taken from the path of its SPIFFE id."""

    AGENCY = "agency"
    AUDITOR = "auditor"
    ADMIN = "admin"
    BROKER = "broker"
    WITNESS = "witness"


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """`spiffe://<trust_domain>/<role>/<name>`."""

    trust_domain: str
    role: Role
    name: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}/{self.role.value}/{self.name}"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one RPC."""

    spiffe_id: SpiffeId
    serial: int
    fingerprint: bytes
    certificate_der: bytes
    not_after: dt.datetime

    @property
    def role(self) -> Role:
        """agency, auditor, admin or broker."""
        return self.spiffe_id.role

    @property
    def name(self) -> str:
        """The agency id for agencies, the person or node name otherwise."""
        return self.spiffe_id.name

    def __str__(self) -> str:
        return str(self.spiffe_id)


def validate_agency_id(agency: str) -> None:
    """Raise `ValueError` unless `agency` is a well-formed agency id such as `FR-CUSTOMS`."""
    if not AGENCY_ID.fullmatch(agency):
        raise ValueError(f"{agency!r} is not an agency id (expected e.g. FR-CUSTOMS: {AGENCY_ID.pattern})")


def make_spiffe_id(trust_domain: str, role: Role, name: str) -> SpiffeId:
    """Build a SPIFFE id, refusing names that are malformed for their role."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise ValueError(f"{trust_domain!r} is not a valid trust domain")
    if role is Role.AGENCY:
        validate_agency_id(name)
    elif not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid {role.value} name")
    return SpiffeId(trust_domain, role, name)


def parse_spiffe_id(uri: str, trust_domain: str | None) -> SpiffeId:
    """Parse and check a SPIFFE URI of `trust_domain`; raise `AuthenticationError` otherwise.

    The one SPIFFE id parser of the broker and the SDK (certificates reach it through
    `broker.protocol.certificates.spiffe_id_of`). With `trust_domain` None any well-formed trust
    domain is accepted: for the cheap per-message binding of a sender to the certificate that
    signed, where the certificate's chain and domain are verified elsewhere.
    """
    if trust_domain is None:
        domain, slash, _ = uri.removeprefix("spiffe://").partition("/")
        if not uri.startswith("spiffe://") or not slash:
            raise AuthenticationError(f"identity {uri!r} is not a SPIFFE id (spiffe://<trust domain>/<role>/<name>)")
        trust_domain = domain
    prefix = f"spiffe://{trust_domain}/"
    if not uri.startswith(prefix):
        raise AuthenticationError(f"identity {uri!r} is not in trust domain {trust_domain!r}")
    parts = uri[len(prefix) :].split("/")
    if len(parts) != 2:
        raise AuthenticationError(f"identity {uri!r} is not of the form spiffe://{trust_domain}/<role>/<name>")
    try:
        return make_spiffe_id(trust_domain, Role(parts[0]), parts[1])
    except ValueError as exc:
        raise AuthenticationError(f"identity {uri!r} is malformed: {exc}") from exc
