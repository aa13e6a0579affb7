"""C2SP tlog-policy files (https://c2sp.org/tlog-policy) and checking a checkpoint against one.

A policy lists the logs trusted (`log <vkey> [<url>]`), the witnesses (`witness <name> <vkey>
[<url>]`), groups (`group <name> all|any|<k> <member>...`) and exactly one `quorum <name>` (or
`quorum none`). Items are separated by ASCII spaces and tabs; blank and `#` comment lines are
ignored; a group or the quorum may only name witnesses and groups defined on earlier lines; a name
is a member of a group at most once; duplicate keys (same public key) are refused. The allowed
octets are 0x09, 0x0A, 0x20-0x7E and 0x80-0xFF; non-ASCII octets in names are opaque.

`verify_checkpoint_against_policy` accepts a checkpoint note only if it is signed by one of the
logs (the log's key name is its origin) and cosigned (tlog-cosignature/v1) by witnesses that
satisfy the quorum.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.protocol import _cosignature, _note
from broker.protocol.errors import ProtocolError, VerificationError

__all__ = [
    "Group",
    "LogKey",
    "Policy",
    "PolicyVerdict",
    "WitnessEntry",
    "load_policy",
    "parse_policy",
    "verify_checkpoint_against_policy",
]

NONE = "none"
_MAX_POLICY_BYTES = 1 << 20
_MAX_ITEMS = 1024
_FORBIDDEN = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_WHITESPACE = re.compile(r"[ \t]+")
_DECIMAL = re.compile(r"[1-9][0-9]{0,8}")


@dataclass(frozen=True, slots=True)
class LogKey:
    """A trusted log: its origin (the vkey's key name), its Ed25519 key, an optional URL."""

    origin: str
    public_key: Ed25519PublicKey
    url: str | None = None


@dataclass(frozen=True, slots=True)
class WitnessEntry:
    """A witness: its policy-local name, its cosigner identity, an optional submission URL."""

    name: str
    cosigner: _cosignature.Cosigner
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """`threshold` of `members` (witness or group names) must have witnessed."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed tlog-policy."""

    logs: tuple[LogKey, ...]
    witnesses: Mapping[str, WitnessEntry]
    groups: Mapping[str, Group]
    quorum: str

    def satisfied(self, cosigned: set[str]) -> bool:
        """Whether the witnesses named in `cosigned` (policy names) meet the quorum."""
        return self._witnessed(self.quorum, cosigned)

    def _witnessed(self, name: str, cosigned: set[str]) -> bool:
        if name == NONE:
            return True
        group = self.groups.get(name)
        if group is None:
            return name in cosigned
        return sum(self._witnessed(member, cosigned) for member in group.members) >= group.threshold

    def describe_quorum(self) -> str:
        """The quorum in words, for error messages."""
        if self.quorum == NONE:
            return "no cosignature"
        group = self.groups.get(self.quorum)
        if group is None:
            return f"a cosignature from witness {self.quorum!r}"
        return f"group {group.name!r}: {group.threshold} of {', '.join(group.members)}"


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    """A checkpoint the policy accepts, with the witnesses whose cosignature verified."""

    checkpoint: _note.Checkpoint
    cosigned: Mapping[str, int] = field(default_factory=dict)
    """Policy witness name -> cosignature timestamp."""


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class _Builder:
    """The policy so far, one method per line kind."""

    def __init__(self) -> None:
        self.logs: list[LogKey] = []
        self.witnesses: dict[str, WitnessEntry] = {}
        self.groups: dict[str, Group] = {}
        self.keys_seen: set[bytes] = set()
        self.quorum: str | None = None

    def _key(self, raw: bytes, line_no: int) -> None:
        if raw in self.keys_seen:
            raise ProtocolError(f"policy line {line_no}: duplicate key")
        self.keys_seen.add(raw)

    def _new_name(self, name: str, line_no: int) -> None:
        if name == NONE or name in self.witnesses or name in self.groups:
            raise ProtocolError(f"policy line {line_no}: the name {name[:40]!r} is reserved or already defined")

    def _defined(self, name: str) -> bool:
        return name in self.witnesses or name in self.groups

    def log(self, args: list[str], line_no: int) -> None:
        if not 1 <= len(args) <= 2:
            raise ProtocolError(f"policy line {line_no}: `log <vkey> [<url>]`")
        try:
            origin, public_key = _note.parse_vkey(_text(args[0], line_no))
        except ProtocolError as exc:
            raise ProtocolError(f"policy line {line_no}: {exc}") from exc
        self._key(_raw(public_key), line_no)
        self.logs.append(LogKey(origin, public_key, args[1] if len(args) == 2 else None))

    def witness(self, args: list[str], line_no: int) -> None:
        if not 2 <= len(args) <= 3:
            raise ProtocolError(f"policy line {line_no}: `witness <name> <vkey> [<url>]`")
        name = args[0]
        self._new_name(name, line_no)
        try:
            cosigner = _cosignature.parse_cosigner_vkey(_text(args[1], line_no))
        except ProtocolError as exc:
            raise ProtocolError(f"policy line {line_no}: {exc}") from exc
        self._key(cosigner.raw_public_key, line_no)
        self.witnesses[name] = WitnessEntry(name, cosigner, args[2] if len(args) == 3 else None)

    def group(self, args: list[str], line_no: int) -> None:
        if len(args) < 3:
            raise ProtocolError(f"policy line {line_no}: `group <name> all|any|<k> <member>...`")
        name, k_text, members = args[0], args[1], tuple(args[2:])
        self._new_name(name, line_no)
        for member in members:
            if not self._defined(member):
                raise ProtocolError(f"policy line {line_no}: group member {member[:40]!r} is not defined above")
        if len(set(members)) != len(members):
            raise ProtocolError(f"policy line {line_no}: a group lists a member more than once")
        if k_text == "all":
            k = len(members)
        elif k_text == "any":
            k = 1
        elif _DECIMAL.fullmatch(k_text) and 1 <= int(k_text) <= len(members):
            k = int(k_text)
        else:
            raise ProtocolError(
                f"policy line {line_no}: threshold {k_text[:20]!r} is not all, any or 1..{len(members)}"
            )
        self.groups[name] = Group(name, k, members)

    def set_quorum(self, args: list[str], line_no: int) -> None:
        if len(args) != 1:
            raise ProtocolError(f"policy line {line_no}: `quorum <name>`")
        if self.quorum is not None:
            raise ProtocolError(f"policy line {line_no}: a second quorum line")
        if args[0] != NONE and not self._defined(args[0]):
            raise ProtocolError(f"policy line {line_no}: quorum {args[0][:40]!r} is not defined above")
        self.quorum = args[0]

    def count(self) -> int:
        return len(self.logs) + len(self.witnesses) + len(self.groups)


def parse_policy(data: bytes) -> Policy:
    """Parse a policy file; `ProtocolError` names the first offending line."""
    if len(data) > _MAX_POLICY_BYTES:
        raise ProtocolError("policy file is larger than 1 MiB")
    bad = _FORBIDDEN.search(data)
    if bad is not None:
        raise ProtocolError(f"policy holds the forbidden octet 0x{data[bad.start()]:02x}")
    # Octets >= 0x80 are opaque: surrogateescape keeps them distinct and round-trips them.
    text = data.decode("utf-8", errors="surrogateescape")
    builder = _Builder()
    handlers = {"log": builder.log, "witness": builder.witness, "group": builder.group, "quorum": builder.set_quorum}
    for line_no, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip(" \t")
        if not line or line.startswith("#"):
            continue
        if builder.count() >= _MAX_ITEMS:
            raise ProtocolError(f"policy defines more than {_MAX_ITEMS} logs, witnesses and groups")
        fields = _WHITESPACE.split(line)
        handler = handlers.get(fields[0])
        if handler is None:
            raise ProtocolError(f"policy line {line_no}: unknown keyword {fields[0][:40]!r}")
        handler(fields[1:], line_no)
    if builder.quorum is None:
        raise ProtocolError("policy has no quorum line")
    return Policy(tuple(builder.logs), builder.witnesses, builder.groups, builder.quorum)


def _text(item: str, line_no: int) -> str:
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError(f"policy line {line_no}: a verifier key is not UTF-8") from exc
    return item


def load_policy(path: Path) -> Policy:
    """Read and parse a policy file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProtocolError(f"cannot read the witness policy {path}: {exc.strerror}") from exc
    try:
        return parse_policy(data)
    except ProtocolError as exc:
        raise ProtocolError(f"witness policy {path}: {exc}") from exc


def verify_checkpoint_against_policy(note: bytes, policy: Policy, *, origin: str | None = None) -> PolicyVerdict:
    """Accept `note` only if a policy log signed it and the policy's quorum of witnesses cosigned it.

    `origin`, if given, is the log the caller expects. Raises `VerificationError` saying what is
    missing: no trusted log signature, or which cosignatures verified and what the quorum needs.
    """
    candidates = [log for log in policy.logs if origin is None or log.origin == origin]
    if not candidates:
        raise VerificationError(f"the witness policy trusts no log {origin!r}")
    checkpoint: _note.Checkpoint | None = None
    errors: list[str] = []
    for log in candidates:
        try:
            checkpoint = _note.verify_checkpoint(note, log.origin, log.public_key)
        except VerificationError as exc:
            errors.append(str(exc))
            continue
        if checkpoint.origin != log.origin:
            raise VerificationError(f"checkpoint origin {checkpoint.origin!r} is not its log's key name {log.origin!r}")
        break
    if checkpoint is None:
        raise VerificationError(f"checkpoint is not signed by a log of the witness policy ({'; '.join(errors)})")
    found = _cosignature.verify_cosignatures(note, [entry.cosigner for entry in policy.witnesses.values()])
    cosigned = {
        entry.name: found[(entry.cosigner.name, entry.cosigner.key_id)]
        for entry in policy.witnesses.values()
        if (entry.cosigner.name, entry.cosigner.key_id) in found
    }
    if not policy.satisfied(set(cosigned)):
        have = ", ".join(sorted(cosigned)) or "none"
        raise VerificationError(
            f"checkpoint of size {checkpoint.size} lacks the witness quorum: it needs {policy.describe_quorum()};"
            f" valid cosignatures from: {have}"
        )
    return PolicyVerdict(checkpoint, cosigned)
