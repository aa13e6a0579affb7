"""The console's access guard, at the ASGI level: Host check, token in the URL once, then a cookie."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from clients.console.access import SECURITY_HEADERS, AccessGuard

TOKEN = "s3cret-token_ABC"
PORT = 8787


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"inside"})


def request(
    path: str = "/", query: str = "", host: str = f"127.0.0.1:{PORT}", cookie: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = [(b"host", host.encode())]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("utf-8")))
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode("utf-8"), "headers": headers}
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(AccessGuard(_app, token=TOKEN, port=PORT)(scope, receive, send))
    start, body = sent[0], sent[1]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


def test_no_token_is_refused_with_a_hint() -> None:
    """Without token or cookie: 403 and the page says to open the printed URL."""
    status, headers, body = request()
    assert status == 403
    assert b"isb console" in body
    assert headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]


def test_the_right_token_becomes_a_strict_cookie_and_leaves_the_url() -> None:
    """303 to the same path and other parameters, without the token; the cookie is HttpOnly, SameSite=Strict."""
    status, headers, _ = request("/message/x", f"agency=DE-BKA&token={TOKEN}")
    assert status == 303
    assert headers["location"] == "/message/x?agency=DE-BKA"
    assert headers["set-cookie"] == f"isb-console-{PORT}={TOKEN}; Path=/; HttpOnly; SameSite=Strict"


def test_the_cookie_lets_requests_through_with_security_headers() -> None:
    """With the cookie the page is served, and every security header is added."""
    status, headers, body = request(cookie=f"other=1; isb-console-{PORT}={TOKEN}")
    assert (status, body) == (200, b"inside")
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value


def test_another_host_or_port_is_refused_even_with_the_token() -> None:
    """DNS rebinding arrives with a foreign Host header; another port is another console."""
    for host in ("evil.example", f"evil.example:{PORT}", "127.0.0.1:1", f"127.0.0.2:{PORT}", ""):
        assert request(query=f"token={TOKEN}", host=host)[0] == 403
        assert request(host=host, cookie=f"isb-console-{PORT}={TOKEN}")[0] == 403
    assert request(host=f"localhost:{PORT}", cookie=f"isb-console-{PORT}={TOKEN}")[0] == 200


def test_a_repeated_token_parameter_is_refused() -> None:
    """Two `token` parameters, even if one is right, are not a sign-in."""
    assert request(query=f"token={TOKEN}&token=x")[0] == 403


@given(st.text(max_size=64).filter(lambda t: t != TOKEN))
def test_no_other_token_is_accepted_in_the_url_or_the_cookie(guess: str) -> None:
    """Any other string, ASCII or not, is refused (and never crashes the comparison)."""
    assert request(query=f"token={quote(guess)}")[0] == 403
    assert request(cookie=f"isb-console-{PORT}={quote(guess)}")[0] == 403
