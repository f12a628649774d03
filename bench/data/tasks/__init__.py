"""Registry of the built-in tasks (synthetic, and for a pretrained model): name -> Task class, built from `dataset.task_kwargs`.

Owns the task names used in configs and the check that every configured keyword argument is one the
task accepts. Must not hold any task's logic (that lives in one module per family).
"""
from __future__ import annotations

import inspect

from bench.data.tasks.arithmetic import ArithmeticTask
from bench.data.tasks.base import Task
from bench.data.tasks.common import TASK_KWARGS_KEY
from bench.data.tasks.constraints import ConstraintsTask
from bench.data.tasks.sentiment import SentimentTask
from bench.data.tasks.verbosity import VerbosityTrapTask

TASKS: dict[str, type[Task]] = {
    ArithmeticTask.name: ArithmeticTask,
    ConstraintsTask.name: ConstraintsTask,
    SentimentTask.name: SentimentTask,
    VerbosityTrapTask.name: VerbosityTrapTask,
}

__all__ = [
    "TASKS",
    "ArithmeticTask",
    "ConstraintsTask",
    "SentimentTask",
    "Task",
    "VerbosityTrapTask",
    "available_tasks",
    "build_task",
]


def available_tasks() -> list[str]:
    """The registered task names, sorted."""
    return sorted(TASKS)


def build_task(name: str, **kwargs) -> Task:
    """The task `name` built with `kwargs` (from `dataset.task_kwargs`).

    Unknown names and unknown keyword arguments fail before anything is built, naming what is
    allowed; bad values fail in the task's constructor, naming `dataset.task_kwargs.<key>`.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(available_tasks())}")
    cls = TASKS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in kwargs:
        if key not in accepted:
            raise ValueError(
                f"{TASK_KWARGS_KEY}.{key}: task {name!r} has no parameter {key!r}; "
                f"its parameters are: {', '.join(accepted)}"
            )
    return cls(**kwargs)
