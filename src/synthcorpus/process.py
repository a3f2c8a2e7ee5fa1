"""How the project's command-line processes (``synthcorpus``, ``python -m synthcorpus.worker``) end."""

from __future__ import annotations

import logging
import os
import sys


def exit_now(code: int) -> None:
    """Leave the process with ``code`` once its output is flushed, skipping interpreter teardown.

    Everything a command writes is committed before it returns or raises. What teardown would add is the
    destruction of Arrow's native thread pools, which intermittently aborts the process with "terminate
    called without an active exception" (SIGABRT, apache/arrow#34314): a pod whose shard is committed, or
    whose error is already reported, would then exit -6 instead of its own code."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
