"""The justification a disclosure or consultation must carry (docs/protocol.md section 22, Justification).

Law enforcement logs must show why data was disclosed or consulted (Directive 2016/680 Art. 25):
the policy lists the legal-basis codes a deployment accepts (`legal_bases`) and, per kind and
handling code, which justification fields a send must carry (`[[justification]]`). The broker
checks both before it stores anything; a refusal names the field and the accepted codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from broker.errors import InvalidRequest

#: The justification fields a `[[justification]]` requirement may name.
FIELDS: Final[tuple[str, ...]] = ("legal_basis", "case_reference")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One `[[justification]]` entry: sends of these kinds at these handling codes carry these fields."""

    kinds: frozenset[str]
    handling: frozenset[str]
    fields: tuple[str, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Justification:
    """The accepted legal-basis codes and the requirements, as the policy document states them."""

    legal_bases: tuple[str, ...] = ()
    requirements: tuple[Requirement, ...] = ()

    def check_code(self, legal_basis: str, field: str) -> None:
        """An empty code, or one of `legal_bases`; raise `InvalidRequest` listing the accepted codes."""
        if not legal_basis or legal_basis in self.legal_bases:
            return
        if not self.legal_bases:
            raise InvalidRequest(
                f"{field} {legal_basis!r} is not accepted: the policy lists no legal-basis codes "
                "(an admin adds them as `legal_bases`)"
            )
        raise InvalidRequest(
            f"{field} {legal_basis!r} is not an accepted legal-basis code; accepted: {', '.join(self.legal_bases)}"
        )

    def check_send(self, kind: str, tlp: str, values: dict[str, str], prefix: str = "header.") -> None:
        """The fields a send of `kind` at `tlp` must carry are present and its code is accepted."""
        for requirement in self.requirements:
            if kind in requirement.kinds and tlp in requirement.handling:
                for name in requirement.fields:
                    if not values.get(name):
                        raise InvalidRequest(
                            f"{prefix}{name} is required for {kind} at {tlp} by the policy (justification "
                            f"requirement at line {requirement.line}); pass it (`isb send "
                            f"--{name.replace('_', '-').replace('reference', 'ref')}`)"
                        )
        self.check_code(values.get("legal_basis", ""), f"{prefix}legal_basis")


__all__ = ["FIELDS", "Justification", "Requirement"]
