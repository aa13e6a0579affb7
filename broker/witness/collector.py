"""The broker's side: send each new checkpoint to the witnesses of its policy, collect cosignatures.

For each witness with a URL in the broker's `witness_policy` (a tlog-policy file) the collector
remembers the size the witness holds (0 at start), sends the checkpoint with a consistency proof from
that size, and on a 409 `text/x.tlog.size` answer retries once from the size the witness names. A
witness that is down, slow or refuses costs a log line and a metric, never the broker.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from broker.metrics import WITNESS_SUBMISSIONS
from broker.protocol.errors import ProtocolError
from broker.protocol.witness_policy import Policy, WitnessEntry
from broker.witness.submit import add_checkpoint, cosignature_lines

log = structlog.get_logger("isb.witness")

RETRY_SECONDS = 5.0
ProofSource = Callable[[int, int], list[bytes]]
"""`proof(old_size, new_size)`: the consistency proof between two sizes of the broker's log."""


@dataclass
class WitnessStatus:
    """What the broker last heard from one witness."""

    name: str
    url: str
    held_size: int = 0
    last_outcome: str = "never contacted"
    last_cosigned_size: int | None = None
    last_attempt_size: int | None = None
    updated: float = 0.0


class Refused(Exception):
    """A witness answered with a refusal."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status


class WitnessCollector:
    """Submits checkpoints to the witnesses of `policy` (those with a URL) over mutual TLS."""

    def __init__(self, policy: Policy, context: ssl.SSLContext, trust_domain: str, *, timeout: float = 5.0) -> None:
        self.witnesses = [entry for entry in policy.witnesses.values() if entry.url]
        self.context = context
        self.trust_domain = trust_domain
        self.timeout = timeout
        self.status = {entry.name: WitnessStatus(entry.name, entry.url or "") for entry in self.witnesses}

    def collect(self, note: bytes, size: int, proof: ProofSource) -> list[str]:
        """The verified cosignature lines the witnesses gave for `note` (a checkpoint of `size`)."""
        lines: list[str] = []
        for entry in self.witnesses:
            status = self.status[entry.name]
            if status.last_cosigned_size == size:
                continue  # already cosigned this one
            if status.last_attempt_size == size and time.time() - status.updated < RETRY_SECONDS:
                continue  # it failed on this checkpoint a moment ago: retry later, not every tick
            status.last_attempt_size = size
            try:
                lines += self._submit(entry, status, note, size, proof)
            except (OSError, ssl.SSLError, http.client.HTTPException, ProtocolError, Refused) as exc:
                outcome = f"refused {exc.status}" if isinstance(exc, Refused) else "unreachable"
                status.last_outcome = f"{outcome}: {str(exc)[:200]}"  # the metric label stays short
                WITNESS_SUBMISSIONS.labels(witness=entry.name, outcome=outcome).inc()
                log.warning("witness.submit_failed", witness=entry.name, size=size, error=str(exc)[:300])
            else:
                status.last_outcome = "cosigned"
                status.last_cosigned_size = size
                WITNESS_SUBMISSIONS.labels(witness=entry.name, outcome="cosigned").inc()
            status.updated = time.time()
        return lines

    def _submit(
        self, entry: WitnessEntry, status: WitnessStatus, note: bytes, size: int, proof: ProofSource
    ) -> list[str]:
        old = status.held_size if status.held_size <= size else 0
        for attempt in range(2):
            hashes = proof(old, size) if 0 < old < size else []
            answer = add_checkpoint(
                entry.url or "", self.context, old, hashes, note, trust_domain=self.trust_domain, timeout=self.timeout
            )
            if answer.status == 200:
                status.held_size = size
                return cosignature_lines(answer, entry.cosigner, note)
            told = answer.size
            if told is not None:
                status.held_size = told
                if attempt == 0 and told <= size:
                    old = told  # answer the size mismatch with a proof from the witness's size
                    continue
                if told > size:
                    raise Refused(409, f"the witness holds a larger tree ({told}) than this checkpoint ({size})")
            raise Refused(answer.status, answer.reason)
        raise Refused(409, "the witness's size changed twice during one submission")
