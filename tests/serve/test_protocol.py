"""The Open Inference Protocol v2 codec: round trips with tritonclient's own encoder and decoder
for every datatype, binary and JSON, and a 400 with a clear message for every malformed request
(a lying size is a refusal, never a crash or an over-read)."""

from __future__ import annotations

import json

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")

from avgpool.serve._protocol import (  # noqa: E402
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    V2Error,
    decode_request,
    encode_response,
)

ARRAYS = {
    "FP32": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "FP64": np.linspace(-1, 1, 6).reshape(2, 3),
    "FP16": np.array([[0.5, -2.25, 1e4]], np.float16),
    "INT64": np.array([[-(2**40), 0, 2**40]], np.int64),
    "INT32": np.array([1, -2, 3], np.int32),
    "INT16": np.array([[-300, 300]], np.int16),
    "INT8": np.array([-128, 127], np.int8),
    "UINT8": np.array([[0, 255, 7]], np.uint8),
    "UINT32": np.array([4_000_000_000], np.uint32),
    "BOOL": np.array([[True, False, True]]),
    "BYTES": np.array([b"", b"pool", "é".encode()], dtype=object),
}


def _tritonclient_body(arrays, binary, **kwargs):
    inputs = []
    for datatype, array in arrays.items():
        inp = httpclient.InferInput(f"in_{datatype}", list(array.shape), datatype)
        inp.set_data_from_numpy(array, binary_data=binary)
        inputs.append(inp)
    return httpclient.InferenceServerClient.generate_request_body(inputs, **kwargs)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_requests_decode_to_the_same_arrays(binary):
    body, json_size = _tritonclient_body(ARRAYS, binary, request_id="r1")
    assert (json_size is not None) == binary
    request = decode_request(body, json_size)
    assert request.id == "r1" and request.outputs is None and request.binary_output
    assert list(request.inputs) == [f"in_{d}" for d in ARRAYS]
    for datatype, array in ARRAYS.items():
        got = request.inputs[f"in_{datatype}"]
        assert got.shape == array.shape and got.dtype == array.dtype, datatype
        np.testing.assert_array_equal(got, array)


def test_binary_inputs_are_writable_without_a_copy():
    body, json_size = _tritonclient_body({"FP32": ARRAYS["FP32"]}, True)
    buffer = bytearray(body)
    request = decode_request(buffer, json_size)
    x = request.inputs["in_FP32"]
    assert x.flags.writeable and np.shares_memory(x, np.frombuffer(buffer, np.uint8))
    assert request.rows == 2


def test_nested_json_data_is_flattened():
    doc = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}]}
    request = decode_request(json.dumps(doc).encode())
    np.testing.assert_array_equal(request.inputs["x"], np.array([[1, 2], [3, 4]], np.int32))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_responses_parse_with_tritonclient(binary):
    outputs = {f"out_{d}": a for d, a in ARRAYS.items()}
    request = InferRequest(inputs={}, binary_output=binary, id="abc")
    body, json_size = encode_response("m", "3", outputs, request)
    assert (json_size is not None) == binary
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=json_size)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "3", "abc")
    for name, array in outputs.items():
        got = result.as_numpy(name)
        if array.dtype == object:  # JSON carries BYTES as text, as Triton's server does
            want = array.tolist() if binary else [b.decode() for b in array]
            assert got.tolist() == want
        else:
            assert got.dtype == array.dtype, name
            np.testing.assert_array_equal(got, array)


def test_requested_outputs_in_their_order_each_binary_or_json():
    outputs = {"a": np.ones(2, np.float32), "b": np.zeros(3, np.int64), "c": np.ones(1)}
    requested = [RequestedOutput("c", False), RequestedOutput("a", True)]
    body, json_size = encode_response("m", "1", outputs, InferRequest(inputs={}, outputs=requested))
    header = json.loads(body[:json_size])
    assert [o["name"] for o in header["outputs"]] == ["c", "a"]
    assert header["outputs"][0]["data"] == [1.0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert "id" not in header
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=json_size)
    np.testing.assert_array_equal(result.as_numpy("a"), outputs["a"])


def test_outputs_named_by_tritonclient_requests():
    inp = httpclient.InferInput("x", [1], "FP32")
    inp.set_data_from_numpy(np.ones(1, np.float32))
    out = [httpclient.InferRequestedOutput("y", binary_data=True), httpclient.InferRequestedOutput("z")]
    body, json_size = httpclient.InferenceServerClient.generate_request_body([inp], outputs=out)
    request = decode_request(body, json_size)
    assert not request.binary_output
    assert [(o.name, o.binary) for o in request.outputs] == [("y", True), ("z", True)]


def test_an_unknown_output_name_is_a_400():
    with pytest.raises(V2Error) as err:
        encode_response(
            "m", "1", {"y": np.ones(1)}, InferRequest(inputs={}, outputs=[RequestedOutput("q", 0)])
        )
    assert (err.value.status, err.value.kind) == (400, "bad_request")
    assert err.value.message == "the model has no output 'q'; its outputs are ['y']"


def _binary(header, data=b"", length=None):
    raw = json.dumps(header).encode()
    return raw + data, len(raw) if length is None else length


def _fp32(size, shape=(2,), raw=b"\0" * 8, **extra):
    """A binary FP32 input ``x`` of ``size`` bytes, ``extra`` keys added to its tensor."""
    tensor = {"name": "x", "shape": list(shape), "datatype": "FP32", "parameters": {"binary_data_size": size}}
    return _binary({"inputs": [{**tensor, **extra}]}, raw)


def _json(tensor=None, **doc):
    base = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    return json.dumps({"inputs": [{**base, **(tensor or {})}], **doc}).encode(), None


BAD = {
    "malformed JSON": ((b'{"inputs": [', None), "malformed JSON in the request body"),
    "not UTF-8": ((b"\xff\xfe{}", None), "malformed JSON in the request body"),
    "too deep": ((b"[" * 100_000, None), "malformed JSON in the request body"),
    "not an object": ((b"[1, 2]", None), "the request body must be a JSON object, got list"),
    "no inputs": ((b'{"inputs": []}', None), "the request must have 'inputs': a non-empty list"),
    "input not an object": ((b'{"inputs": [3]}', None), "inputs[0] must be a JSON object, got 3"),
    "no name": (_json({"name": ""}), "inputs[0] needs a 'name' (a non-empty string), got ''"),
    "unknown datatype": (_json({"datatype": "FP8"}), "input 'x': datatype 'FP8' is not one of BOOL, UINT8"),
    "negative shape": (_json({"shape": [-1]}), "input 'x': shape must be a list of integers >= 0, got [-1]"),
    "shape vs data": (_json({"shape": [3]}), "input 'x': shape [3] has 3 elements, its data has 2"),
    "nested shape vs data": (
        _json({"shape": [2], "data": [[1.0], [2.0, 3.0]]}),
        "shape [2] has 2 elements, its data has 3",
    ),
    "floats as ints": (
        _json({"datatype": "INT32"}),
        "input 'x': INT32 data must be JSON int values, got float",
    ),
    "bools as floats": (_json({"data": [True, 1.0]}), "FP32 data must be JSON float or int values, got bool"),
    "strings as floats": (_json({"data": ["1", 2]}), "FP32 data must be JSON float or int values, got str"),
    "out of range": (_json({"datatype": "INT8", "data": [1, 300]}), "input 'x': data out of range for INT8"),
    "null data": (
        _json({"shape": [1], "data": None}),
        "FP32 data must be JSON float or int values, got NoneType",
    ),
    "neither": (
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None),
        "neither 'data' nor",
    ),
    "twice": (
        (
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}
            ).encode(),
            None,
        ),
        "input 'x' is given twice",
    ),
    "id not a string": (_json(id=7), "the request 'id' must be a string, got 7"),
    "bad binary flag": (
        _json(parameters={"binary_data_output": "yes"}),
        "parameters.binary_data_output must be true",
    ),
    "classification": (_json(outputs=[{"name": "y", "parameters": {"classification": 3}}]), "not supported"),
    "size past the body": (
        _fp32(10**9),
        "input 'x': binary_data_size 1000000000 runs past the body's binary part (8 bytes left)",
    ),
    "size vs shape": (
        _fp32(8, shape=(3,)),
        "binary_data_size 8 does not match shape [3] of FP32 (3 elements x 4 bytes = 12)",
    ),
    "negative size": (_fp32(-4), "binary_data_size must be an integer >= 0, got -4"),
    "size and data": (_fp32(8, data=[1, 2]), "input 'x' has both 'data' and"),
    "trailing bytes": (
        _fp32(8, raw=b"\0" * 12),
        "12 bytes after its JSON header but the inputs' binary_data_size add up to 8",
    ),
    "header length past the body": (
        (b"{}", "99"),
        f"{HEADER_LENGTH} must be an integer from 0 to the body's length 2",
    ),
    "header length not a number": ((b"{}", "ten"), f"{HEADER_LENGTH} must be an integer"),
    "BYTES cut in a length": (
        _binary(
            {
                "inputs": [
                    {"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 2}}
                ]
            },
            b"\1\0",
        ),
        "input 's': BYTES data ends inside an element's 4-byte length",
    ),
    "BYTES element past its data": (
        _binary(
            {
                "inputs": [
                    {"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}
                ]
            },
            b"\x09\0\0\0ab",
        ),
        "input 's': a BYTES element of 9 bytes runs past its binary data",
    ),
    "BYTES count": (
        _binary(
            {
                "inputs": [
                    {"name": "s", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}
                ]
            },
            b"\1\0\0\0a",
        ),
        "input 's': shape [3] has 3 elements, its BYTES data has 1",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_requests_are_400_with_a_clear_message(case):
    (body, header_length), message = BAD[case]
    with pytest.raises(V2Error) as err:
        decode_request(body, header_length)
    assert err.value.status == 400
    assert err.value.kind == ("unsupported" if case == "classification" else "bad_request")
    assert message in err.value.message


def test_every_datatype_name_round_trips_its_dtype():
    from avgpool.serve._protocol import DATATYPES, datatype_of

    for name, dtype in DATATYPES.items():
        assert datatype_of(np.zeros(1, dtype)) == name
    with pytest.raises(V2Error) as err:
        datatype_of(np.zeros(1, np.complex64))
    assert (
        err.value.status == 500 and "complex64 has no Open Inference Protocol datatype" in err.value.message
    )
