"""Process-level set-up shared by every launcher: logging, float64 where asked, quiet libraries."""

from __future__ import annotations

import contextlib
import logging as py_logging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from infljax.checkpoints import StageConflict
from infljax.data.readers import CorpusError
from infljax.data.tokenization import TokenizerError
from infljax.models.architectures import CheckpointError
from infljax.pipeline import run_stages
from infljax.workdir import report_dir

# Errors the user must act on: shown as one message, not a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    StageConflict,
    CorpusError,
    TokenizerError,
    CheckpointError,
)

QUIET_LIBRARIES = ("/orbax/", "/jax/_src/")


class _QuietLibraries(py_logging.Filter):
    """Drop INFO chatter that libraries send through absl (orbax logs every file it writes)."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        noisy = any(part in record.pathname for part in QUIET_LIBRARIES)
        return record.levelno >= py_logging.WARNING or not noisy


def setup(enable_x64: bool = False) -> None:
    """Call once at launcher start, before any JAX computation."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_QuietLibraries())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if enable_x64:
        jax.config.update("jax_enable_x64", True)
    logging.info(
        "JAX %s on %s (%d devices)", jax.__version__, jax.default_backend(), jax.device_count()
    )


@contextlib.contextmanager
def exit_on_user_error():
    """Exit with the message of a USER_ERRORS exception instead of a traceback."""
    try:
        yield
    except USER_ERRORS as error:
        logging.error("%s", error)
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
        setup()
        with exit_on_user_error():
            run_stages(config.value, workdir.value, only=only or stages.value)
        print_report_path(workdir.value)

    app.run(main)
