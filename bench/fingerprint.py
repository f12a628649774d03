"""Code fingerprints: which code made a cache entry or a run record (docs/design.md §6, §9).

A fingerprint hashes the source of the modules that compute an artefact, parsed with `ast` so that
comments, docstrings and formatting do not count: editing prose rebuilds nothing, while any change to
what the code does gives a new fingerprint, so a cache entry or a completed run made by other code is
never taken for current. Pure stdlib; imports none of the modules it fingerprints.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

# What each kind of shared build (bench.cache) depends on, besides its payload. Downstream builds name
# their upstream entry's key in their payload (a dataset its SFT model, a reference its model and data),
# so a change upstream rebuilds them too. The tasks are one package here: editing one task rebuilds the
# other tasks' entries as well, a small price for a list that cannot miss a helper module.
BUILD_CODE = {
    "model": ("bench.models",),
    "sft": ("bench.sft", "bench.models", "bench.data.encoding", "bench.data.tasks", "bench.data.splits"),
    "dataset": ("bench.data.builtin", "bench.data.splits", "bench.data.labelling", "bench.data.tasks",
                "bench.generation"),
    "reference": ("bench.reference", "bench.logps", "bench.data.encoding", "bench.data.examples"),
    "reference_samples": ("bench.evaluate", "bench.generation", "bench.data.encoding"),
    "reference_lm_eval": ("bench.lm_eval_harness",),
}
# A run's numbers depend on the library (methods, trainer, evaluation, data, models, cost accounting),
# not on its tooling: checking configs, logging, writing records, planning sweeps, reproducing, reporting,
# benchmarking. Editing those never invalidates a completed run.
RUN_CODE = ("bench",)
TOOLING = ("bench.__main__", "bench.baseline", "bench.benchmark", "bench.config", "bench.fingerprint", "bench.gpu_check",
           "bench.loggers", "bench.preflight", "bench.provenance", "bench.publish", "bench.records", "bench.redaction",
           "bench.reproduce", "bench.run_summary", "bench.slurm", "bench.sweeps", "bench.train")


def _source_files(module: str) -> list[Path]:
    """The .py files of a module, or of every module in a package, sorted; [] for a module that does not
    exist (a build's list may name a module that a later version adds)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return []
    origin = Path(spec.origin)
    if spec.submodule_search_locations:  # a package: all of it
        return sorted(p for root in spec.submodule_search_locations for p in Path(root).rglob("*.py"))
    return [origin] if origin.suffix == ".py" else []


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def _file_digest(path: Path, mtime_ns: int) -> str:
    """Digest of one file's code (mtime in the cache key: an edited file is read again)."""
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def code_fingerprint(*modules: str, leave_out: tuple[str, ...] = ()) -> str:
    """16 hex digits over the code of `modules` (dotted names; a package means all its modules), less the
    modules in `leave_out`."""
    left_out = {f for module in leave_out for f in _source_files(module)}
    files = sorted({f for module in modules for f in _source_files(module)} - left_out)
    digest = hashlib.sha256()
    for path in files:
        root = next(p for p in path.parents if not (p / "__init__.py").exists())
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(_file_digest(path, path.stat().st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def build_fingerprint(kind: str) -> str:
    """The fingerprint of a shared build of `kind` (BUILD_CODE)."""
    if kind not in BUILD_CODE:
        raise KeyError(f"no code list for cache kind {kind!r}; known: {', '.join(BUILD_CODE)}")
    return code_fingerprint(*BUILD_CODE[kind])


def run_fingerprint() -> str:
    """The fingerprint of the code a run's numbers depend on (stored in every record)."""
    return code_fingerprint(*RUN_CODE, leave_out=TOOLING)
