"""The official Deriv API v3 JSON schemas, and validation of messages against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from jsonschema import Draft4Validator

CALLS = ("active_symbols", "forget", "forget_all", "ping", "ticks", "ticks_history", "time", "website_status")


class SchemaViolation(ValueError):
    """A message that breaks the official schema; the message names the call and the field."""


def call_of(request: dict) -> str | None:
    """The API call a request names (its method key), or None."""
    return next((key for key in CALLS if key in request), None)


@cache
def validator(call: str, direction: str) -> Draft4Validator:
    if call not in CALLS or direction not in ("send", "receive"):
        raise ValueError(f"no schema for {call}/{direction}")
    text = resources.files(__package__).joinpath("deriv_schemas", call, f"{direction}.json").read_text()
    return Draft4Validator(json.loads(text))


def violations(message: dict, call: str, direction: str) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(message)'}: {e.message}"
        for e in validator(call, direction).iter_errors(message)
    ]


def validate_request(request: dict) -> str:
    """Raise SchemaViolation unless `request` is a valid v3 request; returns its call."""
    call = call_of(request)
    if call is None:
        raise SchemaViolation(f"unrecognised request (none of {', '.join(CALLS)}): {sorted(request)}")
    problems = violations(request, call, "send")
    if problems:
        raise SchemaViolation(f"{call} request breaks the send schema: {'; '.join(problems)}")
    return call


def response_violations(response: dict) -> list[str]:
    """Schema problems of a response to (or stream message of) the call named in its echo_req."""
    call = call_of(response.get("echo_req", {}))
    if call is None:
        return [f"echo_req names no known call: {response.get('echo_req')!r}"]
    return violations(response, call, "receive")
