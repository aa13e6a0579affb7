"""The broker's one log format: JSON lines for structlog events, standard-library records and C-core lines."""

from __future__ import annotations

import json
import logging

import pytest

from broker.logs import native_line_event


def test_handshake_failure_line_becomes_a_named_event_with_its_cause() -> None:
    """gRPC's `Handshake failed` line is `tls.handshake_failed` with the OpenSSL reason as `cause`."""
    line = (
        "I1201 09:55:00.012724   29522 ssl_transport_security.cc:2563] Handshake failed with error "
        "SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
        "unable to get local issuer certificate"
    )
    event = native_line_event(line)
    assert event["event"] == "tls.handshake_failed"
    assert event["cause"] == "CERTIFICATE_VERIFY_FAILED"
    assert event["detail"] == "unable to get local issuer certificate"
    assert event["ssl_error"] == "SSL_ERROR_SSL"
    assert event["source"] == "ssl_transport_security.cc:2563"


def test_other_core_lines_keep_their_level_and_text() -> None:
    """Any other absl-formatted line is `grpc.core` with its severity as the level."""
    event = native_line_event("E1201 10:20:14.089644   27095 add_port.cc:83] Failed to add port to server")
    assert (event["event"], event["level"], event["message"]) == ("grpc.core", "error", "Failed to add port to server")


def test_unformatted_native_text_is_kept_as_a_stderr_event() -> None:
    """A line that is not absl's format still becomes JSON, as `stderr`."""
    assert native_line_event("something odd") == {"event": "stderr", "level": "warning", "message": "something odd"}


def test_standard_library_records_are_json_named_after_their_logger(capsys: pytest.CaptureFixture[str]) -> None:
    """An Alembic record is one JSON line: the logger as event, its text as message (no raw lines)."""
    logging.getLogger("alembic.runtime.migration").warning("Running upgrade 0001 -> 0002")
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["event"] == "alembic.runtime.migration"
    assert record["message"] == "Running upgrade 0001 -> 0002"
    assert record["level"] == "warning"
    assert "timestamp" in record
