"""Alerts: what the monitoring says, de-duplicated into incidents, posted to a Slack-compatible webhook.

A check or a job is *watched*: each evaluation (a check's verdict, a run's end) is an `Observation` of
one subject. An incident opens on the first failing observation of a subject and says so once; further
failures of that subject send nothing; the first pass closes it and says it is resolved. The subject
leaves out the partition's UTC day: drift that persists day after day is one incident, not one message
per daily report, while the other dimensions (the symbol, the dataset) stay separate incidents.

The state (`AlertState`) is plain JSON: the Dagster sensor keeps it in its cursor. No Dagster here.

The webhook URL is a secret (a Slack incoming webhook's path is its credential): it is never logged and
never part of an exception's message or chain.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from datetime import datetime
from typing import Literal

import httpx
from pydantic import BaseModel, Field, SecretStr, ValidationError

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 0.5  # doubled after each failed attempt
# Slack's limits: a section's text, a field's text, fields per section.
_SECTION_CHARS, _FIELD_CHARS, _MAX_FIELDS = 3000, 2000, 10
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class Alert(BaseModel):
    """One message to the channel."""

    status: Literal["failing", "resolved", "notice"]
    title: str
    text: str = ""
    fields: dict[str, str] = Field(default_factory=dict)  # label -> value, in order

    def slack_body(self) -> dict:
        """Slack's incoming-webhook JSON: `text` (the notification's fallback) and blocks, escaped as mrkdwn."""
        text = _escape(f"{self.title}\n{self.text}".strip())
        blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, _SECTION_CHARS)}}]
        if self.fields:
            fields = [
                {"type": "mrkdwn", "text": _cut(f"*{_escape(label)}*\n{_escape(value)}", _FIELD_CHARS)}
                for label, value in list(self.fields.items())[:_MAX_FIELDS]
            ]
            blocks.append({"type": "section", "fields": fields})
        return {"text": text, "blocks": blocks}


def _escape(text: str) -> str:
    # mrkdwn reads <...> as links and mentions: a check's "share 0.4 > 0.3" must stay text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_day(partition: str | None) -> tuple[str, str | None]:
    """(the partition without its UTC day, the day): "2026-01-05|R_100" -> ("R_100", "2026-01-05")."""
    if not partition:
        return "", None
    parts = partition.split("|")
    days = [p for p in parts if _DAY.fullmatch(p)]
    return "|".join(p for p in parts if not _DAY.fullmatch(p)), (days[0] if days else None)


class Observation(BaseModel):
    """One evaluation of a watched subject: a check's verdict or a run's end."""

    kind: Literal["check", "run"]
    subject: str  # the same for every evaluation of one incident: "drift_share_within_threshold on drift_report [R_100]"
    failing: bool
    day: str | None = None  # the partition's UTC day, when it has one
    at: datetime
    text: str = ""  # what this evaluation said (a check's description, a run's error)
    fields: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"


class Incident(BaseModel):
    subject: str
    kind: Literal["check", "run"]
    opened_at: datetime
    day: str | None = None  # the newest failing day
    failures: int = 1  # failing evaluations while open


class IncidentBook(BaseModel):
    """The open incidents, by observation key."""

    open: dict[str, Incident] = Field(default_factory=dict)

    def observe(self, observation: Observation) -> Alert | None:
        """Record `observation`; the alert to send when it opens or closes an incident, else None."""
        key, incident = observation.key, self.open.get(observation.key)
        if observation.failing:
            if incident is not None:
                incident.failures += 1
                if observation.day and (incident.day is None or observation.day > incident.day):
                    incident.day = observation.day
                return None
            self.open[key] = Incident(
                subject=observation.subject, kind=observation.kind, opened_at=observation.at, day=observation.day
            )
            return Alert(
                status="failing",
                title=f"{'Check' if observation.kind == 'check' else 'Run'} failing: {observation.subject}",
                text=observation.text,
                fields=observation.fields,
            )
        # A backfill passing an older day says nothing about the newer day that fails.
        if incident is None or (observation.day and incident.day and observation.day < incident.day):
            return None
        del self.open[key]
        return Alert(
            status="resolved",
            title=f"Resolved: {observation.kind} {observation.subject}",
            text=observation.text,
            fields={
                **observation.fields,
                "open since": incident.opened_at.isoformat(timespec="seconds"),
                "failed evaluations": str(incident.failures),
            },
        )


class AlertStateError(ValueError):
    """A sensor cursor that is not an `AlertState`; the message names the field."""


class AlertState(BaseModel):
    """What the alert sensor keeps between ticks (its cursor)."""

    after: int  # storage id of the last run-end event handled
    incidents: IncidentBook = Field(default_factory=IncidentBook)
    # A run whose alerts were only partly delivered (the webhook failed): how many of its items went
    # out, so the retry does not repeat them.
    pending_run: str | None = None
    delivered: int = 0

    @classmethod
    def parse(cls, cursor: str) -> AlertState:
        try:
            return cls.model_validate_json(cursor)
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'cursor'}: {e['msg']}" for e in exc.errors())
            raise AlertStateError(f"alert sensor cursor is not an alert state ({where}); reset the sensor's cursor") from None

    def dump(self) -> str:
        return self.model_dump_json()


class AlertDeliveryError(RuntimeError):
    """The webhook refused or could not be reached; the message never contains its URL."""


def _redact(text: str, url: str) -> str:
    """`text` without the URL, as given or as httpx normalises it, nor its path and query (the credential)."""
    try:
        parsed = httpx.URL(url)
        forms = [url, str(parsed), parsed.raw_path.decode(errors="replace")]
    except httpx.InvalidURL:
        forms = [url]
    for form, mask in zip(forms, ("<webhook>", "<webhook>", "/<redacted>"), strict=False):
        if len(form) > 1:
            text = text.replace(form, mask)
    return text


class _RedactUrl(logging.Filter):
    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _redact(message, self.url)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


@contextmanager
def _url_hidden_from_httpx_logs(url: str):
    # httpx logs every request's full URL at INFO; the URL is the secret.
    logger, hide = logging.getLogger("httpx"), _RedactUrl(url)
    logger.addFilter(hide)
    try:
        yield
    finally:
        logger.removeFilter(hide)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def send(
    webhook_url: SecretStr | str,
    alert: Alert,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> None:
    """POST `alert` to the webhook, retrying a timeout, a lost connection, 429 and 5xx up to `attempts`
    times; raises `AlertDeliveryError` (without the URL) when it is not delivered."""
    url = webhook_url.get_secret_value() if isinstance(webhook_url, SecretStr) else webhook_url
    if not url.startswith(("http://", "https://")):
        raise AlertDeliveryError("the webhook URL (SCALPING_ALERT_WEBHOOK_URL) is not an http:// or https:// URL")
    problem = "not attempted"
    with _url_hidden_from_httpx_logs(url), httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        for attempt in range(max(1, attempts)):
            if attempt:
                time.sleep(backoff_s * 2 ** (attempt - 1))
            try:
                response = client.post(url, json=alert.slack_body())
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                problem = f"{type(exc).__name__}: {_redact(str(exc), url)}"
                continue
            if response.is_success:
                return
            problem = f"the webhook answered {response.status_code} {_redact(response.text[:200], url)}".rstrip()
            if not _retryable(response.status_code):
                break
    # `from None`: httpx's own exception, were it chained, would name the URL.
    raise AlertDeliveryError(f"alert not delivered after {attempt + 1} attempt(s): {problem}") from None
