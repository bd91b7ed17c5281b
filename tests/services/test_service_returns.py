"""The return convention of the use cases: what a front end calls returns frozen views.

A use case takes the service context first (``ctx``) and opens its own transaction; building blocks
that run inside another use case's transaction take a ``session`` and may pass rows between them.
Neither ORM rows nor dicts leave a use case, so the API, the CLI and a portal read the same fields.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re

import levere.services
from levere.db.models import Base
from levere.services import portal_views, sync_views, views

#: use cases whose result is not a view by nature: a stream of bytes, the data plane's batch report
#: (the data plane's own type), and the mail dispatcher's bookkeeping
NOT_VIEWS = {"downloads.open_file", "batches.ingest", "notify.catch_up"}
ORM_NAMES = {mapper.class_.__name__ for mapper in Base.registry.mappers}


def use_cases() -> dict[str, str]:
    """``module.function`` -> its return annotation, for every use case in levere.services."""
    found = {}
    for info in pkgutil.iter_modules(levere.services.__path__):
        module = importlib.import_module(f"levere.services.{info.name}")
        for name, fn in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != module.__name__:
                continue
            params = list(inspect.signature(fn).parameters)
            if params[:1] != ["ctx"] or "session" in params:
                continue
            found[f"{info.name}.{name}"] = str(inspect.signature(fn).return_annotation)
    return found


def test_no_use_case_returns_a_database_row_or_a_dict() -> None:
    found = use_cases()
    # the walk sees the API's use cases and the portal's screens alike
    assert {
        "projects.list_projects",
        "overview.dashboard",
        "portal_views.home",
        "portal_sessions.begin",
    } <= set(found)
    bad = {}
    for name, annotation in found.items():
        words = set(re.findall(r"[A-Za-z_]+", annotation))
        if name not in NOT_VIEWS and (words & ORM_NAMES or words & {"dict", "Any", "Mapping"}):
            bad[name] = annotation
    assert not bad, f"use cases returning rows or dicts: {bad}"


def test_every_view_is_frozen() -> None:
    kinds = [
        v
        for module in (views, portal_views, sync_views)
        for v in vars(module).values()
        if inspect.isclass(v) and dataclasses.is_dataclass(v) and v.__module__ == module.__name__
    ]
    assert len(kinds) > 20 and portal_views.ProjectScreen in kinds and sync_views.FreedView in kinds
    thawed = [k.__name__ for k in kinds if not k.__dataclass_params__.frozen]  # type: ignore[attr-defined]
    assert not thawed
