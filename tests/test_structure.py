"""The package's import structure: no import cycle between modules, and no arrow from a lower layer to a higher one.

The graph is read from the source with `ast` (nothing is imported): every `import` and `from ... import` of a
`brainllm` module, at module level or inside a function (the lazy imports of cli.py count) or under
`if TYPE_CHECKING:`, relative imports resolved against the importing module. `from pkg import name` is an arrow to
the submodule `pkg.name` when there is one, else to `pkg` itself.

The layers, bottom to top (a module may import its own layer and any layer below it, never one above). Each layer is
a list of folders (packages) and top-level modules, never single files inside a folder: a folder is one layer.

1. **base**: `errors`, `io`, `progress`, `ridge`, `config`, `adapter_options`, `runpaths` (the run folder's file
   names, which scoring reads too), `identification` (2-way identification from a score matrix), `ties` (comparisons with a tie tolerance) and the package `__init__` (`__version__`; it owns only itself, not the modules
   below it);
2. **data**: readers, the prepared dataset, splits, preprocessing, the simulated participant (`brainllm.data`);
3. **voxelwise**: delays, Lanczos resampling, bootstrap ridge, model files (`brainllm.voxelwise`);
4. **scoring**: metrics, statistics, story scoring, the report (`brainllm.evaluation`): it reads predictions and run
   files, never a model or the run loader (only `data.features`, for the MiniLM scorer);
5. **model**: backbones, the adapters and the BrainLLM module (`brainllm.backbones`, `brainllm.model`);
6. **runs**: run folders and training (`brainllm.runs`, `brainllm.training`);
7. **decoding**: sentence generation, the word LM, beam pieces, the word-rate model, full-story decoding
   (`brainllm.decoding`); it scores nothing (checked on its own below, although scoring is a lower layer);
8. **diagnostics**: the information ceiling and its injection oracles (`brainllm.diagnostics`), which run a trained
   model through the teacher-forced losses of `decoding.generation`;
9. **experiments**: the full-story experiment (`brainllm.experiments`): decodes with `decoding`, scores with
   `evaluation`;
10. **baselines**: the Tang et al. 2023 decoder (`brainllm.baselines`), built on decoding, experiments and voxelwise;
11. **cli**: the command line (`brainllm.cli`, `brainllm.__main__`).

Derived from the code as it is after issue 25's moves. data, voxelwise and scoring import none of one another, so
their order among themselves is a choice, and so are diagnostics and experiments; putting scoring below model keeps
the evaluation reading files, never a model. Each of the others is needed where it is (model -> data, runs -> model,
decoding -> runs, diagnostics -> decoding and scoring, experiments -> decoding and scoring, baselines ->
experiments, cli -> baselines).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "brainllm"

ROOT = "brainllm"
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("brainllm", "brainllm.errors", "brainllm.io", "brainllm.progress", "brainllm.ridge",
              "brainllm.config", "brainllm.adapter_options", "brainllm.runpaths", "brainllm.identification",
              "brainllm.ties")),
    ("data", ("brainllm.data",)),
    ("voxelwise", ("brainllm.voxelwise",)),
    ("scoring", ("brainllm.evaluation",)),
    ("model", ("brainllm.backbones", "brainllm.model")),
    ("runs", ("brainllm.runs", "brainllm.training")),
    ("decoding", ("brainllm.decoding",)),
    ("diagnostics", ("brainllm.diagnostics",)),
    ("experiments", ("brainllm.experiments",)),
    ("baselines", ("brainllm.baselines",)),
    ("cli", ("brainllm.cli", "brainllm.__main__")),
)


def module_files(root: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every .py below `root` (a package is named by its `__init__.py`)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name,) + path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the set of package modules it imports (see the module docstring for what counts)."""
    files = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in files}

    def resolve(name: str) -> str | None:
        while name and name not in files:  # `from pkg.mod import Class` -> pkg.mod
            name = name.rpartition(".")[0]
        return name or None

    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    if not base:
                        raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in files else base_name
                           for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != root.name:
                    continue  # third-party or standard library
                resolved = resolve(target)
                if resolved is None:
                    raise AssertionError(f"{path}:{node.lineno}: imports {target}, which is no module of the package")
                if resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as `[a, b, ..., a]`, or None when the graph is acyclic (iterative depth-first search)."""
    state: dict[str, int] = {}  # absent: unseen, 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def layer_of(module: str) -> int:
    """Index into LAYERS of the folder or top-level module that owns `module` (the package `__init__`, `ROOT`, owns
    only itself); KeyError for an undeclared module."""
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != ROOT and module.startswith(prefix + ".")):
                return index
    raise KeyError(module)


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every arrow from a module to one in a higher layer, as readable lines."""
    out = []
    for src in sorted(graph):
        for dst in sorted(graph[src]):
            if layer_of(dst) > layer_of(src):
                out.append(f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})")
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_the_package(graph):
    # a sanity floor, so a broken reader cannot pass the checks below on an empty graph
    assert len(graph) > 50
    assert "brainllm.decoding.generation" in graph["brainllm.cli"]  # a function-level import
    assert "brainllm.decoding.beam" in graph["brainllm.decoding.fullstory"]  # a relative import
    assert "brainllm.model" in graph["brainllm.decoding.fullstory"]  # `from ..model import BrainLLM`: the package
    assert "brainllm.decoding.fullstory" in graph["brainllm.baselines.tang.decoder"]  # under TYPE_CHECKING


def test_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_has_a_layer(graph):
    missing = []
    for module in graph:
        try:
            layer_of(module)
        except KeyError:
            missing.append(module)
    assert not missing, f"modules outside every declared layer (add them to LAYERS in {__file__}): {missing}"


def test_no_arrow_from_a_lower_layer_to_a_higher_one(graph):
    arrows = upward_arrows(graph)
    assert not arrows, "imports against the layering:\n" + "\n".join(arrows)


def test_layers_are_folders_or_top_level_modules():
    files = module_files()
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            assert prefix in files, f"{prefix} is no module or package of {SRC}"
            is_folder = files[prefix].name == "__init__.py"
            assert is_folder or prefix.count(".") == 1, f"{prefix}: a layer names folders, not files inside them"


def test_decoding_imports_no_scoring_module(graph):
    bad = sorted(f"{s} -> {d}" for s in graph if s.startswith("brainllm.decoding")
                 for d in graph[s] if d.startswith("brainllm.evaluation"))
    assert not bad


def test_the_checker_fails_on_a_planted_upward_import(tmp_path):
    """A fake package tree with the real layer names: scoring importing decoding is caught, the reverse is not."""
    pkg = tmp_path / "brainllm"
    for folder in ("evaluation", "decoding"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "decoding" / "beam.py").write_text("from ..evaluation import story\n")
    (pkg / "evaluation" / "story.py").write_text("def f():\n    from brainllm.decoding.beam import x\n")
    arrows = upward_arrows(import_graph(pkg))
    assert arrows == ["brainllm.evaluation.story (scoring) imports brainllm.decoding.beam (decoding)"]
    (pkg / "evaluation" / "story.py").write_text("import os\n")
    assert upward_arrows(import_graph(pkg)) == []


def test_decoding_imports_no_baseline(graph):
    bad = sorted(f"{s} -> {d}" for s in graph if s.startswith("brainllm.decoding")
                 for d in graph[s] if d.startswith("brainllm.baselines"))
    assert not bad


def test_the_checks_can_fail():
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    cycle = find_cycle(planted)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert upward_arrows({"brainllm.data.dataset": {"brainllm.decoding.beam"}, "brainllm.decoding.beam": set()})
    assert not upward_arrows({"brainllm.decoding.beam": {"brainllm.data.dataset"}, "brainllm.data.dataset": set()})
    assert upward_arrows({"brainllm.evaluation.story": {"brainllm.diagnostics.ceiling"},
                          "brainllm.diagnostics.ceiling": set()})  # scoring never runs a model
    with pytest.raises(KeyError):
        layer_of("brainllm.undeclared")  # the package `__init__` is no catch-all for new top-level modules


def test_the_reader_resolves_relative_and_lazy_imports(tmp_path):
    pkg = tmp_path / "brainllm"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from ..top import g\n    return g\n")
    (pkg / "top.py").write_text("from .sub import a\nfrom brainllm import sub\nimport os\n")
    g = import_graph(pkg)
    assert g == {"brainllm": set(), "brainllm.sub": {"brainllm.sub.a"}, "brainllm.sub.a": {"brainllm.top"},
                 "brainllm.top": {"brainllm.sub.a", "brainllm.sub"}}
    assert find_cycle(g) is not None  # sub.a -> top -> sub.a, through a function-level import
