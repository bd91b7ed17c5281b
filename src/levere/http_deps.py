"""What both HTTP front ends (the API and the web portal) share: the service context of a request
and the route metadata naming the permission-table action a route performs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from levere.context import Context
from levere.domain.roles import Action

ACTION_KEY = "x-levere-action"


def acts(action: Action | None) -> dict[str, Any]:
    """Route metadata naming the permission-table action the route performs.

    ``None`` means the route is open to every signed-in user: it acts on the caller's own account, or
    lists only what the caller may see (the service filters through the table).
    """
    return {ACTION_KEY: action.value if action else None}


def get_ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


CtxDep = Annotated[Context, Depends(get_ctx)]
