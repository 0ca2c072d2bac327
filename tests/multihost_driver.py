"""experiments/run.py with a failure planted in one process's covariance pass, for the test
that a failing process ends a multi-process run instead of leaving it hanging
(tests/test_multihost.py).

    python tests/multihost_driver.py --fail_process=1 <experiments/run.py flags>
"""

import jax
from absl import flags

from infljax import platform
from infljax.curvature import fit

_FAIL = flags.DEFINE_integer("fail_process", 1, "The process whose covariance pass raises.")


def _failing(covariance_pass):
    def failing_pass(*args, **kwargs):
        if jax.process_index() == _FAIL.value:
            raise RuntimeError(f"planted failure on process {jax.process_index()}")
        return covariance_pass(*args, **kwargs)

    return failing_pass


if __name__ == "__main__":
    fit.covariance_pass = _failing(fit.covariance_pass)
    platform.launch()
