"""Validation of a policy document: TOML text in, checked agencies, groups and rules out.

Every problem found is collected (not just the first), each prefixed with `source:line:` so the
admin can fix the whole file in one pass; any problem at all raises `PolicyError` and yields no
policy. Unknown keys are errors too: in a security policy a misspelt `recipents` that silently
falls back to a default is worse than a refusal.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from broker.identity import AGENCY_ID, GROUP_NAME
from broker.policy._locate import Locator
from broker.policy.codes import AGENCY_KINDS, COUNTRIES, KINDS, TLP_CODES
from broker.policy.errors import PolicyError
from broker.policy.forwarding import AnyOf, NoForwarding, SameOrganisation, ToAgencies
from broker.policy.justification import FIELDS, Justification, Requirement
from broker.policy.model import Agency, ForwardClause, Rule
from broker.policy.retention import PER_MESSAGE, STORED, Period, PeriodError, Retention, RetentionRule
from broker.protocol.validation import LEGAL_BASIS

EVERYONE: Final = "*"
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$|\s*\(at end of document\)$")

_ROOT_KEYS: Final = frozenset(
    {"version", "description", "agencies", "groups", "rules", "retention", "legal_bases", "justification"}
)
_AGENCY_KEYS: Final = frozenset({"id", "country", "kind", "organisation", "name"})
_GROUP_KEYS: Final = frozenset({"name", "members", "description"})
_RULE_KEYS: Final = frozenset({"name", "description", "senders", "kinds", "handling", "recipients", "forward"})
_JUSTIFICATION_KEYS: Final = frozenset({"kinds", "handling", "require"})
_RETENTION_KEYS: Final = frozenset({"default", "rules", *STORED})
_RETENTION_RULE_KEYS: Final = frozenset({"name", "description", "kinds", "handling", *PER_MESSAGE})
_FORWARD_KEYWORDS: Final = ("none", "same-organisation", "rule-recipients")


@dataclass(frozen=True, slots=True)
class Document:
    """A validated policy document, resolved: group members flattened, rule addresses expanded."""

    agencies: Mapping[str, Agency]
    groups: Mapping[str, frozenset[str]]
    rules: tuple[Rule, ...]
    justification: Justification
    retention: Retention


def _type_name(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _Checker:
    """One validation pass over one document; collects `(line, message)` pairs."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.problems: list[tuple[int, str]] = []
        self._locator = Locator(text)

    def locate(self, table: str = "", index: int = 0, key: str | None = None, value: str | None = None) -> int:
        return self._locator.line(table, index, key, value)

    def error(self, line: int, message: str) -> None:
        self.problems.append((line, message))

    def fail_if_any(self) -> None:
        if self.problems:
            ordered = sorted(self.problems, key=lambda problem: problem[0])  # stable: same line keeps order
            raise PolicyError([f"{self.source}:{line}: {message}" for line, message in ordered])

    # Typed field access -------------------------------------------------------------------------

    def string(
        self, entry: Mapping[str, Any], table: str, index: int, subject: str, key: str, *, required: bool
    ) -> str | None:
        value = entry.get(key)
        if value is None:
            if required:
                self.error(self.locate(table, index), f"{subject}: missing '{key}'")
            return None
        if not isinstance(value, str):
            self.error(
                self.locate(table, index, key),
                f"{subject}: '{key}' must be a string, not {_type_name(value)}",
            )
            return None
        return value

    def strings(
        self, entry: Mapping[str, Any], table: str, index: int, subject: str, key: str, *, required: bool
    ) -> list[str] | None:
        value = entry.get(key)
        if value is None:
            if required:
                self.error(self.locate(table, index), f"{subject}: missing '{key}'")
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.error(self.locate(table, index, key), f"{subject}: '{key}' must be an array of strings")
            return None
        return value

    def tables(self, root: Mapping[str, Any], table: str) -> list[Mapping[str, Any]]:
        value = root.get(table, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.error(self.locate("", 0, table), f"'{table}' must be an array of tables: write [[{table}]]")
            return []
        return value

    def unknown_keys(
        self, entry: Mapping[str, Any], allowed: frozenset[str], table: str, index: int, subject: str
    ) -> None:
        for key in entry:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.error(self.locate(table, index, key), f"{subject}: unknown key '{key}'{suggestion}")


def _toml_syntax_error(exc: tomllib.TOMLDecodeError, text: str, source: str) -> PolicyError:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match is None:
        line = 1
    elif match.group(1) is not None:
        line = int(match.group(1))
        message = message[: match.start()] + f" (column {match.group(2)})"
    else:
        line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        message = message[: match.start()] + " (at end of document)"
    return PolicyError([f"{source}:{line}: TOML syntax error: {message}"])


def parse_document(text: str, source: str) -> Document:
    """Validate `text` as a policy document; raise `PolicyError` listing every problem with its line."""
    try:
        root = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_syntax_error(exc, text, source) from exc
    check = _Checker(text, source)
    check.unknown_keys(root, _ROOT_KEYS, "", 0, "policy")
    version = root.get("version", 1)
    if version != 1 or isinstance(version, bool):
        check.error(check.locate("", 0, "version"), f"policy: unsupported version {version!r} (expected 1)")
    agencies = _agencies(check, root)
    groups = _groups(check, root, agencies)
    rules = _rules(check, root, agencies, groups)
    retention = _retention(check, root)
    justification = _justification(check, root)
    check.fail_if_any()
    return Document(agencies=agencies, groups=groups, rules=rules, retention=retention, justification=justification)


def _agencies(check: _Checker, root: Mapping[str, Any]) -> dict[str, Agency]:
    agencies: dict[str, Agency] = {}
    first_line: dict[str, int] = {}
    for index, entry in enumerate(check.tables(root, "agencies")):
        raw_id = entry.get("id")
        subject = f"agency '{raw_id}'" if isinstance(raw_id, str) else f"agency #{index + 1}"
        check.unknown_keys(entry, _AGENCY_KEYS, "agencies", index, subject)
        agency_id = check.string(entry, "agencies", index, subject, "id", required=True)
        country = check.string(entry, "agencies", index, subject, "country", required=True)
        kind = check.string(entry, "agencies", index, subject, "kind", required=True)
        organisation = check.string(entry, "agencies", index, subject, "organisation", required=False)
        name = check.string(entry, "agencies", index, subject, "name", required=False)
        ok = agency_id is not None and country is not None and kind is not None
        if agency_id is not None and not AGENCY_ID.fullmatch(agency_id):
            check.error(
                check.locate("agencies", index, "id"),
                f"{subject}: not an agency id (expected e.g. FR-CUSTOMS: {AGENCY_ID.pattern})",
            )
            ok = False
        if agency_id is not None and agency_id in first_line:
            check.error(
                check.locate("agencies", index, "id"),
                f"{subject}: defined twice (first at line {first_line[agency_id]})",
            )
            ok = False
        if country is not None and country not in COUNTRIES:
            hint = " (the ISO code of the United Kingdom is GB)" if country.upper() == "UK" else ""
            check.error(
                check.locate("agencies", index, "country"),
                f"{subject}: country '{country}' is not an ISO 3166-1 alpha-2 code{hint}",
            )
            ok = False
        if kind is not None and kind not in AGENCY_KINDS:
            check.error(
                check.locate("agencies", index, "kind"),
                f"{subject}: unknown kind '{kind}' (expected one of {', '.join(AGENCY_KINDS)})",
            )
            ok = False
        if organisation is not None and not organisation.strip():
            check.error(check.locate("agencies", index, "organisation"), f"{subject}: empty organisation")
            ok = False
        if agency_id is not None:
            first_line.setdefault(agency_id, check.locate("agencies", index, "id"))
        if ok and agency_id is not None and country is not None and kind is not None:
            agencies[agency_id] = Agency(
                id=agency_id,
                country=country,
                kind=kind,
                organisation=organisation if organisation else agency_id,
                name=name or "",
            )
    return agencies


def _unknown_address(address: str, agencies: Mapping[str, Any], groups: Mapping[str, Any], within: str = "") -> str:
    """Say "unknown group 'EU-CUSTOM' (did you mean 'EU-CUSTOMS'?)", guessing what was meant.

    The cutoff is high on purpose: FR-CUSTOMS and EU-CUSTOMS are different things, and a wrong
    suggestion is worse than none. `within` (the group being defined) is never suggested.
    """
    names = [name for name in (*groups, *agencies) if name != within]
    best = difflib.get_close_matches(address, names, n=1, cutoff=0.85)
    if not best:
        return f"unknown agency or group '{address}'"
    what = "group" if best[0] in groups else "agency"
    return f"unknown {what} '{address}' (did you mean '{best[0]}'?)"


def _groups(check: _Checker, root: Mapping[str, Any], agencies: Mapping[str, Agency]) -> dict[str, frozenset[str]]:
    entries = check.tables(root, "groups")
    # First pass: names, so that members may name groups defined further down.
    declared: dict[str, tuple[int, list[str]]] = {}
    for index, entry in enumerate(entries):
        raw_name = entry.get("name")
        subject = f"group '{raw_name}'" if isinstance(raw_name, str) else f"group #{index + 1}"
        check.unknown_keys(entry, _GROUP_KEYS, "groups", index, subject)
        check.string(entry, "groups", index, subject, "description", required=False)
        name = check.string(entry, "groups", index, subject, "name", required=True)
        members = check.strings(entry, "groups", index, subject, "members", required=True)
        if name is None:
            continue
        if not GROUP_NAME.fullmatch(name):
            check.error(
                check.locate("groups", index, "name"),
                f"{subject}: not a group name (expected e.g. EU-CUSTOMS: {GROUP_NAME.pattern})",
            )
            continue
        if name in agencies:
            # One namespace: a recipient address must mean one thing.
            check.error(check.locate("groups", index, "name"), f"{subject}: an agency has this id already")
            continue
        if name in declared:
            first = check.locate("groups", declared[name][0], "name")
            check.error(check.locate("groups", index, "name"), f"{subject}: defined twice (first at line {first})")
            continue
        declared[name] = (index, members if members is not None else [])
    # Second pass: check members, then flatten nested groups, refusing cycles.
    for name, (index, members) in declared.items():
        seen: set[str] = set()
        for member in members:
            line = check.locate("groups", index, "members", member)
            if member == EVERYONE:
                check.error(line, f"group '{name}': '*' cannot be a member; list the agencies")
            elif member not in agencies and member not in declared:
                check.error(line, f"group '{name}': {_unknown_address(member, agencies, declared, name)}")
            elif member == name:
                check.error(line, f"group '{name}': a group cannot contain itself")
            elif member in seen:
                check.error(line, f"group '{name}': member '{member}' listed twice")
            seen.add(member)
    flat: dict[str, frozenset[str]] = {}

    def flatten(name: str, path: tuple[str, ...]) -> frozenset[str]:
        if name in flat:
            return flat[name]
        index, members = declared[name]
        result: set[str] = set()
        for member in members:
            if member in agencies:
                result.add(member)
            elif member in declared and member != name:
                if member in path:
                    cycle = " -> ".join((*path[path.index(member) :], member))
                    check.error(
                        check.locate("groups", index, "members", member),
                        f"group '{name}': membership cycle {cycle}",
                    )
                    continue
                result |= flatten(member, (*path, member))
        flat[name] = frozenset(result)
        return flat[name]

    for name in declared:
        flatten(name, (name,))
    return flat


def _resolve(
    check: _Checker,
    *,
    addresses: list[str],
    agencies: Mapping[str, Agency],
    groups: Mapping[str, frozenset[str]],
    index: int,
    key: str,
    subject: str,
) -> frozenset[str] | None:
    """The agency ids a list of agency ids, group names and `*` stands for (None on error)."""
    result: set[str] = set()
    ok = True
    for address in addresses:
        if address == EVERYONE:
            result |= agencies.keys()
        elif address in agencies:
            result.add(address)
        elif address in groups:
            result |= groups[address]
        else:
            check.error(
                check.locate("rules", index, key, address),
                f"{subject}: '{key}': {_unknown_address(address, agencies, groups)}",
            )
            ok = False
    return frozenset(result) if ok else None


def _forward(
    check: _Checker,
    *,
    entry: Mapping[str, Any],
    agencies: Mapping[str, Agency],
    groups: Mapping[str, frozenset[str]],
    index: int,
    subject: str,
    recipient_set: frozenset[str] | None,
    recipients: list[str],
) -> ForwardClause | None:
    raw = entry.get("forward", "none")
    items: list[str]
    if isinstance(raw, str):
        items = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        items = raw
    else:
        check.error(
            check.locate("rules", index, "forward"),
            f"{subject}: 'forward' must be one of {', '.join(_FORWARD_KEYWORDS)} or a non-empty array of "
            "those keywords, agency ids and group names",
        )
        return None
    if "none" in items:
        if len(items) > 1:
            check.error(check.locate("rules", index, "forward", "none"), f"{subject}: 'none' cannot be combined")
            return None
        return NoForwarding()
    clauses: list[ForwardClause] = []
    targets = [item for item in items if item not in _FORWARD_KEYWORDS]
    if "same-organisation" in items:
        clauses.append(SameOrganisation())
    if "rule-recipients" in items and recipient_set is not None:
        clauses.append(ToAgencies(recipient_set, f"the rule's recipients ({', '.join(recipients)})"))
    if targets:
        resolved = _resolve(
            check,
            addresses=targets,
            agencies=agencies,
            groups=groups,
            index=index,
            key="forward",
            subject=subject,
        )
        if resolved is None:
            return None
        clauses.append(ToAgencies(resolved, ", ".join(targets)))
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else AnyOf(tuple(clauses))


def _handling(
    check: _Checker, values: list[str], index: int, subject: str, table: str = "rules"
) -> frozenset[str] | None:
    """TLP codes, where `"CLEAR..AMBER"` stands for the codes from CLEAR up to AMBER."""
    result: set[str] = set()
    ok = True
    for value in values:
        low, sep, high = value.partition("..")
        ends = (low, high) if sep else (value,)
        bad = [end for end in ends if end not in TLP_CODES]
        if bad:
            hint = " (TLP 2.0 renamed WHITE to CLEAR)" if "WHITE" in (b.upper() for b in bad) else ""
            check.error(
                check.locate(table, index, "handling", value),
                f"{subject}: unknown handling code '{bad[0]}' (expected one of {', '.join(TLP_CODES)}){hint}",
            )
            ok = False
            continue
        if sep:
            start, stop = TLP_CODES.index(low), TLP_CODES.index(high)
            if start > stop:
                check.error(
                    check.locate(table, index, "handling", value),
                    f"{subject}: handling range '{value}' runs backwards (write {high}..{low})",
                )
                ok = False
                continue
            result.update(TLP_CODES[start : stop + 1])
        else:
            result.add(value)
    return frozenset(result) if ok else None


def _rules(
    check: _Checker,
    root: Mapping[str, Any],
    agencies: Mapping[str, Agency],
    groups: Mapping[str, frozenset[str]],
) -> tuple[Rule, ...]:
    first_line: dict[str, int] = {}
    rules = (
        _rule(check, entry, index, agencies, groups, first_line)
        for index, entry in enumerate(check.tables(root, "rules"))
    )
    return tuple(rule for rule in rules if rule is not None)


def _rule(
    check: _Checker,
    entry: Mapping[str, Any],
    index: int,
    agencies: Mapping[str, Agency],
    groups: Mapping[str, frozenset[str]],
    first_line: dict[str, int],
) -> Rule | None:
    """One `[[rules]]` table, or None after reporting every error in it (all of them, not the first)."""
    raw_name = entry.get("name")
    subject = f"rule '{raw_name}'" if isinstance(raw_name, str) else f"rule #{index + 1}"
    check.unknown_keys(entry, _RULE_KEYS, "rules", index, subject)
    name = check.string(entry, "rules", index, subject, "name", required=True)
    description = check.string(entry, "rules", index, subject, "description", required=False)
    name = _unique_rule_name(check, name, index, subject, first_line)
    lists = _rule_lists(check, entry, index, subject)
    kinds = _kinds(check, lists.get("kinds", []), "rules", index, subject)
    handling = _handling(check, lists.get("handling", []), index, subject)
    sender_set, recipient_set = (
        _resolve(
            check,
            addresses=lists.get(key, []),
            agencies=agencies,
            groups=groups,
            index=index,
            key=key,
            subject=subject,
        )
        for key in ("senders", "recipients")
    )
    forward = _forward(
        check,
        entry=entry,
        agencies=agencies,
        groups=groups,
        index=index,
        subject=subject,
        recipient_set=recipient_set,
        recipients=lists.get("recipients", []),
    )
    if (
        name is None
        or len(lists) < len(_RULE_LISTS)
        or kinds is None
        or handling is None
        or sender_set is None
        or recipient_set is None
        or forward is None
    ):
        return None
    return Rule(
        name=name,
        senders=tuple(lists["senders"]),
        kinds=kinds,
        handling=handling,
        recipients=tuple(lists["recipients"]),
        forward=forward,
        line=check.locate("rules", index),
        sender_set=sender_set,
        recipient_set=recipient_set,
        description=description or "",
    )


def _unique_rule_name(
    check: _Checker, name: str | None, index: int, subject: str, first_line: dict[str, int]
) -> str | None:
    """`name` if it is a valid rule name not used by an earlier rule (`first_line`: names seen so far)."""
    if name is None:
        return None
    line = check.locate("rules", index, "name")
    if not _RULE_NAME.fullmatch(name):
        check.error(line, f"{subject}: not a rule name (letters, digits, '.', '_', '-'; up to 64)")
        return None
    if name in first_line:
        check.error(line, f"{subject}: duplicate rule name (first at line {first_line[name]})")
        return None
    first_line[name] = line
    return name


_RULE_LISTS: Final = ("senders", "kinds", "handling", "recipients")


def _rule_lists(check: _Checker, entry: Mapping[str, Any], index: int, subject: str) -> dict[str, list[str]]:
    """The rule's required lists that are present and not empty (an empty one would allow nothing)."""
    lists: dict[str, list[str]] = {}
    for key in _RULE_LISTS:
        values = check.strings(entry, "rules", index, subject, key, required=True)
        if values is not None and not values:
            check.error(check.locate("rules", index, key), f"{subject}: '{key}' is empty, so the rule allows nothing")
        elif values is not None:
            lists[key] = values
    return lists


def _kinds(check: _Checker, values: list[str], table: str, index: int, subject: str) -> frozenset[str] | None:
    bad = [kind for kind in values if kind not in KINDS]
    for kind in bad:
        check.error(
            check.locate(table, index, "kinds", kind),
            f"{subject}: unknown kind '{kind}' (expected one of {', '.join(KINDS)})",
        )
    return None if bad else frozenset(values)


def _justification(check: _Checker, root: Mapping[str, Any]) -> Justification:
    """`legal_bases` (the accepted codes) and the `[[justification]]` requirements."""
    codes = check.strings(root, "", 0, "policy", "legal_bases", required=False) or []
    for code in codes:
        if not LEGAL_BASIS.fullmatch(code):
            check.error(
                check.locate("", 0, "legal_bases", code),
                f"policy: legal basis '{code}' is not a code (1 to 32 of A-Z 0-9 . _ -)",
            )
    if len(set(codes)) != len(codes):
        check.error(check.locate("", 0, "legal_bases"), "policy: 'legal_bases' lists a code twice")
    requirements: list[Requirement] = []
    for index, entry in enumerate(check.tables(root, "justification")):
        subject = f"justification #{index + 1}"
        check.unknown_keys(entry, _JUSTIFICATION_KEYS, "justification", index, subject)
        kinds = check.strings(entry, "justification", index, subject, "kinds", required=False)
        handling = check.strings(entry, "justification", index, subject, "handling", required=False)
        fields = check.strings(entry, "justification", index, subject, "require", required=True) or []
        unknown = [f for f in fields if f not in FIELDS]
        for name in unknown:
            check.error(
                check.locate("justification", index, "require", name),
                f"{subject}: unknown field '{name}' (expected {' or '.join(FIELDS)})",
            )
        if not fields:
            check.error(check.locate("justification", index, "require"), f"{subject}: 'require' names no field")
        kind_set = frozenset(KINDS) if kinds is None else _kinds(check, kinds, "justification", index, subject)
        tlp_set = (
            frozenset(TLP_CODES) if handling is None else _handling(check, handling, index, subject, "justification")
        )
        if kind_set is not None and tlp_set is not None and fields and not unknown:
            requirements.append(
                Requirement(kind_set, tlp_set, tuple(dict.fromkeys(fields)), check.locate("justification", index))
            )
    return Justification(tuple(codes), tuple(requirements))


def _periods(
    check: _Checker, entry: Mapping[str, Any], keys: tuple[str, ...], table: str, index: int, subject: str
) -> dict[str, Period]:
    """The periods `entry` sets for `keys`; each bad one is an error naming its key."""
    periods: dict[str, Period] = {}
    for key in keys:
        value = check.string(entry, table, index, subject, key, required=False)
        if value is None:
            continue
        try:
            periods[key] = Period.parse(value)
        except PeriodError as exc:
            check.error(check.locate(table, index, key), f"{subject}: '{key}': {exc}")
    return periods


def _retention(check: _Checker, root: Mapping[str, Any]) -> Retention:
    section = root.get("retention", {})
    if not isinstance(section, dict):
        check.error(check.locate("", 0, "retention"), "'retention' must be a table: write [retention]")
        return Retention(periods={})
    check.unknown_keys(section, _RETENTION_KEYS, "retention", 0, "retention")
    periods = _periods(check, section, ("default", *STORED), "retention", 0, "retention")
    rules: list[RetentionRule] = []
    names: set[str] = set()
    for index, entry in enumerate(check.tables(section, "rules")):
        raw_name = entry.get("name")
        subject = f"retention rule '{raw_name}'" if isinstance(raw_name, str) else f"retention rule #{index + 1}"
        table = "retention.rules"
        check.unknown_keys(entry, _RETENTION_RULE_KEYS, table, index, subject)
        check.string(entry, table, index, subject, "description", required=False)
        name = check.string(entry, table, index, subject, "name", required=True)
        ok = name is not None
        if name is not None and (not _RULE_NAME.fullmatch(name) or name in names):
            why = (
                "duplicate rule name" if name in names else "not a rule name (letters, digits, '.', '_', '-'; up to 64)"
            )
            check.error(check.locate(table, index, "name"), f"{subject}: {why}")
            ok = False
        kinds = check.strings(entry, table, index, subject, "kinds", required=False) or []
        for kind in kinds:
            if kind not in KINDS:
                check.error(
                    check.locate(table, index, "kinds", kind),
                    f"{subject}: unknown kind '{kind}' (expected one of {', '.join(KINDS)})",
                )
                ok = False
        handling = _handling(
            check, check.strings(entry, table, index, subject, "handling", required=False) or [], index, subject, table
        )
        rule_periods = _periods(check, entry, PER_MESSAGE, table, index, subject)
        if not rule_periods and not any(key in entry for key in PER_MESSAGE):
            check.error(check.locate(table, index), f"{subject}: sets no period (give one of {', '.join(PER_MESSAGE)})")
            ok = False
        if ok and name is not None and handling is not None:
            names.add(name)
            rules.append(RetentionRule(name, frozenset(kinds), handling, rule_periods))
    return Retention(periods=periods, rules=tuple(rules))
