"""A handler whose process dies on one payload, the way a segfault or an OOM kill would
end it: no exception, no traceback, the replica is simply gone."""

from __future__ import annotations

import os
from typing import Any


def fragile(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("crash"):
        os._exit(1)
    return {**payload, "done": True}
