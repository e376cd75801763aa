"""False alarms of the live loop's checks over stationary days, measured through the whole loop.

    .venv/bin/python benchmarks/bench_live.py --days 20

Runs the live demo (`scalping_assets.testing.live_demo`) with no change: the local Deriv server plays
SIG_AR1 as its generator makes it for `--days` whole days after the training day; the collector stores
them, a client streams every tick to a real `bentoml serve`, and the code location's sensors turn each
day into ticks, features and monitoring. Every check that failed on a day is a false alarm, since
nothing changed. Prints, per check, the days judged, the false alarms, their rate with its 95 %
Clopper-Pearson interval, and the webhook's messages (goal: at most 5 % per check per day).

The time scale leaves the service room on two cores (it answers about 1,000 predictions a second):
a day takes about two minutes; 20 days, about 45 minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from scipy.stats import binomtest

from scalping_assets.testing.live_demo import run_in_subprocess

MONITORING_JOBS = ("daily_job", "monitoring_job", "live_job")


def table(report: dict) -> list[dict]:
    """Per check: days judged, days failed."""
    judged: dict[str, set] = defaultdict(set)
    failed: dict[str, set] = defaultdict(set)
    for run in report["launched"]:
        if run["job"] not in MONITORING_JOBS:
            continue
        day = run["partition"].split("|")[0]
        for name, check in run["checks"].items():
            judged[name].add(day)
            if not check["passed"]:
                failed[name].add(day)
    rows = []
    for name in sorted(judged):
        n, k = len(judged[name]), len(failed[name])
        lo, hi = binomtest(k, n).proportion_ci(0.95, method="exact")  # Clopper-Pearson
        rows.append({"check": name, "days": n, "false_alarms": k, "rate": k / n, "lo": lo, "hi": hi, "on": sorted(failed[name])})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=20, help="stationary days (default %(default)s)")
    parser.add_argument("--time-scale", type=float, default=700.0, help="server seconds per wall second")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        options = ["--stationary-days", str(args.days), "--time-scale", str(args.time_scale), "--seed", str(args.seed)]
        options += ["--timeout", str(args.days * 86_400 / args.time_scale * 3 + 900)]
        done, report = run_in_subprocess(Path(tmp) / "live", *options)
        if report is None:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
            return 1
    rows = table(report)
    if report["problem"] or not rows:
        print(f"the live loop did not run through: {report['problem'] or 'no day was judged'}\n{done.stdout[-4000:]}")
        return 1
    print(f"{args.days} stationary SIG_AR1 days through the live loop (seed {args.seed}, clock x{args.time_scale:g})")
    print(f"{'check':<36} {'days':>5} {'false alarms':>12} {'rate':>6}  95 % interval")
    for r in rows:
        on = f"  on {', '.join(r['on'])}" if r["on"] else ""
        print(f"{r['check']:<36} {r['days']:>5} {r['false_alarms']:>12} {r['rate']:>6.1%}  [{r['lo']:.1%}, {r['hi']:.1%}]{on}")
    failing = [a["text"].splitlines()[0] for a in report["alerts"] if a["text"].startswith(("Check failing", "Run failing"))]
    print(f"webhook: {len(report['alerts'])} message(s), {len(failing)} alert(s)" + "".join(f"\n  {t}" for t in failing))
    feed = report["feed"] or {}
    print(
        f"feed: {feed.get('forwarded', 0):,} ticks streamed, answers by version {feed.get('answers')}, "
        f"errors {feed.get('errors')}"
    )
    retrains = [r for r in report["launched"] if r["job"] == "retrain_job"]
    print(f"retrains triggered: {len(retrains)}" + (f" ({', '.join(r['partition'] for r in retrains)})" if retrains else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
