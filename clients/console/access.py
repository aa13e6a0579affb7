"""Who may read the console: only a browser on this machine that holds the access token.

The console binds to 127.0.0.1, but any local process, and any web page the auditor has open (by
DNS rebinding or a plain cross-site link), can reach a local port. So, as Jupyter does:

- the URL that `isb console` prints carries a random token (`secrets.token_urlsafe(32)`); the first
  request with it gets the token as an HttpOnly, SameSite=Strict cookie and is redirected to the same
  page without it (so it leaves no trace in history or Referer); every later request must carry the
  cookie; tokens are compared in constant time (`hmac.compare_digest`);
- a request whose Host header is not this console's own `127.0.0.1:PORT` or `localhost:PORT` is
  refused before the token is looked at (a rebound DNS name arrives with its own Host);
- every answer carries headers that forbid framing, sniffing, referrers, caching and any script,
  style or connection other than the console's own (a strict Content-Security-Policy).
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SECURITY_HEADERS", "AccessGuard"]

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

_REFUSED_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>ISB audit console: {title}</title></head><body><h1>{title}</h1><p>{detail}</p></body></html>"""


def _same(given: str, expected: str) -> bool:
    # compare_digest wants ASCII str or bytes; a token typed by someone may be neither.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


class AccessGuard:
    """ASGI middleware: Host check, token check (URL once, then cookie), security headers on every answer."""

    def __init__(self, app: ASGIApp, *, token: str, port: int) -> None:
        """Guard `app`, served on 127.0.0.1:`port`, with `token`."""
        self.app = app
        self.token = token
        self.port = port
        self.cookie = f"isb-console-{port}"
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse or pass on one request."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
            return  # no websockets
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("host", "") not in self.hosts:
            await _answer(send, 403, "Wrong host", "This console answers only at its own address on 127.0.0.1.")
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given:
            if len(given) != 1 or not _same(given[0], self.token):
                await _answer(send, 403, "Wrong token", "This access token is not valid for this console.")
                return
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            await _answer(
                send,
                303,
                "Signed in",
                "Continue to the console.",
                extra=[(b"location", location.encode()), (b"set-cookie", cookie.encode())],
            )
            return
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except CookieError:  # junk in the header: as if there were no cookie
            jar = SimpleCookie()
        morsel = jar.get(self.cookie)
        if morsel is None or not _same(morsel.value, self.token):
            await _answer(
                send,
                403,
                "Access token needed",
                "Open the console with the URL that <code>isb console</code> printed: it holds the token.",
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_security_headers()]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _security_headers() -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


async def _answer(
    send: Send, status: int, title: str, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = _REFUSED_PAGE.format(title=title, detail=detail).encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *_security_headers(),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
