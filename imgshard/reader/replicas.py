"""How many training processes share an epoch, and which one this is.

Given explicitly (``num_replicas`` and ``rank``), or found in the environment the launcher left,
in this order:

1. JAX, when it is already imported and ``jax.distributed`` is initialized with more than one
   process (JAX is never imported to find out: that alone would start its runtime);
2. TensorFlow's ``TF_CONFIG``: the ``chief`` and ``worker`` tasks of its cluster, the chief
   first (the order ``MultiWorkerMirroredStrategy`` numbers them in); any other task (an
   ``evaluator``, a parameter server) reads as one process;
3. ``WORLD_SIZE`` and ``RANK``, as torchrun, Horovod-style and most launchers set them;

otherwise one process. Whatever is found is checked as if given: a malformed value is one line
naming the variable, never a process silently reading the whole epoch.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..values import is_whole_argument
from .checks import ReaderError
from .order import MAX_PARTITIONS

#: The task types of ``TF_CONFIG`` that train, in the order their processes are numbered.
TRAINING_TASKS = ("chief", "worker")


def replicas_of(num_replicas: Any, rank: Any) -> tuple[int, int]:
    """``(num_replicas, rank)``: as given, or from the environment when both are None."""
    if num_replicas is None and rank is None:
        found, source = from_environment()
        return checked(*found, source)
    if num_replicas is None or rank is None:
        raise ReaderError("give both num_replicas and rank, or neither (then they come from "
                          "the environment: JAX, TF_CONFIG or WORLD_SIZE/RANK)")
    return checked(num_replicas, rank, "")


def checked(num_replicas: Any, rank: Any, source: str) -> tuple[int, int]:
    """Whole numbers with ``0 <= rank < num_replicas``, else one line naming ``source``."""
    where = f" (from {source})" if source else ""
    if not is_whole_argument(num_replicas) or not 1 <= num_replicas <= MAX_PARTITIONS:
        raise ReaderError(f"num_replicas must be a whole number from 1 to {MAX_PARTITIONS}, "
                          f"got {repr(num_replicas)[:40]}{where}")
    if not is_whole_argument(rank) or not 0 <= rank < num_replicas:
        raise ReaderError(f"rank must be a whole number from 0 to num_replicas - 1 = "
                          f"{num_replicas - 1}, got {repr(rank)[:40]}{where}")
    return int(num_replicas), int(rank)


def from_environment() -> tuple[tuple[Any, Any], str]:
    """``((num_replicas, rank), where they came from)``; ``((1, 0), "")`` for one process."""
    for find in (_from_jax, _from_tf_config, _from_world_size):
        found = find()
        if found is not None:
            return found
    return (1, 0), ""


def _from_jax() -> tuple[tuple[Any, Any], str] | None:
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    source = "jax.process_count()/process_index()"
    try:
        initialized = getattr(getattr(jax, "distributed", None), "is_initialized", None)
        if initialized is None or not initialized():
            return None
        count = jax.process_count()
        if is_whole_argument(count) and count == 1:
            return None
        return (count, jax.process_index()), source  # checked by the caller, naming jax
    except Exception as error:  # noqa: BLE001 - a broken or foreign jax: one line, not a trace
        raise ReaderError(f"cannot ask jax for the process count: {type(error).__name__}: "
                          f"{str(error)[:80]}") from None


def _from_tf_config() -> tuple[tuple[int, int], str] | None:
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
        kind, index = task.get("type"), task.get("index", 0)
        members = [cluster.get(name) or [] for name in TRAINING_TASKS]
        if not isinstance(kind, str) or not all(
                isinstance(tasks, list) and all(isinstance(address, str) for address in tasks)
                for tasks in members):
            raise TypeError
    except (ValueError, AttributeError, TypeError, RecursionError):
        raise ReaderError("TF_CONFIG is not the JSON TensorFlow expects (a cluster with "
                          "chief/worker lists of addresses and a task with a type and index)"
                          ) from None
    if kind not in TRAINING_TASKS:
        return None
    counts = [len(tasks) for tasks in members]
    position = TRAINING_TASKS.index(kind)
    if not is_whole_argument(index) or not 0 <= index < counts[position]:
        raise ReaderError(f"TF_CONFIG's task is {kind} {repr(index)[:20]}, but its cluster has "
                          f"{counts[position]} {kind} task(s)")
    return (sum(counts), sum(counts[:position]) + int(index)), "TF_CONFIG"


def _from_world_size() -> tuple[tuple[Any, Any], str] | None:
    world, rank = os.environ.get("WORLD_SIZE"), os.environ.get("RANK")
    if world is None and rank is None:
        return None
    if world is None or rank is None:
        raise ReaderError("the environment sets only one of WORLD_SIZE and RANK: set both, or "
                          "pass num_replicas and rank")
    return (_integer(world), _integer(rank)), "WORLD_SIZE/RANK"


def _integer(text: str) -> Any:
    """``text`` as an int when it is one, else as it is (so that the check names it)."""
    try:
        return int(text.strip())
    except ValueError:
        return text
