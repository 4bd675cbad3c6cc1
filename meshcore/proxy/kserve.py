"""The KServe v2 protocol as the proxy needs it: which route a path is, and a request's sequence.

Paths are matched without regular expressions on the hot path: split on "/" and compared
part by part. Bodies are not parsed except to find a Triton sequence (`sequence_id` in the
request parameters), in the JSON body or in the JSON header of the binary tensor extension.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import orjson

INFER, MODEL_METADATA, MODEL_CONFIG, MODEL_READY = "infer", "model_metadata", "model_config", "model_ready"
SERVER_METADATA, HEALTH_LIVE, HEALTH_READY, REPOSITORY = "server_metadata", "health_live", "health_ready", "repository"
MODEL_ROUTES = {INFER, MODEL_METADATA, MODEL_CONFIG, MODEL_READY}
# What each model route allows.
METHODS = {
    INFER: "POST",
    MODEL_METADATA: "GET",
    MODEL_CONFIG: "GET",
    MODEL_READY: "GET",
    SERVER_METADATA: "GET",
    HEALTH_LIVE: "GET",
    HEALTH_READY: "GET",
}


@dataclass(frozen=True, slots=True)
class Route:
    kind: str
    model: str = ""
    version: str = ""
    upstream_path: str = ""  # the path on the Triton server


class NotARoute(ValueError):
    pass


def parse_path(path: str) -> Route:
    """`path` is what follows the proxy's prefix, e.g. `v2/models/m/versions/2/infer`."""
    parts = path.strip("/").split("/")
    if not parts or parts[0] != "v2":
        raise NotARoute("Not a KServe v2 path: paths start with /proxy/v2/.")
    rest = parts[1:]
    if not rest or rest == [""]:
        return Route(SERVER_METADATA)
    if rest == ["health", "live"]:
        return Route(HEALTH_LIVE)
    if rest == ["health", "ready"]:
        return Route(HEALTH_READY)
    if rest[0] == "repository":
        return Route(REPOSITORY)
    if rest[0] != "models" or len(rest) < 2 or not rest[1]:
        raise NotARoute(f"No route /v2/{'/'.join(rest)}.")
    model, tail, version = rest[1], rest[2:], ""
    if len(tail) >= 2 and tail[0] == "versions":
        version, tail = tail[1], tail[2:]
        if not version:
            raise NotARoute("An empty model version.")
    base = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    if not tail:
        return Route(MODEL_METADATA, model, version, base)
    if tail == ["config"]:
        return Route(MODEL_CONFIG, model, version, base + "/config")
    if tail == ["ready"]:
        return Route(MODEL_READY, model, version, base + "/ready")
    if tail == ["infer"]:
        return Route(INFER, model, version, base + "/infer")
    raise NotARoute(f"No route /v2/models/{model}/{'/'.join(tail)}.")


@dataclass(frozen=True, slots=True)
class Sequence:
    id: str | int
    start: bool
    end: bool


class MalformedRequest(ValueError):
    pass


def find_sequence(body: bytes, header_length: int | None, encoding: str) -> Sequence | None:
    """The Triton sequence a request belongs to, or None. Only the JSON part is read."""
    if b"sequence_id" not in body and not encoding:
        return None  # the common case: one scan of the bytes, no JSON parse
    if encoding:
        body = _decompress(body, encoding)
        if b"sequence_id" not in body:
            return None
    if header_length is not None:
        if header_length > len(body):
            raise MalformedRequest("Inference-Header-Content-Length is larger than the body.")
        body = body[:header_length]
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"The inference request is not valid JSON: {error}") from None
    parameters = request.get("parameters") if isinstance(request, dict) else None
    if not isinstance(parameters, dict) or "sequence_id" not in parameters:
        return None
    sequence_id = parameters["sequence_id"]
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, int | str) or sequence_id in (0, ""):
        return None  # Triton treats 0 and "" as no sequence
    return Sequence(sequence_id, bool(parameters.get("sequence_start")), bool(parameters.get("sequence_end")))


def _decompress(body: bytes, encoding: str) -> bytes:
    try:
        if encoding == "gzip":
            return zlib.decompress(body, wbits=31)
        if encoding == "deflate":
            return zlib.decompress(body)
    except zlib.error as error:
        raise MalformedRequest(f"The body is not valid {encoding}: {error}") from None
    raise MalformedRequest(f"Content-Encoding {encoding!r} is not supported; use gzip or deflate.")
