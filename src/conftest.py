"""Doctest collection of src/: leave out the modules whose optional stack is not installed
(``avgpool[torch]``, onnxscript for the dynamo ONNX exporter, triton for the GPU kernels,
torch and scikit-learn for the study, dask for the Dask backend)."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore += ["avgpool/nn", "avgpool/torch", "avgpool/study"]
elif importlib.util.find_spec("onnxscript") is None:
    collect_ignore += ["avgpool/torch/onnx.py"]
if importlib.util.find_spec("triton") is None:
    collect_ignore += ["avgpool/kernels/triton_pool.py", "avgpool/kernels/triton_passes.py"]
if importlib.util.find_spec("sklearn") is None and "avgpool/study" not in collect_ignore:
    collect_ignore += ["avgpool/study"]
if importlib.util.find_spec("dask") is None:
    collect_ignore += ["avgpool/dask", "avgpool/bench/dask_suite.py"]
