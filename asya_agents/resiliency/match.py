"""Reading an exception the way a policy needs: its class, its HTTP status, Retry-After.

Handlers raise whatever their client library raises (litellm, httpx, requests, openai),
and never translate errors for the runtime's sake. So the policies look for what these
libraries have in common: a ``status_code`` or ``status`` attribute, or a ``response``
with one, and the response's ``Retry-After`` / ``retry-after-ms`` headers. A class
match names the module too (``litellm.RateLimitError``) and covers subclasses, so a
policy for ``builtins.ConnectionError`` also catches ``ConnectionResetError``.
"""

from __future__ import annotations

import email.utils
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["ErrorMatcher", "http_status", "retry_after"]

_CHAIN_DEPTH = 4


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """The exception and the few it was raised from: libraries wrap the HTTP error."""
    seen: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _int_status(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 100 <= value <= 599:
        return value
    if isinstance(value, str) and value.isdigit():
        return _int_status(int(value))
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status carried by ``exc`` (or the error it was raised from), if any."""
    for err in _chain(exc):
        for holder in (err, getattr(err, "response", None)):
            for name in ("status_code", "status"):
                status = _int_status(getattr(holder, name, None))
                if status is not None:
                    return status
    return None


def _headers(exc: BaseException) -> Mapping[str, Any] | None:
    for err in _chain(exc):
        headers = getattr(getattr(err, "response", None), "headers", None)
        if headers is None:
            headers = getattr(err, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            return headers  # type: ignore[no-any-return]
    return None


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return None if value is None else str(value).strip()


def retry_after(exc: BaseException, *, now: Callable[[], float]) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` (more precise) or
    ``Retry-After`` (seconds or an HTTP date); ``None`` when it said nothing usable."""
    headers = _headers(exc)
    if headers is None:
        return None
    millis = _header(headers, "retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)


def _status_test(entry: str) -> Callable[[int], bool]:
    if entry.endswith("xx"):
        hundred = int(entry[0])
        return lambda status: status // 100 == hundred
    if "-" in entry:
        low, high = (int(p) for p in entry.split("-"))
        return lambda status: low <= status <= high
    code = int(entry)
    return lambda status: status == code


def _class_names(exc: BaseException) -> set[str]:
    return {f"{k.__module__}.{k.__qualname__}" for k in type(exc).__mro__}


def _exported(path: str) -> type | None:
    """The class a re-exported path names (``litellm.RateLimitError`` is defined in
    ``litellm.exceptions``), looked up only in modules already imported: a module the
    handler never imported cannot have raised the error."""
    module, _, name = path.rpartition(".")
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


class ErrorMatcher:
    """``match`` entries of a policy (already checked by the spec) as a predicate.

    An empty list matches nothing; callers decide what "no entries" means."""

    def __init__(self, entries: Iterable[str | int]) -> None:
        self.entries = [str(e) for e in entries]
        self._statuses = [_status_test(e) for e in self.entries if e[0].isdigit()]
        self._classes = {e for e in self.entries if not e[0].isdigit()}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __call__(self, exc: BaseException) -> bool:
        if self._classes & _class_names(exc):
            return True
        for path in self._classes:
            cls = _exported(path)
            if cls is not None and isinstance(exc, cls):
                return True
        if self._statuses:
            status = http_status(exc)
            return status is not None and any(test(status) for test in self._statuses)
        return False

    def __repr__(self) -> str:
        return f"ErrorMatcher({self.entries!r})"
