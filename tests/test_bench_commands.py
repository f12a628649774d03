"""`python -m bench` lists every command of the suite, each a module that exists, and runs the one named."""
from __future__ import annotations

import importlib.util

from bench.__main__ import COMMANDS, main


def test_every_listed_command_is_a_runnable_module(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name, (module, _) in COMMANDS.items():
        assert f"  {name} " in out and f"[python -m {module}]" in out
        spec = importlib.util.find_spec(module)
        assert spec is not None and (spec.submodule_search_locations is None
                                     or importlib.util.find_spec(f"{module}.__main__") is not None), module


def test_a_command_runs_its_module_and_an_unknown_one_is_named(capfd):
    # the command runs in a child process: its exit status and its stderr come back
    assert main(["baseline", "list", "results/baselines/nowhere"]) == 2
    assert "no manifest" in capfd.readouterr().err
    assert main(["trian"]) == 2 and "unknown command 'trian'" in capfd.readouterr().err
