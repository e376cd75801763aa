"""One source for the deployment's settings: folders, URIs, seed and keys, read from the environment.

The Dagster resources (`definitions.build_resources`), the `scalping` CLI and the prediction service
all start from `Settings()`. Each field names its variable; an explicit argument (a CLI flag, a test)
wins over the environment, the environment over the default. Secrets are `SecretStr`: they never
appear in a repr, a log line or the Dagster UI.

`symbols` and `start_day` are what the deployment tracks: the Dagster (day, symbol) partitions are
those symbols on every UTC day from the start day (`scalping_assets.partitions`), not the whole
catalogue since the simulator's origin.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from scalping_assets.market.symbols import catalog

# The default deployment tracks what `scalping demo` simulates (its --symbols default: the tracked
# symbols the simulator generates) from the simulator's origin (its --start default); a test keeps the
# day equal to `simulator.DEFAULT_ORIGIN`, not imported: the simulator would pull pandas and scipy into
# the prediction service.
DEFAULT_SYMBOLS = ("R_100", "1HZ50V", "CRASH1000", "BOOM500", "JD25", "stpRNG", "RDBULL", "SIG_AR1")
DEFAULT_START_DAY = date(2026, 1, 1)
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"  # what `make mlflow` serves


def _env(name: str) -> AliasChoices:
    # Field name for keyword arguments, the variable for the environment.
    return AliasChoices(name.lower().removeprefix("scalping_"), name)


class Settings(BaseSettings):
    # An empty variable counts as unset: `SCALPING_PREDICTION_LOG=` means the default folder, not the
    # working directory, and `SCALPING_ACCESS_LOG=` off rather than a validation error.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True, env_ignore_empty=True)

    data_dir: Path = Field(default=Path("data"), validation_alias=_env("SCALPING_DATA_DIR"))
    seed: int = Field(default=7, validation_alias=_env("SCALPING_SEED"), description="simulator seed")
    tracking_uri: str = Field(
        default="",
        validation_alias=AliasChoices("tracking_uri", "MLFLOW_TRACKING_URI"),
        description="empty: SQLite under the data folder",
    )
    # Where people open MLflow: the links in the Dagster UI and the CLI. Unset, a tracking URI that is
    # itself an MLflow server (http or https) is its own UI.
    mlflow_ui_url: str = Field(
        default=DEFAULT_MLFLOW_UI_URL,
        validation_alias=_env("MLFLOW_UI_URL"),
        description="MLflow UI base URL for links (default: what `make mlflow` serves)",
    )
    # What the deployment tracks: the Dagster partitions are these symbols, every UTC day from start_day.
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_SYMBOLS,
        validation_alias=_env("SCALPING_SYMBOLS"),
        description="comma-separated catalogue symbols the deployment collects or simulates",
    )
    start_day: date = Field(default=DEFAULT_START_DAY, validation_alias=_env("SCALPING_START_DAY"), description="first UTC day")
    # Where the deployment's ticks come from: the seeded simulator (the embedded demo), or Deriv, whose
    # days `scalping collect` stores and a sensor turns into partitions (history backfills a missing day).
    tick_source: Literal["simulator", "deriv"] = Field(
        default="simulator", validation_alias=_env("SCALPING_TICK_SOURCE"), description="simulator or deriv"
    )
    # When the day's partitions are requested (UTC cron): after midnight, once the day is complete. The
    # rehearsal runs it every minute ("* * * * *"), and turns it off after its first run.
    daily_cron: str = Field(
        default="15 0 * * *", validation_alias=_env("SCALPING_DAILY_CRON"), description="UTC cron of daily_ticks_schedule"
    )
    deriv_url: str = Field(
        default="",
        validation_alias=AliasChoices("deriv_url", "DERIV_WS_URL"),
        description="empty: Deriv's own endpoint",
    )
    # The service
    model: str = Field(default="", validation_alias=_env("SCALPING_MODEL"), description="empty: the latest model with a champion")
    api_key: SecretStr = Field(default=SecretStr(""), validation_alias=_env("SCALPING_API_KEY"), description="empty: no auth")
    challenger_share: float = Field(default=0.0, ge=0, le=1, validation_alias=_env("SCALPING_CHALLENGER_SHARE"))
    precision: Literal["auto", "fp32", "int8"] = Field(default="auto", validation_alias=_env("SCALPING_PRECISION"))
    prediction_log: Path | None = Field(default=None, validation_alias=_env("SCALPING_PREDICTION_LOG"))
    bundle_cache: Path | None = Field(default=None, validation_alias=_env("SCALPING_BUNDLE_CACHE"))
    workers: int = Field(default=2, ge=1, validation_alias=_env("SCALPING_WORKERS"))
    # A new champion is served without anyone calling /reload: the service looks at the aliases this often.
    follow_interval_s: float = Field(
        default=30.0, ge=0, validation_alias=_env("SCALPING_FOLLOW_INTERVAL"), description="0: only POST /reload"
    )
    access_log: bool = Field(default=False, validation_alias=_env("SCALPING_ACCESS_LOG"))
    # Where the canary reads the service's /metrics (the challenger's error rate and p99 during a rollout).
    service_url: str = Field(
        default="http://127.0.0.1:3000", validation_alias=_env("SCALPING_SERVICE_URL"), description="the prediction service"
    )
    # Monitoring. A Slack incoming-webhook URL carries its own credential in its path: a secret. Not
    # validated here: pydantic's error would quote the value; `alerts.send` refuses a non-http(s) one.
    alert_webhook_url: SecretStr | None = Field(
        default=None,
        validation_alias=_env("SCALPING_ALERT_WEBHOOK_URL"),
        description="Slack-compatible incoming webhook for alerts; empty: alert_sensor skips",
    )
    # The paper trader's journal: a PostgreSQL URL (it may hold a password: a secret); empty: SQLite
    # under the data folder.
    paper_db: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=_env("SCALPING_PAPER_DB"),
        description="SQLAlchemy URL of the paper journal, e.g. postgresql+psycopg2://...; empty: data/paper/journal.sqlite",
    )
    retrain_days: int = Field(
        default=7, ge=1, validation_alias=_env("SCALPING_RETRAIN_DAYS"), description="collected days a retrain trains on"
    )
    # How many runs the run queue starts side by side: a backfill is a run per (day, symbol) partition.
    # A run holds about one partition's data, so the cores, not memory, are the limit.
    max_concurrent: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        validation_alias=_env("SCALPING_MAX_CONCURRENT"),
        description="runs (a backfill's partitions) the run queue runs at once; default: the CPU cores",
    )

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):  # the variable: "R_100, SIG_AR1"
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("symbols")
    @classmethod
    def _known_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = catalog()
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(
                f"unknown symbol{'s' * (len(unknown) > 1)} {', '.join(unknown)} in SCALPING_SYMBOLS; "
                f"the catalogue (`scalping symbols`): {', '.join(known)}"
            )
        if not value:
            raise ValueError("SCALPING_SYMBOLS names no symbol: the deployment would track nothing")
        return tuple(dict.fromkeys(value))  # each once, in the given order

    def folder(self, name: str) -> Path:
        return self.data_dir / name

    def mlflow_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    def prediction_log_dir(self) -> Path:
        return self.prediction_log or self.folder("predictions")

    def bundle_cache_dir(self) -> Path:
        return self.bundle_cache or self.folder("serving-cache")

    def env_var(self, field: str) -> str | None:
        """The variable that set `field`, or None when it was given or defaulted: where the UI says it came from."""
        for name in type(self).model_fields[field].validation_alias.choices:
            if name.isupper() and os.environ.get(name) == str(getattr(self, field)):
                return name
        return None
