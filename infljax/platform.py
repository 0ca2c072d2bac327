"""Process-level set-up shared by every launcher: logging, float64 where asked, quiet libraries,
and joining a multi-process run (`infljax.multihost`; flags below; docs/scaling.md, "Multi-host
runs")."""

from __future__ import annotations

import contextlib
import errno
import logging as py_logging
import os
import re
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from infljax.checkpoints import StageConflict
from infljax.data.readers import CorpusError
from infljax.data.tokenization import TokenizerError
from infljax.models.architectures import CheckpointError
from infljax.multihost import ProcessArgs, exit_on_failure, initialize, is_main
from infljax.pipeline import run_stages
from infljax.workdir import WorkdirError, report_dir

# Errors the user must act on: shown as their message alone. Any other error is shown as one
# line too (with its type), and with the traceback under --verbose.
USER_ERRORS: tuple[type[Exception], ...] = (
    StageConflict,
    CorpusError,
    TokenizerError,
    CheckpointError,
    WorkdirError,
    ValueError,  # every invalid value (the typed arguments' checks), ConfigError included
    FileNotFoundError,
    NotADirectoryError,
    FileExistsError,
    PermissionError,
)

QUIET_LIBRARIES = ("/orbax/", "/jax/_src/")

# Several processes: every host runs the same launcher. Without these flags a TPU pod, SLURM job
# or Open MPI run is detected from its environment; otherwise the run is one process.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0 (JAX's coordinator) in a multi-process run."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in the run (0: detect).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (-1: detect).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds to wait for every process to connect."
)
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds of silence after which a process counts as dead."
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error.")


class _QuietLibraries(py_logging.Filter):
    """Drop INFO chatter that libraries send through absl (orbax logs every file it writes)."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        noisy = any(part in record.pathname for part in QUIET_LIBRARIES)
        return record.levelno >= py_logging.WARNING or not noisy


def process_args() -> ProcessArgs:
    """The multi-process flags (defaults when they were not parsed, e.g. in tests)."""
    if not flags.FLAGS.is_parsed():
        return ProcessArgs()
    return ProcessArgs(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
        initialization_timeout=_INIT_TIMEOUT.value,
        heartbeat_timeout=_HEARTBEAT.value,
    )


def setup(enable_x64: bool = False, processes: ProcessArgs | None = None) -> None:
    """Call once at launcher start, before any JAX computation. `processes`: how to join a
    multi-process run (default: the launcher's flags). Processes other than 0 log warnings
    and errors only."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_QuietLibraries())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if enable_x64:
        jax.config.update("jax_enable_x64", True)
    how = initialize(process_args() if processes is None else processes)
    if not is_main():
        logging.set_verbosity(logging.WARNING)
    logging.info(
        "JAX %s on %s (%d devices, %d on this process; %d processes: %s)",
        jax.__version__,
        jax.default_backend(),
        jax.device_count(),
        jax.local_device_count(),
        jax.process_count(),
        how,
    )


@contextlib.contextmanager
def exit_on_user_error(verbose: bool = False):
    """End the process with one line instead of a traceback (`verbose`: re-raise): a user's
    mistake (USER_ERRORS) by its message with exit status 1, a full disk or read-only file
    system by what to do, Ctrl-C by how to resume (status 130), anything else by its type and
    message (status 1)."""
    try:
        yield
    except KeyboardInterrupt:
        if verbose:
            raise
        _one_line("interrupted; rerun the same command to resume (finished parts are kept)")
        sys.exit(130)
    except Exception as error:
        if verbose:
            raise
        _one_line(error_line(error))
        sys.exit(1)


def error_line(error: Exception) -> str:
    """The one line (a message may span several) that tells the user what went wrong."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = error.filename or "the workdir"
        return f"disk full writing {where}: free space or use another --workdir"
    if isinstance(error, OSError) and error.errno == errno.EROFS:
        return f"read-only file system: cannot write {error.filename}; use another --workdir"
    if isinstance(error, USER_ERRORS):
        return f"error: {error}"
    return f"error ({type(error).__name__}): {error}  [--verbose shows the traceback]"


def _one_line(text: str) -> None:
    logging.flush()
    print(text, file=sys.stderr, flush=True)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a mistyped flag or config field (``--config.scores.rnak``:
    'did you mean rank?') or a config file that fails as one line and exit status 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _one_line(f"error: {error}  (--helpfull lists the flags)")
    except Exception as error:  # raised by the config file or a --config.<field> override
        if "--verbose" in argv:
            raise
        text = str(error).replace("\\n", " ").replace("\\", "")
        message = " ".join(text.strip("'\" ").split())
        hint = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
        if hint:  # ml_collections' own suggestion for a mistyped field
            message = f"no field {hint[2]!r}; did you mean {hint[1]!r}?"
        elif isinstance(error, AttributeError | KeyError):
            message = f"no field {message!r}"
        _one_line(f"error in the config: {message}")
    sys.exit(1)


def print_report_path(workdir: str) -> None:
    """Tell the user which page to open, when the run produced one."""
    page = report_dir(workdir) / "index.html"
    if page.exists():
        print(f"report: {page.absolute()}")


def launch(only: list[str] | None = None, default_config: str = "configs/demo.py") -> None:
    """The whole of a stage launcher: flags ``--config`` and ``--workdir``, then the stages,
    then the report's path when there is one.

    `only=None` also defines ``--stages`` (default: the config's own list).
    """
    config = config_flags.DEFINE_config_file("config", default_config, "Experiment config.")
    workdir = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
    stages = None
    if only is None:
        stages = flags.DEFINE_list("stages", None, "Run only these stages (default: all).")

    def main(argv):
        del argv
        with exit_on_failure(), exit_on_user_error(_VERBOSE.value):
            setup()
            run_stages(config.value, workdir.value, only=only or stages.value)
        if is_main():
            print_report_path(workdir.value)

    app.run(main, flags_parser=parse_flags)
