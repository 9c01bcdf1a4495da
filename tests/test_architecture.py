"""The package's import structure: no import circle, and layers that only import downwards.

Read from the source by grimp (imports inside functions count too), so an import that breaks
the design fails here, naming the chain, before it becomes a habit. Every module belongs to a
layer: a new module is placed in `LAYERS` (and in DESIGN.md) when it is added.
"""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")

#: The layers, lowest first: each may import the layers below it, never one above. Within a
#: layer, the modules of one entry may import each other; entries of one tuple are
#: independent siblings (neither imports the other).
LAYERS: list[tuple[str, ...]] = [
    # what every layer uses: errors, settings, files, model loading
    (
        "avgpool._errors",
        "avgpool._specs",
        "avgpool._files",
        "avgpool._settings",
        "avgpool._loading",
        "avgpool._tables",
    ),
    # geometry: windows, the frameworks' conventions, array layouts (shape arithmetic)
    ("avgpool.window", "avgpool.conventions", "avgpool._arrays"),
    # the float64 oracle
    ("avgpool.reference",),
    # compiled kernels and their drivers
    (
        "avgpool.kernels",
        "avgpool._buffers",
        "avgpool._cpu_plans",
        "avgpool._small_plans",
        "avgpool._cpu_calls",
        "avgpool._cpu_drivers",
        "avgpool._cpu_max_drivers",
        "avgpool._cpu_taps",
    ),
    # the dispatcher: kernels or reference
    ("avgpool._dispatch",),
    # the one functional API, its argument handling and its backends
    ("avgpool._args", "avgpool._backends", "avgpool.ops"),
    # front ends: the torch custom ops and functional API, the Dask backend; then the nn modules
    ("avgpool.torch", "avgpool.dask"),
    ("avgpool.nn",),
    # tools: inspect, then monitor and bench (independent of each other), then study
    ("avgpool.inspect",),
    ("avgpool.monitor", "avgpool.bench"),
    ("avgpool.study",),
    # the model server: runners, telemetry, the Open Inference Protocol app, alerting as code
    ("avgpool.serve",),
    # canaries of a served model: the judge and its sources, above the server
    ("avgpool.canary",),
    ("avgpool.cli", "avgpool.__main__"),
]

#: Layers whose entries may import one another (the others' entries are independent).
SHARED_LAYERS = {0, 1, 3, 5, 13}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("avgpool", include_external_packages=False)


def _cycles(graph) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def _chain(graph, component: frozenset[str]) -> str:
    first = min(component)
    for other in sorted(component - {first}):
        there = graph.find_shortest_chain(first, other)
        back = graph.find_shortest_chain(other, first)
        if there and back:
            return " -> ".join([*there, *back[1:]])
    return ", ".join(sorted(component))


def test_no_import_cycles(graph):
    cycles = [_chain(graph, c) for c in _cycles(graph)]
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_every_module_has_a_layer(graph):
    placed = [name for layer in LAYERS for name in layer]
    loose = sorted(
        m
        for m in graph.modules
        if m != "avgpool" and not any(m == p or m.startswith(p + ".") for p in placed)
    )
    assert not loose, f"modules in no layer of tests/test_architecture.py (and DESIGN.md): {loose}"


def test_layers_import_only_downwards(graph):
    layers = [grimp.Layer(*layer, independent=i not in SHARED_LAYERS) for i, layer in enumerate(LAYERS)][::-1]
    illegal = graph.find_illegal_dependencies_for_layers(layers=layers)
    lines = []
    for dependency in sorted(illegal, key=lambda d: (d.importer, d.imported)):
        for route in dependency.routes:
            steps = [", ".join(sorted(route.heads)), *route.middle, ", ".join(sorted(route.tails))]
            lines.append(f"{dependency.importer} imports {dependency.imported}: {' -> '.join(steps)}")
    assert not lines, "imports against the layers:\n" + "\n".join(lines)


def test_only_the_api_and_above_import_the_package_root(graph):
    """``import avgpool`` loads the functional API, so a layer below it must not import it."""
    api = next(i for i, layer in enumerate(LAYERS) if "avgpool.ops" in layer)
    below = [name for layer in LAYERS[:api] for name in layer]
    importers = graph.find_modules_that_directly_import("avgpool")
    wrong = sorted(m for m in importers if any(m == p or m.startswith(p + ".") for p in below))
    assert not wrong, f"below the API yet importing avgpool itself: {wrong}"


def test_backend_adapters_sit_above_the_api(graph):
    """The ops find their non-NumPy backends by module name (`avgpool._backends.ADAPTERS`), the
    one dependency grimp cannot see: each must be a front-end module above the API."""
    from avgpool._backends import ADAPTERS

    api = next(i for i, layer in enumerate(LAYERS) if "avgpool.ops" in layer)
    above = [name for layer in LAYERS[api + 1 :] for name in layer]
    for _, _, adapter in ADAPTERS:
        assert adapter in graph.modules, adapter
        assert any(adapter.startswith(p + ".") for p in above), adapter
