"""avgpool and its peers, each as an adapter that runs a `Case` on prepared inputs.

A peer's ``prepare`` does all conversion once, outside the timed region (torch tensors share
the NumPy buffers through ``torch.from_numpy``, channels-last ones are the NHWC buffer viewed
as NCHW with ``memory_format=torch.channels_last``, no copy; the ONNX Runtime session is built
once), and returns a `Prepared`: the peer-native inputs, the call to time, and a conversion of
its result back to the case's NumPy layout for the correctness check (also untimed).

Where a peer cannot compute a case, ``applies`` returns the reason, and the report shows it.
Frameworks are imported only when a peer is prepared, so ``import avgpool.bench`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avgpool.bench.cases import Case

__all__ = ["CV2", "PEERS", "ONNXRuntime", "Peer", "Prepared", "SciPy", "Torch", "avgpool_call"]


def avgpool_call(case: Case) -> Callable[[np.ndarray], np.ndarray]:
    """The case through avgpool's public API (``channels_last=True`` for channels-last arrays)."""
    import avgpool

    k, s, p, cl = case.kernel, case.stride, case.padding, case.channels_last
    if case.op == "avg":
        return lambda x: avgpool.avg_pool(
            x, k, s, p, count_include_pad=case.count_include_pad, channels_last=cl
        )
    if case.op == "max":
        return lambda x: avgpool.max_pool(x, k, s, p, channels_last=cl)
    if case.op == "global_avg":
        return lambda x: avgpool.global_avg_pool(x, channels_last=cl)
    if case.op == "avg_backward":
        shape = case.array_shape
        return lambda g: avgpool.avg_pool_backward(
            g, shape, k, s, p, count_include_pad=case.count_include_pad, channels_last=cl
        )
    raise ValueError(f"unknown op {case.op!r}")


@dataclass
class Prepared:
    """A peer ready to run a case: ``call(inputs[i])`` is timed, ``to_numpy`` is not."""

    label: str
    inputs: Sequence[Any]
    call: Callable[[Any], Any]
    to_numpy: Callable[[Any], np.ndarray]
    threads: int | None
    close: Callable[[], None] = lambda: None


class Peer:
    """A library that computes some cases; ``name`` heads its column in the report."""

    name = ""
    module = ""

    def applies(self, case: Case) -> str | None:
        """None when this peer computes ``case``, else why not (shown in the report)."""
        try:
            __import__(self.module)
        except ImportError:
            return f"{self.module} is not installed (pip install 'avgpool[bench]')"
        return self._why_not(case)

    def _why_not(self, case: Case) -> str | None:
        return None

    def prepare(self, case: Case, arrays: Sequence[np.ndarray], threads: int) -> Prepared:
        raise NotImplementedError


def _to_channels_last(spatial_first: np.ndarray) -> np.ndarray:
    return np.moveaxis(spatial_first, 1, -1)


class Torch(Peer):
    """``torch.nn.functional`` on NCHW tensors, or on channels-last tensors for channels-last cases.

    The global case uses ``adaptive_avg_pool*d(x, 1)`` (as torchvision's ResNet does); the
    backward case calls ``aten.avg_pool2d_backward`` directly, the kernel autograd runs.
    A 1-D channels-last case is the (N, L, C) array viewed as (N, C, L): torch has no
    channels-last format for 3-D tensors.
    """

    name = "torch"
    module = "torch"

    def prepare(self, case: Case, arrays: Sequence[np.ndarray], threads: int) -> Prepared:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)
        nd = case.ndim
        fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(nd)

        def tensor(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            if not case.channels_last:
                return t
            t = t.permute(0, nd + 1, *range(1, nd + 1))
            if fmt is not None:
                t = t.contiguous(memory_format=fmt)  # already in that format: no copy
            return t

        inputs = [tensor(a) for a in arrays]
        assert all(t.data_ptr() == a.ctypes.data for t, a in zip(inputs, arrays)), "torch copied an input"
        k, s, p = case.kernel, case.stride, case.padding
        if case.op == "avg":
            pool = getattr(F, f"avg_pool{nd}d")

            def call(x):
                return pool(x, k, s, p, count_include_pad=case.count_include_pad)

        elif case.op == "max":
            pool = getattr(F, f"max_pool{nd}d")

            def call(x):
                return pool(x, k, s, p)

        elif case.op == "global_avg":
            pool = getattr(F, f"adaptive_avg_pool{nd}d")

            def call(x):
                return pool(x, 1)

        elif case.op == "avg_backward":
            backward = getattr(torch.ops.aten, f"avg_pool{nd}d_backward")
            like = torch.empty(
                case.shape, memory_format=fmt if case.channels_last else torch.contiguous_format
            )

            def call(g):
                return backward(g, like, list(k), list(s), [p] * nd, False, case.count_include_pad, None)

        else:
            raise ValueError(f"unknown op {case.op!r}")

        def to_numpy(y: torch.Tensor) -> np.ndarray:
            a = y.numpy()
            return np.ascontiguousarray(_to_channels_last(a) if case.channels_last else a)

        if not case.channels_last:
            label = "torch"
        elif fmt is None:
            label = "torch (N,L,C) viewed as (N,C,L)"
        else:
            label = "torch channels_last"

        def run(x):
            with torch.inference_mode():
                return call(x)

        return Prepared(label, inputs, run, to_numpy, torch.get_num_threads())


class ONNXRuntime(Peer):
    """A one-node AveragePool / MaxPool / GlobalAveragePool model (float32, opset 17) on ORT's CPU EP.

    ONNX pools are channels-first only, so a channels-last case runs the model a channels-last
    user would export: Transpose -> pool -> Transpose (ORT's layout optimizer may fold them).
    """

    name = "onnxruntime"
    module = "onnxruntime"
    OPSET = 17

    def _why_not(self, case: Case) -> str | None:
        if case.op == "avg_backward":
            return "ONNX Runtime's inference build has no AveragePoolGrad"
        return None

    def model(self, case: Case) -> bytes:
        """The serialized model: input ``x`` and output ``y`` as stored (float32)."""
        from onnx import TensorProto, helper

        nd = case.ndim
        nodes = []
        x_name, y_name = "x", "y"
        if case.channels_last:
            nodes.append(helper.make_node("Transpose", ["x"], ["x_cf"], perm=[0, nd + 1, *range(1, nd + 1)]))
            x_name, y_name = "x_cf", "y_cf"
        if case.op == "global_avg":
            nodes.append(helper.make_node("GlobalAveragePool", [x_name], [y_name]))
        else:
            attrs: dict[str, Any] = {
                "kernel_shape": list(case.kernel),
                "strides": list(case.stride or case.kernel),
                "pads": [case.padding] * (2 * nd),
            }
            if case.op == "avg":
                attrs["count_include_pad"] = int(case.count_include_pad)
            nodes.append(
                helper.make_node(
                    "AveragePool" if case.op == "avg" else "MaxPool", [x_name], [y_name], **attrs
                )
            )
        if case.channels_last:
            nodes.append(helper.make_node("Transpose", ["y_cf"], ["y"], perm=[0, *range(2, nd + 2), 1]))
        graph = helper.make_graph(
            nodes,
            f"avgpool_bench_{case.key}",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(case.array_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(case.out_array_shape))],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.OPSET)])
        model.ir_version = 8
        return model.SerializeToString()

    def prepare(self, case: Case, arrays: Sequence[np.ndarray], threads: int) -> Prepared:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(self.model(case), options, providers=["CPUExecutionProvider"])

        def call(x):
            return session.run(None, {"x": x})[0]

        label = "onnxruntime (Transpose, pool, Transpose)" if case.channels_last else "onnxruntime"
        return Prepared(label, list(arrays), call, np.asarray, threads)


class CV2(Peer):
    """OpenCV: ``cv2.blur`` for stride-1 box windows (cropped to the pooled output), and
    ``cv2.resize(INTER_AREA)`` for the exact 2x downsample.

    Channels-first arrays are processed one (H, W) plane at a time; channels-last ones one
    (H, W, C) image at a time (C <= 512, OpenCV's channel limit). A 1-D sequence is a
    (rows, L) image with a (64, 1) box. Each call allocates its output, as the other peers do.
    """

    name = "cv2"
    module = "cv2"

    def _kind(self, case: Case) -> str | None:
        if case.op != "avg" or case.ndim > 2:
            return None
        k, s, p = case.kernel, case.stride or case.kernel, case.padding
        if set(s) == {1} and (p == 0 or (case.count_include_pad and all(kk == 2 * p + 1 for kk in k))):
            return "blur"
        if (
            case.ndim == 2
            and k == (2, 2)
            and s == (2, 2)
            and p == 0
            and all(n % 2 == 0 for n in case.spatial)
        ):
            return "resize"
        return None

    def _why_not(self, case: Case) -> str | None:
        if case.channels_last and case.ndim == 2 and case.shape[1] > 512:
            return "OpenCV images hold at most 512 channels"
        if self._kind(case) is None:
            return "no OpenCV equivalent (only stride-1 box filters and the exact 2x2/2 downsample)"
        return None

    def prepare(self, case: Case, arrays: Sequence[np.ndarray], threads: int) -> Prepared:
        import cv2

        cv2.setNumThreads(threads)
        kind = self._kind(case)
        cl, nd = case.channels_last, case.ndim
        border = cv2.BORDER_CONSTANT
        if kind == "resize":
            oh, ow = case.out_spatial
            out_shape = case.out_array_shape

            def call(x):
                out = np.empty(out_shape, x.dtype)
                planes = range(x.shape[0]) if cl else np.ndindex(*x.shape[:2])
                for i in planes:
                    cv2.resize(x[i], (ow, oh), dst=out[i], interpolation=cv2.INTER_AREA)
                return out

            return Prepared("cv2.resize INTER_AREA", list(arrays), call, np.ascontiguousarray, threads)

        # blur: the full-size box filter, then the window positions pooling keeps
        start = [(k // 2 - case.padding) for k in case.kernel]
        crop = tuple(slice(b, b + o) for b, o in zip(start, case.out_spatial))
        crop = (slice(None), *crop, slice(None)) if cl else (slice(None), slice(None), *crop)
        if nd == 2:
            ksize = (case.kernel[1], case.kernel[0])

            def call(x):
                out = np.empty_like(x)
                planes = range(x.shape[0]) if cl else np.ndindex(*x.shape[:2])
                for i in planes:
                    cv2.blur(x[i], ksize, dst=out[i], borderType=border)
                return out[crop]

        elif cl:  # (N, L, C): each sample is an (L, C) image, the box runs down the rows

            def call(x):
                out = np.empty_like(x)
                for i in range(x.shape[0]):
                    cv2.blur(x[i], (1, case.kernel[0]), dst=out[i], borderType=border)
                return out[crop]

        else:  # (N, C, L): one (N*C, L) image, the box runs along the rows

            def call(x):
                out = np.empty_like(x)
                rows = x.shape[0] * x.shape[1]
                cv2.blur(
                    x.reshape(rows, -1), (case.kernel[0], 1), dst=out.reshape(rows, -1), borderType=border
                )
                return out[crop]

        return Prepared("cv2.blur + crop", list(arrays), call, np.ascontiguousarray, threads)


class SciPy(Peer):
    """``scipy.ndimage.uniform_filter`` (zero border) over the spatial axes, sliced to the stride-1
    pooled output. Single-threaded: scipy.ndimage has no threads."""

    name = "scipy"
    module = "scipy.ndimage"

    def _why_not(self, case: Case) -> str | None:
        if case.op != "avg" or case.kernel is None or set(case.stride or case.kernel) != {1}:
            return "uniform_filter is a stride-1 box average; no strided, max, global or backward form"
        if case.padding and not case.count_include_pad:
            return "uniform_filter counts the zero border in every average"
        return None

    def prepare(self, case: Case, arrays: Sequence[np.ndarray], threads: int) -> Prepared:
        from scipy.ndimage import uniform_filter

        size = (1, *case.kernel, 1) if case.channels_last else (1, 1, *case.kernel)
        start = [(k // 2 - case.padding) for k in case.kernel]
        crop = tuple(slice(b, b + o) for b, o in zip(start, case.out_spatial))
        crop = (slice(None), *crop, slice(None)) if case.channels_last else (slice(None), slice(None), *crop)

        def call(x):
            return uniform_filter(x, size=size, mode="constant", cval=0.0)[crop]

        return Prepared("scipy.ndimage.uniform_filter + crop", list(arrays), call, np.ascontiguousarray, 1)


#: The peers measured beside avgpool, in the report's column order.
PEERS: tuple[Peer, ...] = (Torch(), ONNXRuntime(), CV2(), SciPy())
