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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avgpool.bench.cases import Case, make_grad_output

__all__ = ["CV2", "PEERS", "ONNXRuntime", "Peer", "Prepared", "SciPy", "Torch", "avgpool_call"]


def avgpool_call(case: Case) -> Callable[[np.ndarray], np.ndarray]:
    """The case through avgpool's public API (``channels_last=True`` for channels-last arrays).

    A forward+backward case calls the forward, then the op's backward on the fixed grad_output
    of `make_grad_output`, and returns grad_input.
    """
    import avgpool

    k, s, p, cl = case.kernel, case.stride, case.padding, case.channels_last
    shape = case.array_shape
    if case.op == "avg":
        kw = {"ceil_mode": case.ceil_mode, "count_include_pad": case.count_include_pad, "channels_last": cl}

        def forward(x):
            return avgpool.avg_pool(x, k, s, p, **kw)

        def backward(g, x):
            return avgpool.avg_pool_backward(g, shape, k, s, p, **kw)

    elif case.op == "max":
        if case.fwd_bwd:  # a training step keeps the forward's arg-max for the backward, as torch does
            kw = {"ceil_mode": case.ceil_mode, "channels_last": cl}

            def step(x):
                _, index = avgpool.max_pool(x, k, s, p, **kw, return_indices=True)
                return avgpool.max_pool_backward(grad, x, k, s, p, **kw, indices=index)

            grad = make_grad_output(case)
            return step

        def forward(x):
            return avgpool.max_pool(x, k, s, p, ceil_mode=case.ceil_mode, channels_last=cl)

        def backward(g, x):
            return avgpool.max_pool_backward(g, x, k, s, p, ceil_mode=case.ceil_mode, channels_last=cl)

    elif case.op == "global_avg":

        def forward(x):
            return avgpool.global_avg_pool(x, channels_last=cl)

        def backward(g, x):
            return avgpool.global_avg_pool_backward(g, shape, channels_last=cl)

    elif case.op == "adaptive_avg":

        def forward(x):
            return avgpool.adaptive_avg_pool(x, case.output_size, channels_last=cl)

        def backward(g, x):
            return avgpool.adaptive_avg_pool_backward(g, shape, channels_last=cl)

    elif case.op == "blur":
        bkw = {"pad_type": case.pad_type, "pad_off": case.pad_off, "channels_last": cl}

        def forward(x):
            return avgpool.blur_pool(x, case.filt_size, case.stride[0], **bkw)

        def backward(g, x):
            return avgpool.blur_pool_backward(g, shape, case.filt_size, case.stride[0], **bkw)

    elif case.op == "avg_backward":
        return lambda g: avgpool.avg_pool_backward(
            g, shape, k, s, p, count_include_pad=case.count_include_pad, channels_last=cl
        )
    else:
        raise ValueError(f"unknown op {case.op!r}")
    if not case.fwd_bwd:
        return forward
    grad = make_grad_output(case)

    def step(x):
        forward(x)
        return backward(grad, x)

    return step


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

    The global case uses ``adaptive_avg_pool*d(x, 1)`` (as torchvision's ResNet does); a blur is
    antialiased-cnns' pad and depthwise ``conv2d``. The backward case, and a forward+backward
    case's backward, call the aten kernel autograd runs (``aten.avg_pool2d_backward``,
    ``aten.max_pool2d_with_indices_backward`` on the forward's indices, ...) directly.
    A 1-D channels-last case is the (N, L, C) array viewed as (N, C, L): torch has no
    channels-last format for 3-D tensors.
    """

    name = "torch"
    module = "torch"

    def prepare(self, case: Case, arrays: Sequence[np.ndarray], threads: int) -> Prepared:
        import torch

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
        if case.op == "avg_backward":
            backward = getattr(torch.ops.aten, f"avg_pool{nd}d_backward")
            k, s, p = case.kernel, case.stride, case.padding
            like = torch.empty(
                case.shape, memory_format=fmt if case.channels_last else torch.contiguous_format
            )

            def call(g):
                return backward(g, like, list(k), list(s), [p] * nd, False, case.count_include_pad, None)

        else:
            call = _torch_step(case, tensor(make_grad_output(case))) if case.fwd_bwd else _torch_forward(case)

        def to_numpy(y: torch.Tensor) -> np.ndarray:
            a = y.numpy()
            return np.ascontiguousarray(_to_channels_last(a) if case.channels_last else a)

        if not case.channels_last:
            label = "torch"
        elif fmt is None:
            label = "torch (N,L,C) viewed as (N,C,L)"
        else:
            label = "torch channels_last"
        if case.fwd_bwd:
            label += " (forward, then the aten backward kernel)"

        def run(x):
            with torch.inference_mode():
                return call(x)

        return Prepared(label, inputs, run, to_numpy, torch.get_num_threads())


def _torch_forward(case: Case) -> Callable[[Any], Any]:
    """The forward as a PyTorch user writes it (``torch.nn.functional``)."""
    import torch.nn.functional as F

    nd, k, s, p = case.ndim, case.kernel, case.stride, case.padding
    if case.op == "avg":
        pool = getattr(F, f"avg_pool{nd}d")
        return lambda x: pool(x, k, s, p, case.ceil_mode, case.count_include_pad)
    if case.op == "max":
        pool = getattr(F, f"max_pool{nd}d")
        return lambda x: pool(x, k, s, p, ceil_mode=case.ceil_mode)
    if case.op in ("global_avg", "adaptive_avg"):
        pool = getattr(F, f"adaptive_avg_pool{nd}d")
        size = 1 if case.op == "global_avg" else case.output_size
        return lambda x: pool(x, size)
    if case.op == "blur":
        pad, weight = _torch_blur(case)
        return lambda x: F.conv2d(pad(x), weight, stride=case.stride[0], groups=case.shape[1])
    raise ValueError(f"unknown op {case.op!r}")


def _torch_blur(case: Case) -> tuple[Callable[[Any], Any], Any]:
    """antialiased-cnns' BlurPool in torch alone: the padding, and the depthwise binomial filter."""
    import torch
    import torch.nn.functional as F

    from avgpool.reference import blur_filter, blur_pads

    if case.ndim != 2:
        raise ValueError("the torch blur peer is 2-d")
    before, after = blur_pads(case.filt_size, case.pad_off)
    mode = {"zero": "constant"}.get(case.pad_type, case.pad_type)
    taps = blur_filter(case.filt_size)
    weight = torch.from_numpy(np.outer(taps, taps).astype(case.dtype)).expand(case.shape[1], 1, -1, -1)
    weight = weight.contiguous(
        memory_format=torch.channels_last if case.channels_last else torch.contiguous_format
    )
    return (lambda x: F.pad(x, (before, after, before, after), mode=mode)), weight


def _torch_step(case: Case, grad: Any) -> Callable[[Any], Any]:
    """Forward then backward, each as the aten kernel autograd runs for it (no autograd graph):
    the training step's pooling cost without the framework's bookkeeping."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    k, s, p = list(case.kernel or ()), list(case.stride or case.kernel or ()), [case.padding] * case.ndim
    if case.ndim != 2:
        raise ValueError("the torch forward+backward peer is 2-d")
    if case.op == "avg":
        cip = case.count_include_pad

        def step(x):
            aten.avg_pool2d(x, k, s, p, case.ceil_mode, cip, None)
            return aten.avg_pool2d_backward(grad, x, k, s, p, case.ceil_mode, cip, None)

    elif case.op == "max":

        def step(x):
            _, indices = aten.max_pool2d_with_indices(x, k, s, p, [1, 1], case.ceil_mode)
            return aten.max_pool2d_with_indices_backward(grad, x, k, s, p, [1, 1], case.ceil_mode, indices)

    elif case.op == "global_avg":  # adaptive_avg_pool2d(x, 1) is a mean: its backward spreads g / HW
        cells = math.prod(case.spatial)

        def step(x):
            F.adaptive_avg_pool2d(x, 1)
            return grad.expand(x.shape) / cells

    elif case.op == "adaptive_avg":

        def step(x):
            aten._adaptive_avg_pool2d(x, list(case.output_size))
            return aten._adaptive_avg_pool2d_backward(grad, x)

    elif case.op == "blur":
        pad, weight = _torch_blur(case)
        c = case.shape[1]
        before, after = (case.filt_size - 1) // 2 + case.pad_off, case.filt_size // 2 + case.pad_off
        pads = [before, after, before, after]
        unpad = {
            "reflect": aten.reflection_pad2d_backward,
            "replicate": aten.replication_pad2d_backward,
        }.get(case.pad_type, lambda d, x, q: d[..., q[2] : d.shape[-2] - q[3], q[0] : d.shape[-1] - q[1]])

        def step(x):
            padded = pad(x)
            F.conv2d(padded, weight, stride=case.stride[0], groups=c)
            d_padded = aten.convolution_backward(
                grad,
                padded,
                weight,
                None,
                list(case.stride),
                [0, 0],
                [1, 1],
                False,
                [0, 0],
                c,
                [True, False, False],
            )[0]
            return unpad(d_padded, x, pads)

    else:
        raise ValueError(f"unknown op {case.op!r}")
    return step


_ONNX_PAD = {"reflect": "reflect", "replicate": "edge", "zero": "constant"}


class ONNXRuntime(Peer):
    """A one-node AveragePool / MaxPool / GlobalAveragePool model (float32, opset 17) on ORT's CPU EP.

    ONNX pools are channels-first only, so a channels-last case runs the model a channels-last
    user would export: Transpose -> pool -> Transpose (ORT's layout optimizer may fold them).
    """

    name = "onnxruntime"
    module = "onnxruntime"
    OPSET = 17

    def _why_not(self, case: Case) -> str | None:
        if case.op == "avg_backward" or case.fwd_bwd:
            return "ONNX Runtime's inference build has no pooling gradients"
        if case.op == "adaptive_avg" and any(n % o for n, o in zip(case.spatial, case.output_size)):
            return "ONNX has no adaptive pool whose output does not divide the input"
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
        initializers = []
        if case.op == "global_avg":
            nodes.append(helper.make_node("GlobalAveragePool", [x_name], [y_name]))
        elif case.op == "blur":  # antialiased-cnns' graph: Pad(reflect), then a depthwise Conv
            from onnx import numpy_helper

            from avgpool.reference import blur_filter, blur_pads

            before, after = blur_pads(case.filt_size, case.pad_off)
            taps = blur_filter(case.filt_size)
            c = case.shape[1]
            weight = np.broadcast_to(np.outer(taps, taps), (c, 1, case.filt_size, case.filt_size))
            pads = np.array([0, 0, before, before, 0, 0, after, after], np.int64)
            initializers += [
                numpy_helper.from_array(np.ascontiguousarray(weight, np.float32), "w"),
                numpy_helper.from_array(pads, "pads"),
            ]
            nodes.append(helper.make_node("Pad", [x_name, "pads"], ["x_pad"], mode=_ONNX_PAD[case.pad_type]))
            nodes.append(
                helper.make_node("Conv", ["x_pad", "w"], [y_name], group=c, strides=list(case.stride))
            )
        else:
            kernel, stride = case.kernel, case.stride or case.kernel
            if case.op == "adaptive_avg":  # an output that divides the input: a plain average
                stride = tuple(n // o for n, o in zip(case.spatial, case.output_size))
                kernel = stride
            attrs: dict[str, Any] = {
                "kernel_shape": list(kernel),
                "strides": list(stride),
                "pads": [case.padding] * (2 * nd),
            }
            if case.ceil_mode:
                attrs["ceil_mode"] = 1
            if case.op != "max":
                attrs["count_include_pad"] = int(case.count_include_pad)
            nodes.append(
                helper.make_node(
                    "MaxPool" if case.op == "max" else "AveragePool", [x_name], [y_name], **attrs
                )
            )
        if case.channels_last:
            nodes.append(helper.make_node("Transpose", ["y_cf"], ["y"], perm=[0, *range(2, nd + 2), 1]))
        graph = helper.make_graph(
            nodes,
            f"avgpool_bench_{case.key}",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(case.array_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(case.out_array_shape))],
            initializers,
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
    (H, W, C) image at a time (C <= 128, what OpenCV's Python binding wraps). A 1-D sequence is a
    (rows, L) image with a (64, 1) box. Each call allocates its output, as the other peers do.
    """

    name = "cv2"
    module = "cv2"

    def _kind(self, case: Case) -> str | None:
        if case.op != "avg" or case.ndim > 2 or case.ceil_mode or case.fwd_bwd:
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
        if case.channels_last and case.ndim == 2 and case.shape[1] > 128:
            return "OpenCV's Python binding takes images of at most 128 channels"
        if self._kind(case) is None:
            return "no OpenCV equivalent (only stride-1 box filters and the exact 2x2/2 downsample, forward)"
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
        if case.op != "avg" or case.fwd_bwd or case.kernel is None or set(case.stride or case.kernel) != {1}:
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
