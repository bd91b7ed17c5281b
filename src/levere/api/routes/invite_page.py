"""The page an invitation link opens in a browser: the portal's page that accepts it, or the command.

Plain HTML with a few lines of inline style: no script, nothing fetched from elsewhere. Opening the
page changes nothing (mail scanners open links too); it only says whether the link still works. The
secret is in the address, so the page is never cached and never sent on as a referrer.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from levere.api.deps import CtxDep, acts
from levere.services import invitations
from levere.services.invitations import LinkState

router = APIRouter(tags=["invitations"])

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}
STYLE = (
    "body{font-family:sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;line-height:1.5}"
    "pre{background:#f3f3f3;padding:.75rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}"
)


def _page(title: str, body: str, status: int) -> HTMLResponse:
    html = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} - levere</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


@router.get("/invite/{token}", openapi_extra=acts(None), include_in_schema=False)
def invite_page(token: str, ctx: CtxDep) -> HTMLResponse:
    """Open to anyone holding the link, like the link itself."""
    url = ctx.settings.public_url.rstrip("/")
    state = invitations.link_state(ctx, token) if len(token) <= 100 else LinkState.UNKNOWN
    login = f"<pre>levere login --url {escape(url)} --email YOUR_EMAIL</pre>"
    match state:
        case LinkState.VALID:
            link = escape(invitations.invitation_link(ctx, token))
            return _page(
                "You are invited to levere",
                f'<p><a href="/portal/invite/{escape(token)}">Set your password in the web portal</a>, '
                "then sign in there. The link works once.</p>\n"
                "<p>Or set it with the levere command-line client, in a terminal:</p>\n"
                f"<pre>levere account accept-invite {link}</pre>\n"
                "<p>It asks for the password you choose (or reads it from <code>LEVERE_PASSWORD</code>). "
                f"Then sign in:</p>\n{login}",
                200,
            )
        case LinkState.USED:
            return _page(
                "This invitation was already used",
                f"<p>The password is set: sign in with it.</p>\n{login}",
                410,
            )
        case LinkState.REPLACED:
            return _page(
                "A newer invitation was sent",
                "<p>This link no longer works because a newer one was sent to you: use the newest link.</p>",
                410,
            )
        case LinkState.EXPIRED:
            return _page(
                "This invitation has expired",
                "<p>Ask the helpdesk or whoever invited you for a new link "
                "(the helpdesk runs <code>levere invitations resend YOUR_EMAIL</code>).</p>",
                410,
            )
    return _page(
        "This invitation link is not valid",
        "<p>Check that the whole link was copied from the message, or ask for a new one.</p>",
        404,
    )
