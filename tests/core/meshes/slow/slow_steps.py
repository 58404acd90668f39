import asyncio
from typing import Any


async def nap(payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(payload["seconds"])
    return {**payload, "napped": True}
