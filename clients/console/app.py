"""The console's web application: server-rendered pages (Starlette, Jinja2), no front-end build step.

Pages (all GET, all read-only):

- `/`                   timeline of exchanges, filterable by agency, kind, handling code and time
- `/message/{id}`       the life of one message, its inclusion proofs re-checked by the browser
- `/checkpoints`        checkpoint history with verification status (and cosigners, once witnesses exist)
- `/refusals`           refused requests grouped by rule
- `/volume`             messages per agency pair, as inline SVG charts
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from broker.errors import VerificationError
from clients.console import views
from clients.console.access import AccessGuard
from clients.console.snapshot import AuditSnapshot
from clients.console.sources import AuditSource
from clients.errors import ClientError

__all__ = ["create_app"]

_HERE = Path(__file__).resolve().parent
_PAGE_ROWS = 500


def _short(data: bytes | None, length: int = 16) -> str:
    return data.hex()[:length] + "\u2026" if data else ""


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(default=True))
    env.filters["short"] = _short
    env.filters["when"] = _time
    env.filters["handling"] = views.handling_label
    return Jinja2Templates(env=env)


def _parse_time(text: str) -> datetime | None:
    """A `datetime-local` value (YYYY-MM-DDTHH:MM[:SS]), taken as UTC; None when empty or malformed."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return None


class _Pages:
    def __init__(self, source: AuditSource) -> None:
        self.source = source
        self.templates = _templates()

    def render(
        self, request: Request, name: str, snapshot: AuditSnapshot, status_code: int = 200, **context: Any
    ) -> Response:
        base = {
            "snap": snapshot,
            "source": self.source.label,
            "live": self.source.label.startswith("broker"),
            "path": request.url.path,
        }
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)

    def guarded(self, page: Callable[[Request, AuditSnapshot], Response]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                snapshot = self.source.snapshot()
            except (ClientError, VerificationError, OSError) as exc:
                return self.templates.TemplateResponse(
                    request, "unavailable.html", {"source": self.source.label, "error": str(exc)}, status_code=502
                )
            return page(request, snapshot)

        return endpoint

    def timeline(self, request: Request, snapshot: AuditSnapshot) -> Response:
        q = request.query_params
        chosen = views.ExchangeFilter(
            agency=q.get("agency", ""),
            kind=q.get("kind", ""),
            handling=q.get("handling", ""),
            since=_parse_time(q.get("since", "")),
            until=_parse_time(q.get("until", "")),
        )
        every = views.exchanges(snapshot)
        shown = [e for e in every if chosen.admits(e)]
        agencies = sorted({a for e in every for a in e.agencies if a})
        return self.render(
            request,
            "timeline.html",
            snapshot,
            page="timeline",
            rows=shown[-_PAGE_ROWS:][::-1],
            matched=len(shown),
            total=len(every),
            chosen=chosen,
            agencies=agencies,
            kinds=views.KINDS,
            codes=views.HANDLING_CODES,
            form=dict(q),
        )

    def message(self, request: Request, snapshot: AuditSnapshot) -> Response:
        message_id = request.path_params["message_id"]
        steps = views.message_life(snapshot, message_id)
        exchange = next((e for e in views.exchanges(snapshot) if e.message_id == message_id), None)
        checkpoint = snapshot.proof_checkpoint
        proofs = []
        for step in steps:
            proof = self.source.proof(snapshot, step.entry.index)
            proofs.append(
                {
                    "index": step.entry.index,
                    "entry": step.entry.entry_b64,
                    "proof": [h.hex() for h in proof.hashes],
                    "console_error": proof.console_error,
                }
            )
        data = {
            "note": base64.b64encode(checkpoint.note).decode() if checkpoint else "",
            "vkey": snapshot.vkey,
            "steps": proofs,
        }
        return self.render(
            request,
            "message.html",
            snapshot,
            200 if steps else 404,
            page="message",
            message_id=message_id,
            steps=list(zip(steps, proofs, strict=True)),
            exchange=exchange,
            checkpoint=checkpoint,
            data=data,
        )

    def checkpoints(self, request: Request, snapshot: AuditSnapshot) -> Response:
        return self.render(
            request, "checkpoints.html", snapshot, page="checkpoints", rows=list(enumerate(snapshot.checkpoints))[::-1]
        )

    def refusals(self, request: Request, snapshot: AuditSnapshot) -> Response:
        groups = views.refusals_by_rule(snapshot)
        return self.render(
            request,
            "refusals.html",
            snapshot,
            page="refusals",
            groups=groups,
            total=sum(len(g.refusals) for g in groups),
        )

    def volume(self, request: Request, snapshot: AuditSnapshot) -> Response:
        return self.render(
            request, "volume.html", snapshot, page="volume", chart=views.volume_chart(views.exchanges(snapshot))
        )

    def reload(self, request: Request) -> Response:
        try:
            self.source.snapshot(reload=True)
        except (ClientError, VerificationError, OSError) as exc:
            return self.templates.TemplateResponse(
                request, "unavailable.html", {"source": self.source.label, "error": str(exc)}, status_code=502
            )
        back = request.query_params.get("back", "/")
        return RedirectResponse(back if back.startswith("/") and not back.startswith("//") else "/", status_code=303)


def create_app(source: AuditSource, *, token: str, port: int) -> AccessGuard:
    """The console application over `source`, guarded by `token`, for 127.0.0.1:`port`."""
    pages = _Pages(source)
    routes = [
        Route("/", pages.guarded(pages.timeline)),
        Route("/message/{message_id}", pages.guarded(pages.message)),
        Route("/checkpoints", pages.guarded(pages.checkpoints)),
        Route("/refusals", pages.guarded(pages.refusals)),
        Route("/volume", pages.guarded(pages.volume)),
        Route("/reload", pages.reload),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    return AccessGuard(Starlette(routes=routes), token=token, port=port)
