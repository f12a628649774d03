"""Other packages are used through their public APIs: no module of the suite assigns to (or deletes) an
attribute of a module it imports from another package, nor setattr()s one. Swapping a library's module
attributes breaks silently on its next release (lm-eval, gguf and W&B were patched this way once).

Attributes of objects the suite builds (a config, a tokenizer, a model's modules) are the suite's to set;
what is checked is assignment through a name bound by an import of a package other than the suite's own.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN_PACKAGES = ("bench", "analysis", "hydra_plugins")
SOURCES = sorted(p for package in OWN_PACKAGES for p in (ROOT / package).rglob("*.py"))


def imported_names(tree: ast.AST) -> set[str]:
    """Names bound by `import x` / `import x.y as z` / `from x import y` of a package not in OWN_PACKAGES,
    anywhere in the module (function-level imports included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in OWN_PACKAGES:
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in OWN_PACKAGES:
                names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _targets(node: ast.AST):
    if isinstance(node, (ast.Tuple, ast.List)):
        for element in node.elts:
            yield from _targets(element)
    elif isinstance(node, ast.Starred):
        yield from _targets(node.value)
    else:
        yield node


def foreign_attribute_writes(source: str) -> list[tuple[int, str]]:
    """(line, code) of every write to an attribute reached through an imported foreign name."""
    tree = ast.parse(source)
    foreign = imported_names(tree)
    writes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in _targets(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = list(_targets(node.target))
        elif isinstance(node, ast.Delete):
            targets = [t for target in node.targets for t in _targets(target)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("setattr", "delattr") and node.args):
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Attribute) and _root_name(target) in foreign:
                writes.append((node.lineno, ast.unparse(target)))
    return sorted(writes)


def test_the_check_finds_the_patterns_it_forbids():
    patched = (
        "import gguf\n"
        "import lm_eval.evaluator as evaluator\n"
        "from transformers import utils\n"
        "def f():\n"
        "    import wandb\n"
        "    gguf.GGUFReader, x = None, 1\n"
        "    evaluator.add_env_info = lambda results: None\n"
        "    utils.logging.x += 1\n"
        "    setattr(wandb.sdk, 'y', 2)\n"
        "    del gguf.get_tensor_name_map\n"
    )
    assert [line for line, _ in foreign_attribute_writes(patched)] == [6, 7, 8, 9, 10]
    own = (
        "from transformers import LlamaConfig\n"
        "from bench import records\n"
        "config = LlamaConfig()\n"
        "config.hidden_size = 8\n"        # an object the module built
        "records.SCHEMA = 2\n"            # the suite's own module: not another package's
        "def f(module):\n"
        "    module.p = 0.0\n"
        "    setattr(config, 'x', 1)\n"
    )
    assert foreign_attribute_writes(own) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_assigns_to_another_packages_attributes(path):
    writes = foreign_attribute_writes(path.read_text(encoding="utf-8"))
    assert not writes, f"{path.relative_to(ROOT)} writes another package's attributes: {writes}"
