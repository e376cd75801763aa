"""The feature catalogue: every column's name, family, formula, look-back and unit, in column order.

Notation: q_t quote, k_t = q_t / pip (integer pips), d_t = k_t - k_{t-1}, s_t = sign(d_t),
r_t = 1e4 * ln(q_t / q_{t-1}) (basis points), e_t epoch (s). A window "w" at tick t holds the last w
values ending at t. `lookback` is the number of earlier ticks a value needs: the value at tick t is a
function of ticks t - lookback .. t only, and is NaN while fewer exist (warm-up).

Values that could otherwise reach arbitrarily far back (run lengths, time since an event) are capped,
so every feature has a finite look-back and no feature depends on where a file starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IMBALANCE_WINDOWS = (10, 50, 200)
VELOCITY_WINDOWS = (20, 100)
IMPACT_WINDOWS = (20, 100)
RV_WINDOWS = (20, 100, 500)
PARKINSON_WINDOWS = (20, 100)
LEVEL_WINDOWS = (100, 500)
MOMENTUM_WINDOWS = (10, 50)
ACCEL_WINDOW = 10
MEAN_REVERSION_WINDOWS = (50, 200)
RUN_CAP = 50
EVENT_SIGMA_WINDOW = 500
EVENT_SIGMAS = 4
EVENT_HORIZON = 2000
GARCH_WINDOW = 2000
REGIME_RV_WINDOW = 100
SESSIONS = ((0, 7, 0), (7, 13, 1), (13, 22, 2), (22, 24, 0))  # UTC hours [from, to) -> session

Kind = Literal["base", "spread", "fitted"]


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    formula: str
    lookback: int
    unit: str
    kind: Kind = "base"


def _catalogue() -> tuple[Feature, ...]:
    f: list[Feature] = [
        Feature("tick_dir", "microstructure", "s_t", 1, "sign"),
        Feature("tick_size", "microstructure", "|d_t|", 1, "pips"),
    ]
    f += [Feature(f"tick_velocity_{w}", "microstructure", f"{w} / (e_t - e_{{t-{w}}})", w, "ticks/s") for w in VELOCITY_WINDOWS]
    f += [Feature(f"imbalance_{w}", "microstructure", f"mean of s over {w}", w, "fraction") for w in IMBALANCE_WINDOWS]
    f.append(
        Feature(
            "run_length",
            "microstructure",
            f"signed count of consecutive ticks ending at t with direction s_t (0 if s_t = 0), capped at {RUN_CAP}",
            RUN_CAP,
            "ticks",
        )
    )
    f += [Feature(f"impact_{w}", "microstructure", f"mean of |r| over {w}", w, "bp") for w in IMPACT_WINDOWS]
    f.append(
        Feature(
            "spread",
            "microstructure",
            "(ask_t - bid_t) / pip, rounded to whole pips; only with bid/ask on every tick",
            0,
            "pips",
            "spread",
        )
    )
    f += [Feature(f"rv_{w}", "volatility", f"sqrt(mean of r^2 over {w})", w, "bp/tick") for w in RV_WINDOWS]
    f += [
        Feature(
            f"parkinson_{w}",
            "volatility",
            f"1e4 ln(H/L) / sqrt(4 ln2 * {w}), H, L = max, min of k over t-{w}..t",
            w,
            "bp/tick",
        )
        for w in PARKINSON_WINDOWS
    ]
    f.append(
        Feature(
            "garch_sigma",
            "volatility",
            f"sqrt of the GARCH(1,1) one-step variance forecast from r over the last {GARCH_WINDOW} ticks, "
            "parameters fitted by `arch` on the training span, recursion started from arch's backcast",
            GARCH_WINDOW,
            "bp/tick",
            "fitted",
        )
    )
    f.append(
        Feature(
            "vol_regime",
            "volatility",
            f"empirical CDF of rv_{REGIME_RV_WINDOW} on the training span, evaluated at rv_{REGIME_RV_WINDOW}",
            REGIME_RV_WINDOW,
            "quantile",
            "fitted",
        )
    )
    f.append(Feature("vol_ratio", "volatility", "rv_20 / rv_500 (0 when rv_500 = 0)", 500, "ratio"))
    for w in LEVEL_WINDOWS:
        f.append(Feature(f"dist_support_{w}", "patterns", f"1e4 ln(k_t / min of k over t-{w}..t)", w, "bp"))
        f.append(Feature(f"dist_resistance_{w}", "patterns", f"1e4 ln(max of k over t-{w}..t / k_t)", w, "bp"))
    f += [Feature(f"momentum_{w}", "patterns", f"1e4 ln(q_t / q_{{t-{w}}})", w, "bp") for w in MOMENTUM_WINDOWS]
    f.append(
        Feature(
            f"accel_{ACCEL_WINDOW}",
            "patterns",
            f"momentum_{ACCEL_WINDOW}(t) - momentum_{ACCEL_WINDOW}(t-{ACCEL_WINDOW}): a burst when large",
            2 * ACCEL_WINDOW,
            "bp",
        )
    )
    f += [
        Feature(
            f"mr_z_{w}",
            "patterns",
            f"(k_t - mean of k over {w}) / (sqrt(mean of d^2 over {w}) * sqrt({w})) (0 on a flat window)",
            w,
            "z",
        )
        for w in MEAN_REVERSION_WINDOWS
    ]
    event = (
        f"event at j: d_j^2 > {EVENT_SIGMAS}^2 * mean of d^2 over j-{EVENT_SIGMA_WINDOW}..j-1 "
        "(a move beyond 4 trailing RMS moves: the spikes of Crash/Boom, the jumps of Jump indices; "
        "rare for Volatility indices, never for Step indices, so the columns are defined for every family)"
    )
    horizon = EVENT_SIGMA_WINDOW + EVENT_HORIZON
    f += [
        Feature(
            "ticks_since_event",
            "crash_boom",
            f"t - (last event j <= t), capped at {EVENT_HORIZON} (no event in the last {EVENT_HORIZON} ticks); " + event,
            horizon,
            "ticks",
        ),
        Feature("last_event_sign", "crash_boom", "s_j of the last event, 0 when ticks_since_event is capped", horizon, "sign"),
        Feature("event_rate", "crash_boom", f"events over t-{EVENT_HORIZON - 1}..t per 1000 ticks", horizon, "1/1000 ticks"),
        Feature(
            "trend_since_event",
            "crash_boom",
            "1e4 ln(q_t / q_{t-m}) / m, m = ticks_since_event (0 when m = 0)",
            horizon,
            "bp/tick",
        ),
    ]
    f += [
        Feature("hour", "time", "UTC hour of day incl. fraction, (e_t mod 86400) / 3600", 0, "hours"),
        Feature("day_of_week", "time", "UTC weekday, 0 = Monday", 0, "day"),
        Feature(
            "session",
            "time",
            "label of the real-market session by UTC hour: 0 Asia [22, 7), 1 Europe [7, 13), 2 America [13, 22). "
            "Synthetic indices trade 24/7 with constant parameters, so time carries no signal for them; "
            "a model leaning on these columns is fitting noise",
            0,
            "class",
        ),
    ]
    return tuple(f)


FEATURES = _catalogue()
BY_NAME = {feature.name: feature for feature in FEATURES}
WARMUP_TICKS = max(feature.lookback for feature in FEATURES)


def feature_names(fitted: bool = True, spread: bool = False) -> list[str]:
    """Column order of a feature matrix: base features, plus spread and fitted ones when asked for."""
    wanted = {"base"} | ({"fitted"} if fitted else set()) | ({"spread"} if spread else set())
    return [feature.name for feature in FEATURES if feature.kind in wanted]


def feature_table_markdown() -> str:
    """The catalogue as a Markdown table (docs/features.md is this text, checked by a test)."""
    lines = [
        "| feature | family | formula | look-back (ticks) | unit |",
        "|---|---|---|---|---|",
    ]
    for feature in FEATURES:
        note = {"spread": " (optional)", "fitted": " (fitted on the training span)"}.get(feature.kind, "")
        formula = feature.formula.replace("|", "\\|")
        lines.append(f"| `{feature.name}`{note} | {feature.family} | {formula} | {feature.lookback} | {feature.unit} |")
    return "\n".join(lines) + "\n"
