"""The example policies validate, and the dev policy lets the dev agencies work together."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from broker.policy import KINDS, TLP_CODES, Policy

DEV_AGENCIES = ("FR-CUSTOMS", "DE-BKA", "NL-FIOD")


@pytest.fixture(scope="module")
def dev_policy(examples_dir: Path) -> Policy:
    """examples/policy-dev.toml, parsed."""
    return Policy.parse((examples_dir / "policy-dev.toml").read_text(encoding="utf-8"), "policy-dev.toml")


def test_example_policy_validates(examples_dir: Path) -> None:
    """examples/policy.toml is a valid policy with the three groups of the issue."""
    policy = Policy.parse((examples_dir / "policy.toml").read_text(encoding="utf-8"), "policy.toml")
    assert {"EU-CUSTOMS", "G7-CT", "ARCHEO-EXPERTS"} <= set(policy.groups)


def test_dev_agencies_exchange_every_kind_up_to_amber_strict(dev_policy: Policy) -> None:
    """Each dev agency may send every kind at CLEAR..AMBER+STRICT to each other one."""
    for sender, recipient in itertools.permutations(DEV_AGENCIES, 2):
        for kind, tlp in itertools.product(KINDS, TLP_CODES[:4]):
            assert dev_policy.decide_send(sender, kind, tlp, [recipient]).allowed, (sender, recipient, kind, tlp)


def test_dev_agencies_send_red_to_named_agencies(dev_policy: Policy) -> None:
    """RED between dev agencies is allowed when the recipients are named."""
    for sender in DEV_AGENCIES:
        others = [a for a in DEV_AGENCIES if a != sender]
        for kind in KINDS:
            assert dev_policy.decide_send(sender, kind, "RED", others).allowed


def test_dev_red_to_a_group_is_refused(dev_policy: Policy) -> None:
    """Even the permissive dev policy cannot send RED to a group."""
    decision = dev_policy.decide_send("FR-CUSTOMS", "ALERT", "RED", ["ARCHEO-EXPERTS"])
    assert (decision.allowed, decision.rule) == (False, "builtin:red-to-named-agencies-only")


def test_dev_groups_reach_their_members(dev_policy: Policy) -> None:
    """An AMBER alert to G7-CT from FR-CUSTOMS reaches DE-BKA."""
    decision = dev_policy.decide_send("FR-CUSTOMS", "ALERT", "AMBER", ["G7-CT"])
    assert (decision.allowed, decision.expanded) == (True, ("DE-BKA",))


def test_production_template_validates_and_is_narrower_than_dev(examples_dir: Path) -> None:
    """examples/policy-production.toml is valid, forwards nothing and stops at AMBER for groups."""
    policy = Policy.parse(
        (examples_dir / "policy-production.toml").read_text(encoding="utf-8"), "policy-production.toml"
    )
    assert policy.decide_send("AT-ZOLL", "ALERT", "AMBER", ["CUSTOMS-POLICE"]).allowed
    assert not policy.decide_send("AT-ZOLL", "ALERT", "AMBER+STRICT", ["BE-FEDPOL"]).allowed
    assert not policy.decide_send("AT-ZOLL", "WATCHLIST_UPDATE", "GREEN", ["BE-FEDPOL"]).allowed
