"""The Open Inference Protocol v2 REST codec: JSON tensors and the binary tensor extension.

A request body is a JSON object, optionally followed by raw tensor bytes: the
``Inference-Header-Content-Length`` header then gives the JSON part's length, and each input
sent in binary carries ``parameters.binary_data_size``; its bytes follow the JSON in input order,
little-endian, ``BYTES`` elements each behind a 4-byte little-endian length. Outputs come back
in binary when the request asks for it (``parameters.binary_data_output`` for all outputs,
``outputs[i].parameters.binary_data`` for one), JSON otherwise.

Every check that fails raises `V2Error` with the HTTP status to answer and a message naming the
tensor, what was given and what the protocol allows; nothing here trusts a size the client sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "RequestedOutput",
    "V2Error",
    "datatype_of",
    "decode_request",
    "encode_response",
]

#: The header that gives the length of the JSON part of a body with binary tensors after it.
HEADER_LENGTH = "Inference-Header-Content-Length"

#: NumPy dtype of each Open Inference Protocol datatype (little-endian; BYTES as objects).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

#: Python types a JSON ``data`` element may have, per datatype kind (bool is not an int here).
_JSON_TYPES = {"b": {bool}, "i": {int}, "u": {int}, "f": {int, float}, "O": {str}}

_STATUS_KIND = {
    400: "bad_request",
    404: "model_not_found",
    413: "too_large",
    500: "model_error",
    503: "not_ready",
}


class V2Error(Exception):
    """A request the server refuses: the HTTP status, the message for ``{"error": ...}`` and the
    error kind it is counted under (``avgpool_request_errors_total{kind}``)."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.kind = kind or _STATUS_KIND.get(self.status, "bad_request")


@dataclass(frozen=True)
class RequestedOutput:
    """An output the request names, and whether it wants it in binary."""

    name: str
    binary: bool


@dataclass
class InferRequest:
    """A decoded infer request: its inputs (in request order), the outputs it asks for (None: all
    of them), whether outputs default to binary, its id and parameters."""

    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """The batch size: axis 0 of the first input (1 for a scalar)."""
        for value in self.inputs.values():
            return int(value.shape[0]) if value.ndim else 1
        return 0


def datatype_of(array: np.ndarray) -> str:
    """The Open Inference Protocol datatype of an output array (V2Error 500 when it has none)."""
    dtype = array.dtype
    if dtype.kind in "OSU":
        return "BYTES"
    for name, want in DATATYPES.items():
        if name != "BYTES" and dtype.kind == want.kind and dtype.itemsize == want.itemsize:
            return name
    raise V2Error(500, f"output dtype {dtype} has no Open Inference Protocol datatype", "model_error")


# --------------------------------------------------------------------------- decoding


def decode_request(
    body: bytes | bytearray | memoryview, header_length: str | int | None = None
) -> InferRequest:
    """Decode an infer request body.

    Parameters
    ----------
    body : bytes-like
        The whole (decompressed) body. A writable buffer (a bytearray) gives writable binary
        input arrays without a copy.
    header_length : str or int, optional
        The ``Inference-Header-Content-Length`` header: the JSON part's length in bytes; None
        when the body is JSON only.

    Raises
    ------
    V2Error
        400 for malformed JSON, an unknown datatype, a shape that does not match the data, binary
        sizes that do not add up, duplicate names.
    """
    view = memoryview(body).cast("B")
    json_end = _json_length(header_length, len(view))
    try:
        doc = json.loads(bytes(view[:json_end]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise V2Error(400, f"malformed JSON in the request body: {exc}") from None
    except RecursionError:
        raise V2Error(400, "malformed JSON in the request body: nested too deeply") from None
    if not isinstance(doc, dict):
        raise V2Error(400, f"the request body must be a JSON object, got {type(doc).__name__}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2Error(400, "the request must have 'inputs': a non-empty list of tensors")
    parameters = _parameters(doc.get("parameters"), "the request")
    binary = view[json_end:]
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for i, raw in enumerate(raw_inputs):
        name, datatype, shape, params = _tensor_header(raw, f"inputs[{i}]")
        if name in inputs:
            raise V2Error(400, f"input {name!r} is given twice")
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in raw:
                raise V2Error(400, f"input {name!r} has both 'data' and parameters.binary_data_size")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise V2Error(400, f"input {name!r}: binary_data_size must be an integer >= 0, got {size!r}")
            if offset + size > len(binary):
                raise V2Error(
                    400,
                    f"input {name!r}: binary_data_size {size} runs past the body's binary part "
                    f"({len(binary) - offset} bytes left)",
                )
            inputs[name] = _from_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        else:
            if "data" not in raw:
                raise V2Error(400, f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            inputs[name] = _from_json(name, datatype, shape, raw["data"])
    if offset != len(binary):
        raise V2Error(
            400,
            f"the body has {len(binary)} bytes after its JSON header but the inputs' binary_data_size "
            f"add up to {offset}",
        )
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2Error(400, f"the request 'id' must be a string, got {request_id!r}")
    return InferRequest(
        inputs=inputs,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_output=_flag(parameters.get("binary_data_output", False), "parameters.binary_data_output"),
        id=request_id,
        parameters=parameters,
    )


def _json_length(header_length: str | int | None, total: int) -> int:
    if header_length is None:
        return total
    try:
        length = int(header_length)
    except (TypeError, ValueError):
        length = -1
    if not 0 <= length <= total:
        raise V2Error(
            400,
            f"{HEADER_LENGTH} must be an integer from 0 to the body's length {total}, got {header_length!r}",
        )
    return length


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(400, f"'parameters' of {where} must be a JSON object, got {value!r}")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise V2Error(400, f"{where} must be true or false, got {value!r}")
    return value


def _tensor_header(raw: Any, where: str) -> tuple[str, str, tuple[int, ...], dict[str, Any]]:
    if not isinstance(raw, dict):
        raise V2Error(400, f"{where} must be a JSON object, got {raw!r:.80}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise V2Error(400, f"{where} needs a 'name' (a non-empty string), got {name!r}")
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise V2Error(
            400, f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}", "bad_request"
        )
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise V2Error(400, f"input {name!r}: shape must be a list of integers >= 0, got {shape!r:.80}")
    return name, datatype, tuple(shape), _parameters(raw.get("parameters"), f"input {name!r}")


def _from_binary(name: str, datatype: str, shape: tuple[int, ...], data: memoryview) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, shape, count, data)
    dtype = DATATYPES[datatype]
    if len(data) != count * dtype.itemsize:
        raise V2Error(
            400,
            f"input {name!r}: binary_data_size {len(data)} does not match shape {list(shape)} of "
            f"{datatype} ({count} elements x {dtype.itemsize} bytes = {count * dtype.itemsize})",
        )
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _bytes_elements(name: str, shape: tuple[int, ...], count: int, data: memoryview) -> np.ndarray:
    items: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 4 > end:
            raise V2Error(400, f"input {name!r}: BYTES data ends inside an element's 4-byte length")
        length = int.from_bytes(data[pos : pos + 4], "little")
        pos += 4
        if pos + length > end:
            raise V2Error(400, f"input {name!r}: a BYTES element of {length} bytes runs past its binary data")
        items.append(bytes(data[pos : pos + length]))
        pos += length
        if len(items) > count:
            break
    if len(items) != count:
        given = f"more than {count}" if len(items) > count else str(len(items))
        raise V2Error(
            400, f"input {name!r}: shape {list(shape)} has {count} elements, its BYTES data has {given}"
        )
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


def _flatten(data: Any) -> list[Any]:
    """Nested lists as one flat list (iteratively: a deep nest is no recursion risk)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    flat = _flatten(data)
    count = math.prod(shape)
    if len(flat) != count:
        raise V2Error(
            400,
            f"input {name!r}: shape {list(shape)} has {count} elements, its data has {len(flat)}",
        )
    dtype = DATATYPES[datatype]
    allowed = _JSON_TYPES[dtype.kind]
    found = set(map(type, flat))
    if not found <= allowed:
        wrong = sorted(t.__name__ for t in found - allowed)
        want = " or ".join(sorted(t.__name__ for t in allowed))
        raise V2Error(
            400, f"input {name!r}: {datatype} data must be JSON {want} values, got {', '.join(wrong)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [s.encode("utf-8") for s in flat]
        return array.reshape(shape)
    try:
        return np.array(flat, dtype=dtype.newbyteorder("=")).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise V2Error(400, f"input {name!r}: data out of range for {datatype}: {exc}") from None


def _requested_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise V2Error(400, f"'outputs' must be a list of {{name, parameters}} objects, got {raw!r:.80}")
    requested: list[RequestedOutput] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise V2Error(400, f"outputs[{i}] must be an object with a 'name' string, got {item!r:.80}")
        params = _parameters(item.get("parameters"), f"output {item['name']!r}")
        if "classification" in params:
            raise V2Error(
                400, f"output {item['name']!r}: the classification extension is not supported", "unsupported"
            )
        binary = _flag(params.get("binary_data", False), f"output {item['name']!r} parameters.binary_data")
        requested.append(RequestedOutput(item["name"], binary))
    return requested


# --------------------------------------------------------------------------- encoding


def encode_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
) -> tuple[bytes, int | None]:
    """The response body for ``outputs``, and the JSON part's length when binary tensors follow
    it (the ``Inference-Header-Content-Length`` to send), else None.

    Only the outputs the request names are sent, in its order (all of them, in the model's order,
    when it names none). V2Error 400 when it names an output the model does not have.
    """
    if request.outputs is None:
        chosen = [(name, request.binary_output) for name in outputs]
    else:
        unknown = [o.name for o in request.outputs if o.name not in outputs]
        if unknown:
            raise V2Error(400, f"the model has no output {unknown[0]!r}; its outputs are {sorted(outputs)}")
        chosen = [(o.name, o.binary or request.binary_output) for o in request.outputs]
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in chosen:
        array = np.asarray(outputs[name])
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = _to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _to_json(name, array, datatype)
        tensors.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = tensors
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.reshape(-1):
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts += [len(raw).to_bytes(4, "little"), raw]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


def _to_json(name: str, array: np.ndarray, datatype: str) -> Sequence[Any]:
    flat = array.reshape(-1)
    if datatype != "BYTES":
        return flat.tolist()
    try:
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in flat]
    except UnicodeDecodeError:
        raise V2Error(
            400, f"output {name!r} holds bytes that are not UTF-8 text: ask for it with binary_data"
        ) from None
