"""The first merge of a group kills its replica with SIGKILL (a marker file, named in
the payload, says whether it already did); every call is logged to that file."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any


def split(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"i": i, "marker": payload["marker"]} for i in range(int(payload["n"]))]


def merge(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    marker = Path(payloads[0]["marker"])
    with marker.open("a") as log:
        log.write(f"{len(payloads)}\n")
    if marker.read_text().count("\n") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"order": [p["i"] for p in payloads]}
