"""Container health check: the broker's own health file, no client certificate needed.

Exit 0 when the broker's health file (setting `health_file`, `ISB_HEALTH_FILE`) says SERVING and
is fresh, 1 otherwise with one line saying why. Configuration comes from `broker.config` (the same
file and ISB_* variables as the broker), so it checks the broker it runs beside. See
`broker/health.py` for why this is not a gRPC call over the mutual-TLS port.
"""

from __future__ import annotations

import sys

from broker.config import load_config
from broker.errors import ConfigurationError
from broker.health import read_health_file


def main() -> int:
    """Read the local broker's health file; return the exit status."""
    try:
        config = load_config()
    except ConfigurationError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if config.health_file is None:
        print(
            "unhealthy: no health_file configured (set ISB_HEALTH_FILE for the broker and this check)", file=sys.stderr
        )
        return 1
    try:
        read_health_file(config.health_file)
    except ValueError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
