"""Benchmark: what gathering a fan-out again costs (``spec.fanIn``).

A parent is fanned out into 100 children (``split``), each handled once (``work``).
The baseline lets the children end on their own (route ``split, work``: 100 records at
happy-end per group); the measured run gathers them again (route ``split, work,
gather``: 100 children recorded in the group store, one handler call, one record). Both
run in one process through the test helper (``LocalMesh``), one replica per actor, on
the embedded transport and on RabbitMQ (skipped when none listens on 127.0.0.1:5672),
and print groups per second and their ratio. The goal: gathering costs at most 25 % of
the fan-out's throughput (ratio >= 0.75).

    python bench/bench_fanin.py [--groups 30] [--children 100] [--transports embedded,rabbitmq]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asya_agents.testing import LocalMesh  # noqa: E402

MESH = ROOT / "bench" / "meshes" / "fanin"


def groups_per_second(kind: str, route: list[str], *, groups: int, children: int) -> float:
    """Groups per second from the first send to the last end, after a warm-up group."""
    with tempfile.TemporaryDirectory(prefix="asya-bench-fanin-") as state, \
            LocalMesh(MESH, transport=kind, state_dir=state) as mesh:
        mesh.join([mesh.send({"n": children}, route=route)], timeout=120)  # warm-up
        started = time.perf_counter()
        ids = [mesh.send({"n": children}, route=route) for _ in range(groups)]
        mesh.join(ids, timeout=600)
        return groups / (time.perf_counter() - started)


def rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--transports", default="embedded,rabbitmq")
    args = parser.parse_args()
    print(f"1 -> {args.children} fan-out, {args.groups} groups per run; groups/s")
    print(f"{'transport':<10} {'children end':>13} {'gathered':>9} {'ratio':>6} {'cost':>6}")
    worst = None
    for kind in args.transports.split(","):
        if kind == "rabbitmq" and not rabbitmq_up():
            print(f"{kind:<10} skipped: nothing listens on 127.0.0.1:5672")
            continue
        alone = groups_per_second(kind, ["split", "work"], groups=args.groups,
                                  children=args.children)
        gathered = groups_per_second(kind, ["split", "work", "gather"], groups=args.groups,
                                     children=args.children)
        ratio = gathered / alone
        worst = ratio if worst is None else min(worst, ratio)
        print(f"{kind:<10} {alone:>13.2f} {gathered:>9.2f} {ratio:>6.2f} {1 - ratio:>6.0%}")
    if worst is not None:
        verdict = "met" if worst >= 0.75 else "NOT met"
        print(f"goal (gathering costs at most 25 % of the fan-out's throughput): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
