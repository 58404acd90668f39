"""Figures, table, JSON and plots of bench/bench_spike.py's runs.

Everything here is computed from what the runs recorded (arrival and end of every job,
one sample a second), the same way for both designs. Definitions:

- **lost**: sent and never ended (succeeded or failed) within the run's window.
- **latency**: from a job's arrival time to its end, for the jobs that succeeded.
- **goodput**: jobs that succeeded per second, counted over the spike's window (by the
  time they ended). Plain completions, not only those within the SLO: a chain that
  finishes old jobs late still gets credit for the work, so the ratio is the harder bar
  for the mesh; the share within ``--slo`` is shown beside it.
- **drained**: seconds from the spike's end until every job that had arrived by then
  had ended; ``None`` when some had not by the end of the window.
- **GPU-s held / busy**: replica-seconds (worker-seconds) of the gpu step, and those
  running a job: what the GPUs cost, and what they did for it.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

STEPS = ("fast", "llm", "gpu")
COLORS = {"fast": "tab:blue", "llm": "tab:orange", "gpu": "tab:red"}
TITLES = {"rest": "before: REST chain, scaled as one unit",
          "mesh": "after: actor mesh on RabbitMQ, each actor on its own"}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _design(run: Any, load: Any, slo: float) -> dict[str, Any]:
    start, end = (run.t0 + edge for edge in load.window)
    ok = {j: at for j, (status, at) in run.ended.items() if status == "succeeded"}
    latency = [ok[j] - run.arrivals[j] for j in ok]
    in_spike = [j for j, at in ok.items() if start <= at < end]
    spike_jobs = [j for j, at in run.arrivals.items() if at <= end]
    drained = (max(run.ended[j][1] for j in spike_jobs) - end
               if spike_jobs and all(j in run.ended for j in spike_jobs) else None)
    gpus = [s["replicas"]["gpu"] for s in run.samples]
    busy = sum(s["busy_gpus"] for s in run.samples)
    return {
        "sent": len(run.arrivals), "succeeded": len(ok),
        "failed": sum(1 for status, _ in run.ended.values() if status == "failed"),
        "lost": len(run.arrivals) - len(run.ended),
        "rate_limited": sum(s["rate_limited"] for s in run.samples),
        "failed_calls": round(sum(s["errors"] for s in run.samples)),
        "latency_p50": percentile(latency, 0.5), "latency_p95": percentile(latency, 0.95),
        "latency_p99": percentile(latency, 0.99),
        "goodput": len(in_spike) / load.spike,
        "goodput_slo": sum(1 for j in in_spike if ok[j] - run.arrivals[j] <= slo) / load.spike,
        "drained_after_spike": drained,
        "waiting_at_end": _waiting(run.samples[-1]) if run.samples else None,
        "peak_replicas": {s: max(r["replicas"][s] for r in run.samples) for s in STEPS},
        "peak_processes": max(sum(r["replicas"].values()) for r in run.samples),
        "gpu_seconds_held": sum(gpus), "gpu_seconds_busy": busy,
        "gpu_use": busy / sum(gpus) if sum(gpus) else None,
        "steady_gpus": statistics.mean(gpus[: int(load.pre)]) if load.pre >= 1 else None,
        "budget": run.workers,
    }


def _waiting(sample: dict[str, Any]) -> int:
    return int(sum(sample["depth"].values()) + sample.get("inbox", 0))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: dict[str, Any], load: Any, args: Any) -> dict[str, Any]:
    designs = {name: _design(run, load, args.slo) for name, run in runs.items()}
    report: dict[str, Any] = {
        "command": " ".join(["python", "bench/bench_spike.py", *sys.argv[1:]]),
        "load": {"steady": load.steady, "spike": load.steady * load.factor,
                 "phases_s": [load.pre, load.spike, load.post], "grace_s": load.grace},
        "provider_rate": args.rate, "provider_burst_s": args.provider_burst,
        "gpu_seconds": args.gpu_seconds, "slo_s": args.slo,
        "rest_workers_per_step": args.rest_workers, "designs": designs, "ratios": {},
        "goals": {},
    }
    if "mesh" in designs:
        mesh = designs["mesh"]
        peak = mesh["peak_replicas"]
        report["goals"] = {
            "mesh_every_job_ended_none_lost": mesh["lost"] == 0 and mesh["failed"] == 0,
            "mesh_drained_after_spike": mesh["drained_after_spike"] is not None,
            "only_gpu_scaled": peak["gpu"] > 1 and peak["fast"] <= 1 and peak["llm"] <= 1,
        }
    if {"mesh", "rest"} <= designs.keys():
        mesh, rest = designs["mesh"], designs["rest"]
        report["ratios"] = {
            "goodput": _ratio(mesh["goodput"], rest["goodput"]),
            "goodput_slo": _ratio(mesh["goodput_slo"], rest["goodput_slo"]),
            "latency_p95_rest_over_mesh": _ratio(rest["latency_p95"], mesh["latency_p95"]),
            "gpu_seconds_held": _ratio(mesh["gpu_seconds_held"], rest["gpu_seconds_held"]),
        }
        report["goals"]["goodput_at_least_2x"] = (report["ratios"]["goodput"] or 0) >= 2.0
        # Same budget at the peak: the chain has the most workers that fit in what the
        # mesh used at its peak, a chain scaled as one unit growing 3 workers at a time.
        used, chain = mesh["peak_processes"], rest["peak_processes"]
        report["budget"] = {"mesh_peak_processes": used, "rest_processes": chain,
                            "same_budget": chain <= used < chain + len(STEPS)}
    return report


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_table(report: dict[str, Any]) -> None:
    load = report["load"]
    print(f"\nload: {load['steady']:g} jobs/s, {load['spike']:g} jobs/s for "
          f"{load['phases_s'][1]:g} s, {load['steady']:g} jobs/s (phases "
          f"{'/'.join(f'{p:g}' for p in load['phases_s'])} s, then up to "
          f"{load['grace_s']:g} s to end); provider {report['provider_rate']:g} calls/s "
          f"(burst {report['provider_burst_s']:g} s); "
          f"gpu {report['gpu_seconds']:g} s/job; SLO {report['slo_s']:g} s")
    rows = [("sent", "sent", 0), ("succeeded", "succeeded", 0), ("failed", "failed", 0),
            ("lost", "lost", 0), ("429s at the provider", "rate_limited", 0),
            ("failed calls / hops", "failed_calls", 0), ("latency p50 s", "latency_p50", 1),
            ("latency p95 s", "latency_p95", 1), ("latency p99 s", "latency_p99", 1),
            ("goodput in spike, jobs/s", "goodput", 2),
            (f"  of it within {report['slo_s']:g} s", "goodput_slo", 2),
            ("drained s after spike", "drained_after_spike", 1),
            ("waiting at the end", "waiting_at_end", 0),
            ("peak processes (steps)", "peak_processes", 0),
            ("GPU-s held", "gpu_seconds_held", 0), ("GPU-s busy", "gpu_seconds_busy", 0),
            ("GPU use", "gpu_use", 2), ("GPUs held, steady", "steady_gpus", 1)]
    designs = report["designs"]
    print(f"{'':<28}" + "".join(f"{name:>12}" for name in designs))
    for label, key, digits in rows:
        print(f"{label:<28}" + "".join(f"{_fmt(d[key], digits):>12}" for d in designs.values()))
    for name, d in designs.items():
        peak = ", ".join(f"{s} {d['peak_replicas'][s]}" for s in STEPS)
        print(f"{name}: peak replicas per step: {peak}; budget (most per step): "
              f"{d['budget']}")
    if "budget" in report:
        b = report["budget"]
        print(f"budget at the peak: mesh {b['mesh_peak_processes']} step processes, REST "
              f"chain {b['rest_processes']} (the largest chain of 3 x W that fits): "
              f"{'same budget' if b['same_budget'] else 'NOT the same budget'}")
    for key, value in report["ratios"].items():
        print(f"mesh / REST {key}: {_fmt(value, 2)}x")


# -- series and plots --------------------------------------------------------------------


def series(run: Any) -> list[dict[str, Any]]:
    """The per-second samples, with arrivals, completions and latency per second."""
    arrived: dict[int, int] = {}
    for at in run.arrivals.values():
        arrived[int(at - run.t0)] = arrived.get(int(at - run.t0), 0) + 1
    completed: dict[int, list[float]] = {}
    for job, (status, at) in run.ended.items():
        if status == "succeeded":
            completed.setdefault(int(at - run.t0), []).append(at - run.arrivals[job])
    rows = []
    for sample in run.samples:
        t = sample["t"]
        lat = completed.get(t, [])
        rows.append({**sample, "arrived": arrived.get(t, 0), "completed": len(lat),
                     "errors": round(sample["errors"], 2),
                     "latency_p50": round(statistics.median(lat), 2) if lat else None})
    return rows


def write(report: dict[str, Any], runs: dict[str, Any], load: Any, out: Path) -> None:
    (out / "spike-summary.json").write_text(json.dumps(report, indent=1) + "\n")
    data = {name: series(run) for name, run in runs.items()}
    (out / "spike-series.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    plot(data, load, out)


def replot(out: Path, load_of: Any) -> None:
    """Draw the plots again from ``out``'s spike-series.json and spike-summary.json (a
    change to the pictures needs no new run)."""
    summary = json.loads((out / "spike-summary.json").read_text())
    plot(json.loads((out / "spike-series.json").read_text()), load_of(summary["load"]), out)


def plot(data: dict[str, list[dict[str, Any]]], load: Any, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, draw, ylabel in (("depth", _depth, "jobs waiting"),
                               ("replicas", _replicas, "processes"),
                               ("completions", _completions, "jobs / s")):
        fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 3.6), sharey=True,
                                 sharex=True, squeeze=False)
        for ax, (design, rows) in zip(axes[0], data.items(), strict=True):
            ax.axvspan(*load.window, color="0.92", zorder=0)
            draw(ax, rows)
            ax.set_title(TITLES.get(design, design), fontsize=10)
            ax.set_xlabel("seconds (spike shaded)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7.5, loc="upper right", framealpha=0.9)
        axes[0][0].set_ylabel(ylabel)
        axes[0][0].set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(out / f"spike-{name}.png", dpi=90)
        plt.close(fig)


def _t(rows: list[dict[str, Any]]) -> list[int]:
    return [r["t"] for r in rows]


#: Lines of equal value overlap: the wider ones underneath stay visible.
_WIDTH = {"fast": 5.0, "llm": 3.0, "gpu": 1.5}


def _depth(ax: Any, rows: list[dict[str, Any]]) -> None:
    for step in STEPS:
        ax.plot(_t(rows), [r["depth"][step] for r in rows], color=COLORS[step],
                linewidth=_WIDTH[step], alpha=0.8, label=f"{step}: waiting")
    if "inbox" in rows[0]:
        ax.plot(_t(rows), [r["inbox"] for r in rows], color="0.3", linestyle="--",
                label="caller's inbox (no thread free)")
        ax.plot(_t(rows), [r["sleeping"] for r in rows], color="tab:purple",
                linestyle=":", label="callers asleep in backoff")


def _replicas(ax: Any, rows: list[dict[str, Any]]) -> None:
    for step in STEPS:
        ax.step(_t(rows), [r["replicas"][step] for r in rows], where="post",
                color=COLORS[step], linewidth=_WIDTH[step], alpha=0.8, label=step)
    ax.plot(_t(rows), [r["busy_gpus"] for r in rows], color="0.2", linewidth=1.0,
            linestyle=":", label="gpu: busy")


def _smooth(values: list[float], span: int = 5) -> list[float]:
    """Centred moving average: a 1.5 s step makes per-second counts zig-zag."""
    half = span // 2
    return [statistics.mean(values[max(0, i - half):i + half + 1])
            for i in range(len(values))]


def _completions(ax: Any, rows: list[dict[str, Any]]) -> None:
    done = [float(r["completed"]) for r in rows]
    ax.plot(_t(rows), _smooth([float(r["arrived"]) for r in rows]), color="0.5",
            linestyle="--", label="arrivals / s (5 s mean)")
    ax.plot(_t(rows), done, color="tab:green", alpha=0.25, linewidth=0.8)
    ax.plot(_t(rows), _smooth(done), color="tab:green", label="completions / s (5 s mean)")
    ax.bar(_t(rows), [r["rate_limited"] for r in rows], color="tab:orange", alpha=0.5,
           width=1.0, label="429s / s")
