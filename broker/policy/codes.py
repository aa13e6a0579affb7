"""Message kinds, TLP 2.0 handling codes and agency kinds, as the policy names them.

The policy speaks in the names an admin reads (`ALERT`, `AMBER+STRICT`), the wire in protobuf enums
(`envelope_pb2.ALERT`, `envelope_pb2.TLP_AMBER_STRICT`); both meet here.
"""

from __future__ import annotations

from typing import Final

from broker.errors import InvalidRequest

#: Message kinds, in the order of `isb.v1.Kind` (a unit test keeps the two in step).
KINDS: Final[tuple[str, ...]] = ("ALERT", "REQUEST", "REPLY", "WATCHLIST_UPDATE", "HIT_REPORT", "RECALL")

#: TLP 2.0 codes from least to most restrictive, in the order of `isb.v1.Tlp`.
TLP_CODES: Final[tuple[str, ...]] = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")

#: Codes that TLP 2.0 confines to the recipient's organisation (AMBER+STRICT) or to the named
#: recipients themselves (RED); the broker never lets either leave the forwarder's organisation.
ORGANISATION_BOUND: Final[frozenset[str]] = frozenset({"AMBER+STRICT", "RED"})

#: What an agency is, in the policy's `kind` field.
AGENCY_KINDS: Final[tuple[str, ...]] = (
    "customs",
    "police",
    "border_guard",
    "financial_intelligence",
    "international_organisation",
)

# ISO 3166-1 alpha-2 assigned codes (from Debian iso-codes 3166-1), plus the exceptionally reserved
# EU and UN, which international organisations such as Europol use as their "country".
COUNTRIES: Final[frozenset[str]] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT
    BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH
    ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT
    HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS
    LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI
    NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG
    SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
    UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    EU UN
    """.split()  # noqa: SIM905 - a block of codes is easier to check against the standard than 251 literals
)

_TLP_ALIASES: Final[dict[str, str]] = {
    **{code: code for code in TLP_CODES},
    **{"TLP:" + code: code for code in TLP_CODES},
    **{"TLP_" + code.replace("+", "_"): code for code in TLP_CODES},
    "AMBER_STRICT": "AMBER+STRICT",
    "WHITE": "CLEAR",  # TLP 1.0 name, still common in agency tooling
    "TLP:WHITE": "CLEAR",
}


def tlp_code(value: str) -> str:
    """The canonical TLP code for `value` (`amber+strict`, `TLP:AMBER+STRICT`, `TLP_AMBER_STRICT`).

    Raises `InvalidRequest` for anything else, including the unspecified enum value.
    """
    code = _TLP_ALIASES.get(value.strip().upper())
    if code is None:
        raise InvalidRequest(f"unknown handling code {value!r} (expected one of {', '.join(TLP_CODES)})")
    return code


def kind_name(value: str) -> str:
    """The canonical kind name for `value` (case-insensitive); raises `InvalidRequest` otherwise."""
    name = value.strip().upper()
    if name not in KINDS:
        raise InvalidRequest(f"unknown message kind {value!r} (expected one of {', '.join(KINDS)})")
    return name


def tlp_from_proto(value: int) -> str:
    """The TLP code of an `isb.v1.Tlp` enum value; raises `InvalidRequest` for unspecified/unknown."""
    if not 1 <= value <= len(TLP_CODES):
        raise InvalidRequest(f"handling code {value} is unspecified or unknown")
    return TLP_CODES[value - 1]


def kind_from_proto(value: int) -> str:
    """The kind name of an `isb.v1.Kind` enum value; raises `InvalidRequest` for unspecified/unknown."""
    if not 1 <= value <= len(KINDS):
        raise InvalidRequest(f"message kind {value} is unspecified or unknown")
    return KINDS[value - 1]
