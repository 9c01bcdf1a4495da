"""Model runners: one loaded model version, its tensor metadata, and a ``run`` that returns the
model's outputs and, on sampled requests, the outputs of its pooling layers.

Every request is one model run, sampled or not:

* ONNX (ONNX Runtime): one session in which the pooling layers' tensors are extra graph
  outputs; an unsampled run asks ONNX Runtime for the model's own outputs only, a sampled run
  for those and the pooling tensors.
* ``nn.Module`` (a ``package.module:factory`` spec, a trusted pickle): forward hooks on the
  pooling modules, registered only for the duration of a sampled run and recording only that
  run's thread. With ``compile=True`` unsampled runs call ``torch.compile``'s module; compiled
  graphs skip Python hooks, so sampled runs call the eager module (same weights) with hooks.
* ExportedProgram (``.pt2``): unsampled runs call ``program.module()`` (compiled with
  ``compile=True``); sampled runs go through a ``torch.fx.Interpreter`` that keeps the outputs
  of the pooling nodes (aten pooling ops, global means and maxima over the spatial axes, and
  avgpool's own ``torch.ops.avgpool`` ops; a pooling module such as ``nn.LPPool2d``, exported
  as several ops, is read at its last node).
* TorchScript: a loaded script module takes no Python hooks and hides its graph's Python
  modules, so its pooling outputs are not read: sampled runs return none and the runner says
  so in ``telemetry_note`` (export the model to ONNX to serve it with pooling telemetry).

Torch models need their input shapes: ``input_shapes`` (``--input-shape``), or, for a
factory's module, an ``example_input_shape`` attribute (one input, batch axis included). The
batch axis (axis 0) of a torch model's inputs and outputs is free; the other axes are fixed at
the given shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from avgpool._errors import AvgPoolError
from avgpool.serve._runner import (
    _ORT,
    PLATFORMS,
    ModelRunError,
    Runner,
    TensorSpec,
    _free,
    _no_compile,
    datatype_of,
)

__all__ = ["PLATFORMS", "ModelRunError", "Runner", "TensorSpec", "datatype_of", "load_runner"]


# --------------------------------------------------------------------------- loading


def load_runner(
    source: str,
    *,
    name: str | None = None,
    version: str = "1",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    trust: bool = False,
    compile: bool = False,
) -> Runner:
    """Load ``source`` as a `Runner`.

    Parameters
    ----------
    source : str
        ``path/x.onnx``, a ``.pt2`` ExportedProgram, a TorchScript file, a ``.pt``/``.pth``
        pickled module (with ``trust``) or a ``package.module:factory`` spec.
    name : str, optional
        Default: the file's name without its suffix, or the spec's attribute.
    version : str
    input_shapes : mapping of input name to shape, optional
        Torch models need them (key ``""`` for a single input) unless the factory's module has
        an ``example_input_shape``; for ONNX they only fill free axes of the example inputs.
    trust : bool
        Let a pickled module or a ``.pt2`` load (both can run code as they load).
    compile : bool
        ``torch.compile`` an ``nn.Module`` or a ``.pt2``'s module (see the module docstring);
        ONNX and TorchScript models refuse it.
    """
    from avgpool._loading import _archive_kind, is_torch_source

    version = str(version)
    if name is None:
        base = os.path.basename(source)
        name = (
            source.rpartition(":")[2].rpartition(".")[2] if ":" in base else base.rpartition(".")[0] or base
        )
    shapes = {str(k): tuple(int(n) for n in v) for k, v in (input_shapes or {}).items()}
    torch_archive = os.path.isfile(source) and not source.endswith(".onnx") and _archive_kind(source)
    if is_torch_source(source) or torch_archive:
        from avgpool.serve._torch_runners import torch_runner

        return torch_runner(source, name, version, shapes, trust=trust, compile=compile)
    if not os.path.exists(source):
        raise AvgPoolError(f"{source}: no such model file (give an .onnx file or a package.module:factory)")
    _no_compile(compile, source, "an ONNX model")
    return _onnx_runner(source, name, version, shapes)


def _onnx_runner(source: str, name: str, version: str, shapes: dict[str, tuple[int, ...]]) -> Runner:
    from avgpool._loading import sha256_file
    from avgpool.inspect.onnx_reader import load_onnx, read_onnx
    from avgpool.monitor.collectors import _onnx_session

    proto = load_onnx(source)
    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    if "" in shapes and len(graph_inputs) == 1:
        shapes = {graph_inputs[0]: shapes[""]}
    try:
        inventory = read_onnx(proto, shapes, source=source)
        layers = {layer.name: (layer.outputs[0], layer.source_op) for layer in inventory.layers}
        note = None
    except AvgPoolError as exc:  # free spatial axes without shapes: serve it, without telemetry
        layers, note = {}, f"pooling layers not read ({exc}); pass --input-shape to profile them"
    session = _onnx_session(proto, layers, source)
    own = [o.name for o in proto.graph.output]
    metas = {m.name: m for m in (*session.get_inputs(), *session.get_outputs())}

    def spec(tensor: str) -> TensorSpec:
        meta = metas[tensor]
        return TensorSpec(tensor, _ORT.get(meta.type, meta.type), tuple(_free(d) for d in meta.shape))

    inputs = tuple(spec(m.name) for m in session.get_inputs())
    outputs = tuple(spec(o) for o in own)
    pooled = [(layer, tensor) for layer, (tensor, _) in layers.items()]
    wanted = own + [t for _, t in pooled if t not in own]

    def plain(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(own, session.run(own, feeds)))

    def sampled(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        values = dict(zip(wanted, session.run(wanted, feeds)))
        return {o: values[o] for o in own}, {layer: values[t] for layer, t in pooled}

    return Runner(
        name=name,
        version=version,
        platform=PLATFORMS["onnx"],
        inputs=inputs,
        outputs=outputs,
        layers=tuple(layers),
        size_bytes=os.path.getsize(source),
        sha256=sha256_file(source),
        plain=plain,
        sampled=sampled,
        telemetry_note=note,
        example_shapes=shapes,
    )
