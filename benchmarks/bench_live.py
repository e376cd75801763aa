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
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from scipy.stats import beta

from scalping_assets.testing.live_demo import REPORT

REPO = Path(__file__).resolve().parents[1]
MONITORING_JOBS = ("daily_job", "monitoring_job", "live_job")


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


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
        lo, hi = clopper_pearson(k, n)
        rows.append({"check": name, "days": n, "false_alarms": k, "rate": k / n, "lo": lo, "hi": hi, "on": sorted(failed[name])})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=20, help="stationary days (default %(default)s)")
    parser.add_argument("--time-scale", type=float, default=700.0, help="server seconds per wall second")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "live"
        command = [sys.executable, "-m", "scalping_assets.testing.live_demo", "--data-dir", str(data)]
        command += ["--stationary-days", str(args.days), "--time-scale", str(args.time_scale), "--seed", str(args.seed)]
        command += ["--timeout", str(args.days * 86_400 / args.time_scale * 3 + 900)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALPING_", "MLFLOW_", "DAGSTER_", "DERIV_"))}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if not (data / REPORT).exists():
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
            return 1
        report = json.loads((data / REPORT).read_text())
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
