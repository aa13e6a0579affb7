"""Per-message cost of the outer signature with and without Merkle batch signatures (issue 19,
docs/protocol.md section 21), measured in one process with the protocol functions themselves.

    .venv/bin/python -m bench.bench_batch_signing [--batch 64] [--rounds 20]

For batches of `--batch` envelopes (one recipient, X25519, 200-byte bodies) and receipts, it
reports microseconds per message of: sealing (inner signature, encryption, HPKE wrap, outer
signature), the broker's `verify_outer`, the recipient's `open_envelope`, signing receipts and
verifying them, each with one signature per message and with one batch signature per batch (a
warm `VerifiedRoots` cache for the verifiers, as the broker and the SDK keep). CPU time of this
process (`time.process_time`), median of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from broker.api.v1 import envelope_pb2
from broker.protocol.batch import VerifiedRoots
from broker.protocol.envelope import envelope_sha256, open_envelope, seal, sign_envelopes, verify_outer
from broker.protocol.receipts import new_receipt, sign_receipts, verify_receipt
from tests.unit.protocol.protocol_testpki import Agency, Pki, make_ca


def _per_message(fn: Callable[[], object], n: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


def _seal_all(sender: Agency, recipient: Agency, n: int, *, batched: bool) -> list[envelope_pb2.Envelope]:
    envelopes = [
        seal(
            sender=sender.name,
            identity_key=sender.identity_key,
            certificate=sender.certificate,
            recipients=[recipient.name],
            recipient_keys={recipient.name: recipient.bundle},
            kind=envelope_pb2.ALERT,
            body=bytes(200),
            content_type="application/octet-stream",
            sign=not batched,
        )
        for _ in range(n)
    ]
    if batched:
        sign_envelopes(envelopes, sender.identity_key)
    return envelopes


def _measure(sender: Agency, recipient: Agency, n: int, rounds: int, *, batched: bool) -> dict[str, float]:
    envelopes = _seal_all(sender, recipient, n, batched=batched)
    roots = VerifiedRoots() if batched else None
    receipts = [
        new_receipt(
            message_id=envelope_pb2.Header.FromString(e.header).message_id,
            envelope_sha256=envelope_sha256(e.SerializeToString()),
            recipient=recipient.name,
            status=envelope_pb2.DELIVERED,
        )
        for e in envelopes
    ]

    def sign() -> list[envelope_pb2.SignedReceipt]:
        if batched:
            return sign_receipts(receipts, recipient.identity_key)
        return [sign_receipts([r], recipient.identity_key)[0] for r in receipts]

    signed = sign()
    return {
        "seal (sender)": _per_message(lambda: _seal_all(sender, recipient, n, batched=batched), n, rounds),
        "verify_outer (broker)": _per_message(
            lambda: [verify_outer(e, sender.certificate, roots=roots) for e in envelopes], n, rounds
        ),
        "open_envelope (recipient)": _per_message(
            lambda: [
                open_envelope(
                    e, recipient=recipient.name, keys=recipient.keys, sender_certificate=sender.certificate, roots=roots
                )
                for e in envelopes
            ],
            n,
            rounds,
        ),
        "sign receipts (recipient)": _per_message(sign, n, rounds),
        "verify receipts (broker)": _per_message(
            lambda: [verify_receipt(r, recipient.certificate, roots=roots) for r in signed], n, rounds
        ),
    }


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    pki = Pki(*make_ca())
    sender, recipient = pki.agency("FR-CUSTOMS"), pki.agency("DE-BKA")
    single = _measure(sender, recipient, args.batch, args.rounds, batched=False)
    batched = _measure(sender, recipient, args.batch, args.rounds, batched=True)
    print(f"batch of {args.batch}, median of {args.rounds} rounds, CPU us per message")
    print(f"{'step':<28}{'single':>10}{'batched':>10}")
    for step, value in single.items():
        print(f"{step:<28}{value:>10.1f}{batched[step]:>10.1f}")


if __name__ == "__main__":
    main()
