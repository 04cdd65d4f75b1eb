"""One line when the chain RPC goes down, at most one a minute while it stays down, one when it is back.

A node (or the explorer) polls the chain about once a second. Without this, an outage of half a
minute wrote a chained traceback per poll (~380 lines per node). The traceback of each failure is
still there with ``--debug`` (logged at DEBUG level).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import requests

from chain.errors import RpcUnreachable

REPEAT_S = 60.0


def rpc_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it was raised from) says the RPC endpoint did not answer."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(
            e,
            RpcUnreachable
            | requests.exceptions.ConnectionError
            | requests.exceptions.Timeout
            | ConnectionError
            | TimeoutError,
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


class OutageLog:
    """Says an endpoint is down once, reminds at most every ``repeat_s``, and says when it is back."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        repeat_s: float = REPEAT_S,
        state: str = "unreachable",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        self.state = state
        self.repeat_s = repeat_s
        self._clock = clock
        self.down_since: float | None = None
        self._last_line = 0.0
        self._failures = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> None:
        """One more failed call while the endpoint does not answer."""
        now = self._clock()
        self._failures += 1
        self.log.debug("%s: %s", self.what, exc, exc_info=exc)
        if self.down_since is None:
            self.down_since = self._last_line = now
            self._failures = 1
            self.log.warning(
                "%s %s (%s); retrying quietly, one line a minute until it is back",
                self.what,
                self.state,
                _short(exc),
            )
        elif now - self._last_line >= self.repeat_s:
            self._last_line = now
            self.log.warning(
                "%s still %s after %.0f s (%d failed calls; last: %s)",
                self.what,
                self.state,
                now - self.down_since,
                self._failures,
                _short(exc),
            )

    def ok(self) -> None:
        """A call went through: if the endpoint was down, say it is back."""
        if self.down_since is None:
            return
        self.log.info(
            "%s is back after %.0f s (%d failed calls while it was down)",
            self.what,
            self._clock() - self.down_since,
            self._failures,
        )
        self.down_since = None
        self._failures = 0


def _short(exc: BaseException) -> str:
    """The innermost cause's type and first line (no URL-laden chained reprs)."""
    inner = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
    text = str(inner).splitlines()[0][:160] if str(inner) else ""
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__
