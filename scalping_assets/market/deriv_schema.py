"""The official Deriv API v3 JSON schemas, and validation of messages against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from jsonschema import Draft4Validator

# The market-data calls (no account needed) ...
CALLS = ("active_symbols", "forget", "forget_all", "ping", "ticks", "ticks_history", "time", "website_status")
# ... and the calls that trade an account (`authorize` first: see `auth_required`).
TRADING_CALLS = ("authorize", "balance", "buy", "contract_update", "portfolio", "proposal", "proposal_open_contract", "sell")
# A request names its call by its method key, and a trading request carries many other fields (a
# buy's `parameters`, an update's `contract_id` and `limit_order`). No official schema gives a request
# a field named after another call, but the trading calls are checked first so that a market-data
# name among their fields could never be taken for the call.
KNOWN_CALLS = TRADING_CALLS + CALLS
MASK = "<not shown>"  # what Deriv's echo_req shows in place of a sensitive field


class SchemaViolation(ValueError):
    """A message that breaks the official schema; the message names the call and the field."""


def call_of(request: dict) -> str | None:
    """The API call a request names (its method key), or None."""
    return next((key for key in KNOWN_CALLS if key in request), None)


@cache
def schema(call: str, direction: str) -> dict:
    if call not in KNOWN_CALLS or direction not in ("send", "receive"):
        raise ValueError(f"no schema for {call}/{direction}")
    return json.loads(resources.files(__package__).joinpath("deriv_schemas", call, f"{direction}.json").read_text())


@cache
def validator(call: str, direction: str) -> Draft4Validator:
    return Draft4Validator(schema(call, direction))


def auth_required(call: str) -> bool:
    """Whether the call needs an authorized connection (its send schema's `auth_required`)."""
    return bool(schema(call, "send").get("auth_required"))


def redacted(request: dict) -> dict:
    """`request` with its sensitive fields (the send schema's `sensitive`, e.g. authorize's token) masked."""
    call = call_of(request)
    if call is None:
        return request
    fields = schema(call, "send")["properties"]
    return {
        key: ([MASK] * len(value) if isinstance(value, list) else MASK) if fields.get(key, {}).get("sensitive") else value
        for key, value in request.items()
    }


def violations(message: dict, call: str, direction: str) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(message)'}: {e.message}"
        for e in validator(call, direction).iter_errors(message)
    ]


def validate_request(request: dict) -> str:
    """Raise SchemaViolation unless `request` is a valid v3 request; returns its call."""
    call = call_of(request)
    if call is None:
        raise SchemaViolation(f"unrecognised request (none of {', '.join(KNOWN_CALLS)}): {sorted(request)}")
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
