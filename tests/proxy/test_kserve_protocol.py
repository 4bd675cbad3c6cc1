"""Which KServe v2 route a path is, and which Triton sequence a request belongs to."""

import gzip
import json
import zlib

import pytest

from meshcore.proxy import kserve


@pytest.mark.parametrize(
    ("path", "kind", "model", "version", "upstream"),
    [
        ("v2", kserve.SERVER_METADATA, "", "", ""),
        ("v2/health/live", kserve.HEALTH_LIVE, "", "", ""),
        ("v2/health/ready", kserve.HEALTH_READY, "", "", ""),
        ("v2/models/m", kserve.MODEL_METADATA, "m", "", "/v2/models/m"),
        ("v2/models/m/versions/3", kserve.MODEL_METADATA, "m", "3", "/v2/models/m/versions/3"),
        ("v2/models/m/config", kserve.MODEL_CONFIG, "m", "", "/v2/models/m/config"),
        ("v2/models/m/ready", kserve.MODEL_READY, "m", "", "/v2/models/m/ready"),
        ("v2/models/m/infer", kserve.INFER, "m", "", "/v2/models/m/infer"),
        ("v2/models/m/versions/2/infer", kserve.INFER, "m", "2", "/v2/models/m/versions/2/infer"),
        ("v2/repository/index", kserve.REPOSITORY, "", "", ""),
    ],
)
def test_it_routes_kserve_paths(path, kind, model, version, upstream):
    route = kserve.parse_path(path)
    assert (route.kind, route.model, route.version, route.upstream_path) == (kind, model, version, upstream)


@pytest.mark.parametrize("path", ["", "v1/models/m", "v2/models", "v2/models/m/stats/x", "v2/models/m/versions//infer"])
def test_it_refuses_other_paths(path):
    with pytest.raises(kserve.NotARoute):
        kserve.parse_path(path)


def body(**parameters) -> bytes:
    return json.dumps({"inputs": [], "parameters": parameters}).encode()


def test_a_request_without_a_sequence_is_not_parsed():
    assert kserve.find_sequence(b"not json at all", None, "") is None


def test_it_finds_the_sequence_in_a_json_body():
    found = kserve.find_sequence(body(sequence_id=7, sequence_start=True), None, "")
    assert found == kserve.Sequence(7, True, False)


def test_it_finds_the_sequence_in_the_binary_extensions_header():
    header = body(sequence_id="abc", sequence_end=True)
    found = kserve.find_sequence(header + b"\x00\x01binary tensor bytes", len(header), "")
    assert found == kserve.Sequence("abc", False, True)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_it_finds_the_sequence_in_a_compressed_body(encoding):
    raw = body(sequence_id=9)
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    assert kserve.find_sequence(packed, None, encoding).id == 9


def test_a_zero_sequence_id_is_no_sequence():
    assert kserve.find_sequence(body(sequence_id=0), None, "") is None


@pytest.mark.parametrize(
    ("raw", "length", "encoding"),
    [
        (b'{"parameters": {"sequence_id": 1', None, ""),
        (body(sequence_id=1), 10_000, ""),
        (b"sequence_id garbage", None, "gzip"),
        (b"sequence_id", None, "br"),
    ],
)
def test_malformed_bodies_are_refused(raw, length, encoding):
    with pytest.raises(kserve.MalformedRequest):
        kserve.find_sequence(raw, length, encoding)
