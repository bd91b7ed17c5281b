"""The service context: settings, database, storage tiers, mail and jobs, built once per process.

Design notes
------------
Use cases are plain functions taking a :class:`Context` first. Each owns one transaction
(:meth:`Context.tx`); side effects that must not happen unless the transaction commits (e-mail,
background jobs) are queued on the session with :func:`after_commit` and run once it has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from levere.config import Settings
from levere.db.engine import make_engine, make_sessionmaker
from levere.domain.errors import ConfigurationError, LevereError
from levere.domain.tiers import TIER_PROPERTIES, Tier
from levere.storage import Backend, LocalSpec, Wrapper, build_backend
from levere.storage.encrypting import EncryptingBackend

if TYPE_CHECKING:
    from levere.jobs.queue import JobQueue

_AFTER_COMMIT = "levere_after_commit"
#: the audit anchor sink's key among the built backends (not a tier name)
_SINK = "audit-anchor-sink"


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    _tiers: dict[str, Backend] = field(default_factory=dict)
    #: layers laid over every tier's backend (:mod:`levere.storage.factory`); worker processes
    #: build the same layers from the tier's recipe
    wrappers: tuple[Wrapper, ...] = ()
    #: layers laid over one tier's backend only, after :attr:`wrappers` (the secure tier's
    #: encryption is always there, see :meth:`tier_wrappers`)
    extra_wrappers: dict[str, tuple[Wrapper, ...]] = field(default_factory=dict)
    jobs: JobQueue | None = None
    #: set when the process is stopping: long tasks end at their next safe point and leave the
    #: rest of their work to the next worker
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def build(cls, settings: Settings) -> Context:
        engine = make_engine(settings.resolved_database_url)
        return cls(settings=settings, engine=engine, sessions=make_sessionmaker(engine))

    def backend(self, tier: Tier) -> Backend:
        """The backend where ``tier``'s bytes live, as configured (built once per process)."""
        name = Tier(tier).value
        if name not in self._tiers:
            spec = self.settings.tier_spec(name)
            if getattr(self.settings.tiers, name) is None and isinstance(spec, LocalSpec):
                # the embedded default keeps every tier under the data directory: make it on first use
                spec.root.mkdir(parents=True, exist_ok=True)
            self._tiers[name] = build_backend(
                spec,
                write_once=TIER_PROPERTIES[Tier(tier)].write_once,
                wrappers=self.tier_wrappers(Tier(tier)),
            )
        return self._tiers[name]

    def tier_wrappers(self, tier: Tier) -> tuple[Wrapper, ...]:
        """The layers of ``tier``'s backend: the shared ones, the tier's own, and on a tier that
        holds sensitive data (none may hold its plaintext) the Crypt4GH layer, outermost, so that
        nothing reaches the tier but bodies."""
        layers = self.wrappers + self.extra_wrappers.get(tier.value, ())
        if tier is Tier.SECURE:
            layers += (partial(EncryptingBackend, master_key_file=self.settings.secure.master_key_file),)
        return layers

    def anchor_sink(self) -> Backend | None:
        """The second place audit anchors go (``[audit] anchor_sink``), if one is configured."""
        spec = self.settings.audit.anchor_sink
        if spec is None:
            return None
        if _SINK not in self._tiers:
            self._tiers[_SINK] = build_backend(spec, write_once=True)
        return self._tiers[_SINK]

    def check_tiers(self) -> None:
        """Refuse to start unless every tier can store objects now: a configured local root must
        exist (levere never creates one: an unmounted share would fill the disk under it) and be
        writable, an S3 bucket must answer. The first problem found is raised, naming its tier."""
        for tier in Tier:
            try:
                backend = self.backend(tier)
                backend.check_ready()
            except LevereError as exc:
                raise ConfigurationError(f"cannot start: tier {tier.value}: {exc.message}") from None

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on error, then run after-commit hooks."""
        session = self.sessions()
        hooks: list[Callable[[], Any]] = []
        session.info[_AFTER_COMMIT] = hooks
        try:
            with session.begin():
                yield session
        finally:
            session.close()
        for hook in hooks:
            hook()

    @cached_property
    def mailer(self) -> Any:
        from levere.services.mail import Mailer

        return Mailer(self.settings.smtp)

    def close(self) -> None:
        self.engine.dispose()


def after_commit(session: Session, hook: Callable[[], Any]) -> None:
    """Run ``hook`` once the session's transaction has committed (never if it rolls back)."""
    hooks = session.info.get(_AFTER_COMMIT)
    if hooks is None:
        # a session not opened through Context.tx: fall back to SQLAlchemy's own event
        event.listen(session, "after_commit", lambda _s: hook(), once=True)
        return
    if hook not in hooks:
        hooks.append(hook)
