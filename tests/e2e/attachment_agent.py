"""One agency's side of a large attachment transfer, as its own process (so its memory is its own).

    python -m tests.e2e.attachment_agent send TARGET CERT_DIR KEYSTORE FILE
    python -m tests.e2e.attachment_agent receive TARGET CERT_DIR KEYSTORE FILE

`send` (FR-CUSTOMS) sends FILE as an attachment to DE-BKA; `receive` (DE-BKA) saves the first
delivery's attachment to FILE and acknowledges it. Each prints one JSON line: its resident set once
connected (`base`) and its high-water mark at the end (`peak`, VmHWM), in bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clients import AgencyClient


def memory(field: str) -> int:
    """A /proc/self/status memory field, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def main(action: str, target: str, cert_dir: str, keystore: str, file: str) -> None:
    """Run one side of the transfer and print its memory."""
    agency = {"send": "FR-CUSTOMS", "receive": "DE-BKA"}[action]
    with AgencyClient.from_dir(
        target, Path(cert_dir), agency, keystore=Path(keystore), server_name="localhost"
    ) as client:
        client.recipient_keys(["DE-BKA"] if action == "send" else ["FR-CUSTOMS"])
        base = memory("VmRSS")
        if action == "send":
            client.send(["DE-BKA"], b"2 GiB class scan", attachments=[Path(file)])
        else:
            message = next(iter(client.deliveries(timeout=60)))
            message.attachments[0].save(Path(file))
            client.ack(message)
        print(json.dumps({"base": base, "peak": memory("VmHWM")}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
