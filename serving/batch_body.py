"""How POST /predict/batch reads its body: JSON (the `FeatureWindow` schema, published in OpenAPI) or
an Arrow IPC stream (`arrow_batch`), told apart by Content-Type. Both become the same checked
`BatchWindow`s, so adaptive batching merges requests of either format into one ONNX run and every
later step (routing, calibration, metrics, the prediction log) is the same.

BentoML's services take no raw body (bentoml/BentoML#5215: not supported); the hook is the input
spec's `from_http_request`, which the server awaits for each request before batching.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from pydantic import Field
from starlette.requests import Request

from .arrow_batch import ARROW_STREAM, decode_batch
from .metrics import BATCH_BODIES
from .schemas import MAX_BATCH, BatchWindow, FeatureWindow

if TYPE_CHECKING:
    from _bentoml_impl.serde import Serde

JSON = "application/json"


class UnsupportedMediaType(BentoMLException):
    """A body in neither format: 415, naming both."""

    error_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class BatchRequest(bentoml.IODescriptor):
    """The body of /predict/batch as JSON; the same windows may come as an Arrow IPC stream."""

    windows: Annotated[list[FeatureWindow], Field(min_length=1, max_length=MAX_BATCH)]

    @classmethod
    async def from_http_request(cls, request: Request, serde: Serde) -> BatchRequest:
        # No content type is JSON, as for BentoML's own endpoints.
        media_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
        if media_type == ARROW_STREAM:
            windows = decode_batch(await request.body())
        elif media_type == JSON:
            parsed = await super().from_http_request(request, serde)
            windows = [BatchWindow(w.symbol, w.client_id, np.asarray(w.features, np.float64)) for w in parsed.windows]
        else:
            raise UnsupportedMediaType(f"content-type {media_type!r} is not read here: send {JSON} or {ARROW_STREAM}")
        BATCH_BODIES.labels(format="arrow" if media_type == ARROW_STREAM else "json").inc()
        # Built unvalidated: the windows were checked above and hold arrays, where the JSON schema has lists.
        return cls.model_construct(windows=windows)
