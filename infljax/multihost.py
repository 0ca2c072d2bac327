"""Multi-process runs (DESIGN §7): joining JAX's distributed runtime, who writes, failing fast.

A multi-host run starts the same launcher on every host (TPU pod workers, SLURM tasks, or by
hand with ``--coordinator_address``/``--num_processes``/``--process_id``); `initialize` connects
the processes through JAX's coordinator. The distributed stages then run on every process, each
on its share of every batch (`infljax.distributed.global_batch`), and

* **process 0 writes**: `on_main(fn, ...)` runs `fn` on process 0 only and hands its result, or
  its exception, to every process once it has finished. It is therefore also a barrier, and a
  decision read from the workdir (is this stage complete? which partitions are on disk?) is
  taken once, so processes never act on different views of a shared file system;
* **a failure ends the run**: `exit_on_failure` ends a process that raised at once, instead of
  letting it wait in JAX's shutdown barrier (5 minutes) while its peers wait for it; the peers
  see a closed connection or, within the heartbeat timeout, the coordinator's error, and exit.

With one process every function here reduces to running its argument.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import itertools
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

import jax
from absl import logging

T = TypeVar("T")

WAIT_MS = 7 * 24 * 3600 * 1000  # how long a process waits for process 0's on_main work
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID")
_OMPI_URI = "OMPI_MCA_orte_hnp_uri"


@dataclasses.dataclass(frozen=True)
class ProcessArgs:
    """How this process joins a multi-process run (the launcher flags of the same names).

    Attributes:
      coordinator_address: ``host:port`` of process 0, where JAX's coordinator listens;
        "" = detect a cluster (TPU pod, SLURM, Open MPI) or run as a single process.
      num_processes: processes in the run (0 = from the cluster, or 1).
      process_id: this process's index, 0 .. num_processes - 1 (-1 = from the cluster, or 0).
      initialization_timeout: seconds to wait for every process to connect.
      heartbeat_timeout: seconds after which a silent process counts as dead, failing the run.
    """

    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1
    initialization_timeout: int = 300
    heartbeat_timeout: int = 100

    def __post_init__(self):
        if self.num_processes < 0 or self.process_id < -1:
            raise ValueError(f"num_processes must be >= 0 and process_id >= -1: {self}")
        if self.num_processes and self.process_id >= self.num_processes:
            raise ValueError(
                f"process_id={self.process_id} but num_processes={self.num_processes}; "
                "process ids run from 0 to num_processes - 1"
            )
        if min(self.initialization_timeout, self.heartbeat_timeout) < 1:
            raise ValueError(f"timeouts must be >= 1 second: {self}")

    @property
    def explicit(self) -> bool:
        """Whether any of address, count or id was given (JAX detects the rest)."""
        return bool(self.coordinator_address or self.num_processes or self.process_id >= 0)


def detect_cluster() -> str | None:
    """The cluster JAX can initialise itself from when it runs several processes: "slurm",
    "openmpi", "tpu" (a Cloud TPU VM; a one-host VM then runs one process), or None.

    Reads environment variables and what `import jax` found, nothing on the network, so it
    returns at once on a laptop. A one-task SLURM or MPI job counts as no cluster: JAX would
    otherwise restrict such a process to a single GPU.
    """
    env = os.environ
    if all(v in env for v in _SLURM_VARS) and int(env["SLURM_NTASKS"]) > 1:
        return "slurm"
    if _OMPI_URI in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "openmpi"
    try:
        from jax._src import cloud_tpu_init  # set while importing jax on a Cloud TPU VM

        on_tpu_vm = bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))
    except ImportError:
        on_tpu_vm = False
    return "tpu" if on_tpu_vm else None


def initialize(args: ProcessArgs = ProcessArgs()) -> str:
    """Join JAX's distributed runtime when this is a multi-process run. Call it before any JAX
    computation. Returns how: "explicit", the cluster's name, or "single" (nothing done)."""
    how = "explicit" if args.explicit else detect_cluster()
    if how is None:
        return "single"
    with contextlib.suppress(AttributeError, ValueError):  # CPU collectives across processes
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    options = {
        "initialization_timeout": args.initialization_timeout,
        "heartbeat_timeout_seconds": args.heartbeat_timeout,
    }
    known = inspect.signature(jax.distributed.initialize).parameters
    options = {k: v for k, v in options.items() if k in known}
    if args.explicit:
        options.update(
            coordinator_address=args.coordinator_address or None,
            num_processes=args.num_processes or None,
            process_id=args.process_id if args.process_id >= 0 else None,
        )
    jax.distributed.initialize(**options)
    return how


# ----------------------------------------------------------------------------- who does what

_solo = False  # inside on_main's fn on process 0: everything runs as if single-process
_calls = itertools.count()


def process_count() -> int:
    """Processes taking part in what runs now: `jax.process_count()`, or 1 inside `on_main`."""
    return 1 if _solo else jax.process_count()


def is_main() -> bool:
    """Whether this process writes files, logs at INFO and shows progress bars (process 0)."""
    return jax.process_index() == 0


@contextlib.contextmanager
def _alone() -> Iterator[None]:
    global _solo
    outer, _solo = _solo, True
    try:
        yield
    finally:
        _solo = outer


def _client():
    from jax._src import distributed  # the coordinator's key-value store (as orbax uses it)

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError("several JAX processes but no distributed client; call initialize")
    return client


def on_main(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` run by process 0 alone; every process returns its result (or raises
    its exception) once process 0 has finished.

    Every process must make the same sequence of calls (they are matched by count). `fn` runs
    as single-process code (nested calls just run) and its result must pickle; keep it small,
    it passes through the coordinator. With one process: `fn(*args, **kwargs)`.
    """
    if process_count() == 1:
        return fn(*args, **kwargs)
    key = f"infljax/on_main/{next(_calls)}/{getattr(fn, '__qualname__', 'fn')}"
    client = _client()
    if not is_main():
        status, value = pickle.loads(client.blocking_key_value_get_bytes(key, WAIT_MS))
        if status == "error":
            raise value
        return value
    try:
        with _alone():
            value = fn(*args, **kwargs)
    except Exception as error:
        client.key_value_set_bytes(key, _pickled("error", error))
        raise
    client.key_value_set_bytes(key, _pickled("ok", value))
    return value


def _pickled(status: str, value) -> bytes:
    try:
        return pickle.dumps((status, value))
    except Exception:  # an unpicklable result or exception: send its text
        text = f"{type(value).__name__}: {value}"
        return pickle.dumps(("error", RuntimeError(f"on process 0: {text}")))


@contextlib.contextmanager
def exit_on_failure() -> Iterator[None]:
    """In a multi-process run, end this process as soon as the body raises, with status 1 (or
    the SystemExit's code) after logging the error and flushing the streams.

    A normal exit would first wait in JAX's shutdown barrier for peers that are themselves
    waiting for this process; ending at once lets them fail within the heartbeat timeout.
    """
    try:
        yield
    except BaseException as error:
        if jax.process_count() == 1:
            raise
        code = error.code if isinstance(error, SystemExit) else 1
        if not isinstance(error, SystemExit):
            logging.exception(
                "process %d failed (when the error is a lost connection, another process "
                "failed first: see its log)",
                jax.process_index(),
            )
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)
