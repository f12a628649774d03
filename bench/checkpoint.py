"""Checkpoints of a run in progress: a preempted, timed-out or killed run resumes where it stopped (docs/design.md §12).

One file per run, `<run dir>/checkpoint/state.pt`, written atomically, holds everything the rest of the run
depends on; `Checkpointer`, a trainer step callback, saves it every `checkpoint.every_steps` steps, after the last
one and at the first step boundary after a preemption signal. What is saved, and why a resume is exact:
docs/design.md §12. Depends on nothing of the suite but the interfaces it saves (trainer, method, curve, meter).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
DIRECTORY = "checkpoint"
FILE = "state.pt"


def preemption_signals() -> list[signal.Signals]:
    """SIGTERM (scancel, SLURM preemption, `kill`), SIGUSR1, and the signal submitit asks SLURM for."""
    names = ["SIGTERM", "SIGUSR1", "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]
    return list(dict.fromkeys(getattr(signal, n) for n in names if hasattr(signal, n)))


class RunCheckpoint:
    """The checkpoint file of one run directory."""

    def __init__(self, run_dir: Path):
        self.directory = Path(run_dir) / DIRECTORY
        self.path = self.directory / FILE

    def save(self, state: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"format_version": FORMAT_VERSION, **state}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, config_hash: str) -> dict | None:
        """The saved state if it belongs to this config, else None (absent, another config, unreadable)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as err:  # written atomically, so only a foreign or damaged file gets here
            warnings.warn(f"{self.path}: unreadable checkpoint ignored, the run starts over ({err})", RuntimeWarning)
            return None
        if state.get("format_version") != FORMAT_VERSION or state.get("config_hash") != config_hash:
            return None
        return state

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Checkpointer:
    """Trainer step callback that saves the run's state (docs/design.md §12) and restores it.

    `every`: optimizer steps between checkpoints (None: only after the last step and on signals).
    `track(...)`: the other stateful parts of the run, each with state_dict()/load_state_dict()
    (the method when it has them, the validation curve, the cost meter), by name.
    `save_allowed`: False on every rank but the main one (they restore, they never write).
    `with checkpointer:` around training installs the signal handlers (main thread only).
    """

    def __init__(self, checkpoint: RunCheckpoint, config_hash: str, *, every: int | None, started_at: str,
                 save_allowed: bool = True):
        self.checkpoint = checkpoint
        self.config_hash = config_hash
        self.every = every
        self.components: dict[str, Any] = {}
        self.started_at = started_at
        self.save_allowed = save_allowed
        self.resumed_at_steps: list[int] = []
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def track(self, **components) -> None:
        """The run's other stateful parts, by name (those without state_dict(), or None, hold nothing)."""
        self.components.update({name: c for name, c in components.items()
                                if c is not None and hasattr(c, "state_dict")})

    # ------------------------------------------------------------------ state
    def capture(self, trainer) -> dict:
        model = trainer.accelerator.unwrap_model(trainer.model)
        scaler = getattr(trainer.accelerator, "scaler", None)
        return {
            "config_hash": self.config_hash,
            "started_at": self.started_at,
            "resumed_at_steps": list(self.resumed_at_steps),
            "step": trainer.step,
            "micro_batches": trainer.micro_batches,
            "accelerator_step": trainer.accelerator.step,
            "trainable": {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_states(),
            "history": trainer.history,
            "components": {name: c.state_dict() for name, c in self.components.items()},
        }

    def restore(self, trainer, state: dict) -> None:
        """Put `trainer` and the components back where `state` left them (call before trainer.train())."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        if set(state["trainable"]) != trainable:
            raise RuntimeError(f"checkpoint {self.checkpoint.path}: its trainable parameters differ from this model's")
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in state["trainable"].items():
                params[name].copy_(value)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] is not None:
            trainer.accelerator.scaler.load_state_dict(state["scaler"])
        trainer.accelerator.step = state["accelerator_step"]
        trainer.step, trainer.micro_batches = state["step"], state["micro_batches"]
        trainer.history = state["history"]
        for name, component in self.components.items():
            component.load_state_dict(state["components"][name])
        self.started_at = state["started_at"]
        self.resumed_at_steps = [*state["resumed_at_steps"], state["step"]]
        _set_rng_states(state["rng"])  # last: nothing above may draw from them again

    def resume(self, trainer) -> bool:
        """Restore from this run's checkpoint if there is one for this config; True if it did."""
        state = self.checkpoint.load(self.config_hash)
        if state is None:
            return False
        self.restore(trainer, state)
        self.save(trainer)  # the resume itself is counted, even if this attempt dies before its next checkpoint
        return True

    def save(self, trainer) -> None:
        if self.save_allowed:
            self.checkpoint.save(self.capture(trainer))

    # ------------------------------------------------------------------ the step callback
    def on_step_end(self, trainer, step: int, row: dict | None) -> None:
        done = step + 1
        due = done == trainer.total_steps or (self.every is not None and done % self.every == 0)
        if due or self._pending is not None:
            self.save(trainer)
        if self._pending is not None:
            self._exit(self._pending)

    # ------------------------------------------------------------------ signals
    def __enter__(self) -> "Checkpointer":
        if threading_main():
            for sig in preemption_signals():
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN:  # ignored on purpose by whoever started us
                    continue
                self._previous[sig] = previous
                signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if self._pending is not None:  # came after the last step boundary: that step's checkpoint is saved
            self._chain(self._pending, previous)

    def _on_signal(self, signum: int, frame) -> None:
        self._pending = signum  # saved at the next step boundary, where the state is whole

    def _exit(self, signum: int) -> None:
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._chain(signum, previous)

    def _chain(self, signum: int, previous: dict) -> None:
        self._pending = None
        handler = previous.get(signum)
        if callable(handler):
            handler(signum, None)  # submitit: requeue the job and exit; its SIGTERM handler only logs
        raise SystemExit(128 + signum)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
