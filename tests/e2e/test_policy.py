"""Issue 8 over real mTLS: the broker enforces the sharing policy on every send and forward, explains
it to the agencies it binds, and takes a new policy without restart (refusing an invalid one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest

from broker.api.v1 import admin_pb2, admin_pb2_grpc, envelope_pb2
from broker.pki.dev import DevPki
from broker.protocol.forwarding import FORWARDED_CONTENT_TYPE, forwarded_content
from clients import AgencyClient, RemoteError
from clients.cli import main as isb
from tests.e2e.broker_support import Database, RunningBroker
from tests.e2e.pki_support import extended_pki

TABLE_POLICY = Path(__file__).with_name("policies") / "table.toml"
EXTRA = {"FR-DNRED": "FR", "IT-TPC": "IT", "INT-INTERPOL": "FR", "US-CBP": "US"}
AGENCIES = ("FR-CUSTOMS", "FR-DNRED", "DE-BKA", "NL-FIOD", "IT-TPC", "INT-INTERPOL", "US-CBP")


class Send(NamedTuple):
    sender: str
    to: tuple[str, ...]
    kind: str
    tlp: str
    refused_by: str | None  # None: allowed; otherwise the rule the refusal must name, as "(rule)"


SENDS = [
    Send("FR-CUSTOMS", ("EU-CUSTOMS",), "ALERT", "CLEAR", None),
    Send("FR-CUSTOMS", ("EU-CUSTOMS",), "ALERT", "GREEN", None),
    Send("FR-CUSTOMS", ("EU-CUSTOMS",), "ALERT", "AMBER", None),
    Send("FR-CUSTOMS", ("EU-CUSTOMS",), "ALERT", "AMBER+STRICT", None),
    Send("FR-CUSTOMS", ("EU-CUSTOMS",), "ALERT", "RED", "(builtin:red-to-named-agencies-only)"),
    Send("FR-CUSTOMS", ("FR-DNRED", "NL-FIOD"), "ALERT", "RED", None),
    Send("FR-CUSTOMS", ("NL-FIOD",), "REQUEST", "RED", "(eu-customs)"),
    Send("FR-CUSTOMS", ("DE-BKA",), "ALERT", "AMBER", "(eu-customs)"),
    Send("FR-DNRED", ("G7-CT",), "ALERT", "AMBER", None),
    Send("FR-DNRED", ("G7-CT",), "ALERT", "AMBER+STRICT", "(g7-ct)"),
    Send("DE-BKA", ("FR-DNRED",), "REQUEST", "GREEN", None),
    Send("DE-BKA", ("FR-DNRED",), "REPLY", "GREEN", "(g7-ct)"),
    Send("DE-BKA", ("FR-CUSTOMS",), "ALERT", "CLEAR", "(g7-ct)"),
    Send("DE-BKA", ("G7-CT",), "ALERT", "RED", "(builtin:red-to-named-agencies-only)"),
    Send("IT-TPC", ("ARCHEO-EXPERTS",), "ALERT", "AMBER", None),
    Send("IT-TPC", ("ARCHEO-EXPERTS",), "ALERT", "AMBER+STRICT", "(archeo)"),
    Send("IT-TPC", ("INT-INTERPOL",), "ALERT", "CLEAR", None),
    Send("IT-TPC", ("DE-BKA",), "ALERT", "CLEAR", "(archeo)"),
    Send("INT-INTERPOL", ("FR-CUSTOMS",), "ALERT", "GREEN", None),
    Send("INT-INTERPOL", ("ARCHEO-EXPERTS",), "REQUEST", "GREEN", "(archeo)"),
    Send("NL-FIOD", ("EU-CUSTOMS",), "REPLY", "AMBER+STRICT", None),
    Send("NL-FIOD", ("FR-CUSTOMS", "DE-BKA"), "ALERT", "AMBER", "(eu-customs)"),
    Send("NL-FIOD", ("EU-CUSTOMS",), "ALERT", "RED", "(builtin:red-to-named-agencies-only)"),
    Send("FR-DNRED", ("FR-CUSTOMS", "DE-BKA"), "ALERT", "AMBER", None),
    Send("FR-CUSTOMS", ("ARCHEO-EXPERTS",), "ALERT", "GREEN", None),
    Send("FR-CUSTOMS", ("ARCHEO-EXPERTS",), "ALERT", "RED", "(builtin:red-to-named-agencies-only)"),
    Send("US-CBP", ("DE-BKA",), "ALERT", "CLEAR", None),
    Send("US-CBP", ("IT-TPC",), "ALERT", "CLEAR", "(g7-ct)"),
]


class Forward(NamedTuple):
    sender: str
    to: str
    tlp: str
    forwarder: str
    onward: tuple[str, ...]
    refused_by: str | None


FORWARDS = [
    Forward("FR-CUSTOMS", "NL-FIOD", "AMBER", "NL-FIOD", ("FR-DNRED",), "(eu-customs)"),
    Forward("FR-DNRED", "DE-BKA", "AMBER", "DE-BKA", ("US-CBP",), None),
    Forward("FR-DNRED", "DE-BKA", "AMBER", "DE-BKA", ("NL-FIOD",), "(g7-ct)"),
    Forward("IT-TPC", "FR-CUSTOMS", "AMBER", "FR-CUSTOMS", ("INT-INTERPOL",), None),
    Forward("IT-TPC", "FR-CUSTOMS", "GREEN", "FR-CUSTOMS", ("DE-BKA",), "(archeo)"),
    Forward("FR-CUSTOMS", "NL-FIOD", "AMBER+STRICT", "NL-FIOD", ("FR-DNRED",), "(builtin:organisation-bound)"),
    Forward("FR-CUSTOMS", "NL-FIOD", "GREEN", "NL-FIOD", ("FR-CUSTOMS",), None),
]


@pytest.fixture
def world(broker_factory: Any, pki: DevPki, tmp_path: Path) -> tuple[RunningBroker, dict[str, AgencyClient], Path]:
    """A broker under the table policy with seven agencies, each with a published key."""
    directory, policy = extended_pki(pki, tmp_path, EXTRA, TABLE_POLICY.read_text())
    broker = broker_factory(cert_dir=directory, policy_file=policy)
    clients = {a: AgencyClient.from_dir(broker.target, directory, a, keystore=tmp_path / "k" / a) for a in AGENCIES}
    for client in clients.values():
        client.publish_key()
    return broker, clients, policy


def _attempt(database: Database, send: Any, refused_by: str | None) -> None:
    before = database.scalar("SELECT count(*) FROM messages")
    rejections = database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'")
    if refused_by is None:
        send()
        assert database.scalar("SELECT count(*) FROM messages") == before + 1
        return
    with pytest.raises(RemoteError) as refused:
        send()
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "refused by policy" in refused.value.message
    assert refused_by in refused.value.message
    assert database.scalar("SELECT count(*) FROM messages") == before
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'") == rejections + 1


def test_sends_and_forwards_are_allowed_or_refused_exactly_as_the_policy_says(
    world: tuple[RunningBroker, dict[str, AgencyClient], Path],
    database: Database,
) -> None:
    """Thirty-five sends and forwards across three groups and all five handling codes, each as the policy says."""
    _, clients, _ = world
    for row in SENDS:
        client = clients[row.sender]
        _attempt(
            database,
            lambda c=client, r=row: c.send(list(r.to), b"table", kind=envelope_pb2.Kind.Value(r.kind), tlp=r.tlp),
            row.refused_by,
        )
    for agency in AGENCIES:  # drain what the allowed sends delivered
        for message in clients[agency].deliveries(timeout=0.5):
            clients[agency].ack(message)
    for fwd in FORWARDS:
        clients[fwd.sender].send([fwd.to], b"to be forwarded", tlp=fwd.tlp)
        received = next(iter(clients[fwd.to].deliveries(timeout=5)))
        clients[fwd.to].ack(received)
        forwarder = clients[fwd.forwarder]
        _attempt(database, lambda f=forwarder, m=received, r=fwd: f.forward(m, list(r.onward)), fwd.refused_by)
    assert len(SENDS) + len(FORWARDS) >= 30


def test_forwarded_message_verifies_as_written_by_its_original_sender(
    world: tuple[RunningBroker, dict[str, AgencyClient], Path],
) -> None:
    """The new recipient of a forward verifies the original sender's signatures and sees the original plaintext."""
    _, clients, _ = world
    clients["FR-DNRED"].send(["DE-BKA"], b"original words of FR-DNRED", tlp="AMBER")
    received = next(iter(clients["DE-BKA"].deliveries(timeout=5)))
    clients["DE-BKA"].forward(received, ["US-CBP"])
    forwarded = next(iter(clients["US-CBP"].deliveries(timeout=5)))
    assert forwarded.sender == "DE-BKA"
    assert forwarded.forwarded_from is not None
    assert forwarded.forwarded_from.sender == "FR-DNRED"
    assert forwarded.forwarded_from.body == b"original words of FR-DNRED"
    assert forwarded.header.references == received.message_id


def test_forwarder_cannot_change_the_handling_code(
    world: tuple[RunningBroker, dict[str, AgencyClient], Path],
    database: Database,
) -> None:
    """A forward that lowers AMBER to CLEAR is refused by the broker and stores nothing."""
    _, clients, _ = world
    clients["FR-DNRED"].send(["DE-BKA"], b"amber", tlp="AMBER")
    received = next(iter(clients["DE-BKA"].deliveries(timeout=5)))
    body = forwarded_content(received.envelope, received.opened, received.sender_certificate)

    def lowered() -> Any:
        return clients["DE-BKA"].send(
            ["US-CBP"], body, content_type=FORWARDED_CONTENT_TYPE, tlp="CLEAR", references=received.message_id
        )

    _attempt(database, lowered, "(builtin:forward-keeps-handling)")


def _admin(broker: RunningBroker, pki_dir: Path, who: str = "admin") -> Any:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki_dir / "ca.crt").read_bytes(),
        private_key=(pki_dir / f"{who}.key").read_bytes(),
        certificate_chain=(pki_dir / f"{who}.crt").read_bytes(),
    )
    return admin_pb2_grpc.AdminServiceStub(grpc.secure_channel(broker.target, creds))


def test_invalid_policy_is_refused_naming_its_line_and_the_old_one_keeps_working(
    world: tuple[RunningBroker, dict[str, AgencyClient], Path],
    database: Database,
) -> None:
    """ApplyPolicy with an unknown group fails naming the line; an invalid file edit is ignored; sends go on."""
    broker, clients, policy_file = world
    admin = _admin(broker, policy_file.parent / "pki-extended")
    bad = TABLE_POLICY.read_text().replace('recipients = ["G7-CT"]', 'recipients = ["G7-TC"]')
    line = 1 + bad.splitlines().index('recipients = ["G7-TC"]')
    with pytest.raises(grpc.RpcError) as refused:
        admin.ApplyPolicy(admin_pb2.PolicyDocument(toml=bad), timeout=5)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f":{line}:" in str(refused.value.details())
    assert "G7-TC" in str(refused.value.details())
    policy_file.write_text(bad)  # an admin saves a broken file: the running policy stays
    assert clients["FR-DNRED"].send(["G7-CT"], b"still allowed", tlp="GREEN").queued_for
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'policy.changed'") == 0


def test_valid_policy_change_takes_effect_on_next_send_without_restart(
    world: tuple[RunningBroker, dict[str, AgencyClient], Path],
    database: Database,
) -> None:
    """Removing the G7 rule from the file refuses the next G7 send, and the change is audited."""
    _, clients, policy_file = world
    assert clients["FR-DNRED"].send(["DE-BKA"], b"before", tlp="GREEN").queued_for == ["DE-BKA"]
    text = TABLE_POLICY.read_text()
    start = text.index('[[rules]]\nname = "g7-ct"')
    end = text.index("[[rules]]", start + 1)
    policy_file.write_text(text[:start] + text[end:])
    with pytest.raises(RemoteError) as refused:
        clients["FR-DNRED"].send(["DE-BKA"], b"after", tlp="GREEN")
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'policy.changed'") == 1


def test_agency_asks_which_rule_applies_and_may_ask_only_about_itself(
    world: tuple[RunningBroker, dict[str, AgencyClient], Path],
) -> None:
    """ExplainPolicy answers an agency about its own sends, naming the rule, and refuses questions about others."""
    broker, _, policy_file = world
    agency = _admin(broker, policy_file.parent / "pki-extended", "FR-CUSTOMS")
    yes = agency.ExplainPolicy(
        admin_pb2.ExplainPolicyRequest(kind="ALERT", tlp="AMBER", recipients=["EU-CUSTOMS"]), timeout=5
    )
    assert yes.allowed
    assert "eu-customs" in yes.rule
    assert list(yes.expanded_recipients) == ["FR-DNRED", "NL-FIOD"]
    no = agency.ExplainPolicy(
        admin_pb2.ExplainPolicyRequest(kind="ALERT", tlp="RED", recipients=["EU-CUSTOMS"]), timeout=5
    )
    assert not no.allowed
    assert "RED" in no.reason
    with pytest.raises(grpc.RpcError) as refused:
        agency.ExplainPolicy(admin_pb2.ExplainPolicyRequest(sender="DE-BKA", kind="ALERT", tlp="CLEAR"), timeout=5)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_admin_cli_validates_diffs_applies_and_shows_the_running_policy(
    world: tuple[RunningBroker, dict[str, AgencyClient], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`isb admin policy-validate` names the bad line and diffs; `policy-apply` takes effect; `policy-show` shows it."""
    broker, clients, policy_file = world
    online = ["--broker", broker.target, "--certs", str(policy_file.parent / "pki-extended")]
    bad = tmp_path / "bad.toml"
    gossip = 'kinds = ["ALERT", "GOSSIP"]'
    bad.write_text(TABLE_POLICY.read_text().replace('kinds = ["ALERT", "REQUEST"]', gossip))
    line = 1 + bad.read_text().splitlines().index(gossip)
    assert isb(["admin", "policy-validate", str(bad), *online]) == 1
    err = capsys.readouterr().err
    assert "GOSSIP" in err
    assert f":{line}:" in err
    good = tmp_path / "good.toml"
    good.write_text(TABLE_POLICY.read_text().replace('kinds = ["ALERT", "REQUEST"]', 'kinds = ["ALERT"]'))
    assert isb(["admin", "policy-validate", str(good), *online]) == 0
    assert '-kinds = ["ALERT", "REQUEST"]' in capsys.readouterr().out
    assert isb(["admin", "policy-apply", str(good), *online]) == 0
    with pytest.raises(RemoteError) as refused:
        clients["DE-BKA"].send(["FR-DNRED"], b"request no longer allowed", kind=envelope_pb2.REQUEST, tlp="GREEN")
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    capsys.readouterr()
    assert isb(["admin", "policy-show", *online]) == 0
    assert 'kinds = ["ALERT"]\n' in capsys.readouterr().out


def test_owner_consent_releases_a_forward_the_policy_refuses_but_not_past_the_organisation_bound(
    world: tuple[RunningBroker, dict[str, AgencyClient], Path],
    database: Database,
) -> None:
    """A refused forward asks the owner; the owner's signed consent releases it; AMBER+STRICT stays bound."""
    _, clients, _ = world
    owner, forwarder, target = clients["FR-CUSTOMS"], clients["NL-FIOD"], clients["DE-BKA"]
    owner.send(["NL-FIOD"], b"customs intelligence", tlp="AMBER")
    received = next(iter(forwarder.deliveries(timeout=5)))
    forwarder.ack(received)
    _attempt(database, lambda: forwarder.forward(received, ["DE-BKA"]), "(eu-customs)")
    forwarder.request_forward_consent(received, ["DE-BKA"], reason="joint investigation")
    request = next(iter(owner.deliveries(timeout=5)))
    owner.ack(request)
    assert request.header.in_reply_to == received.message_id
    with pytest.raises(RemoteError) as not_owner:
        forwarder.grant_forward_consent(received.message_id, "NL-FIOD", ["DE-BKA"])
    assert not_owner.value.code is grpc.StatusCode.PERMISSION_DENIED
    owner.grant_forward_consent(received.message_id, "NL-FIOD", ["DE-BKA"])
    assert forwarder.forward(received, ["DE-BKA"]).queued_for == ["DE-BKA"]
    forwarded = next(iter(target.deliveries(timeout=5)))
    assert forwarded.forwarded_from is not None
    assert forwarded.forwarded_from.sender == "FR-CUSTOMS"
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'forward.consented'") == 1
    strict = owner.send(["NL-FIOD"], b"strict", tlp="AMBER+STRICT")
    received_strict = next(iter(forwarder.deliveries(timeout=5)))
    assert received_strict.message_id == strict.message_id
    owner.grant_forward_consent(strict.message_id, "NL-FIOD", ["DE-BKA"])
    _attempt(database, lambda: forwarder.forward(received_strict, ["DE-BKA"]), "(builtin:organisation-bound)")
