"""What ``connectlink serve`` sets up for its workers' metrics before any of them starts.

prometheus_client picks its mode once, when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``
(set: every value is written to files there, one set a process; unset: values in memory). So
this module does not import it, and ``serve`` calls ``prepare_directory`` before the app (which
does) is imported in any process that serves.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import tempfile

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prepare_directory(workers: int) -> str | None:
    """The directory of multiprocess mode, emptied, its path in ``PROMETHEUS_MULTIPROC_DIR``
    for the workers: the one that variable names, if set (its files are a previous run's, and
    would be counted again); else, for more than one worker, a new temporary one, removed at
    exit. None: one process, its metrics in its app's registry."""
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        return given
    os.environ.pop(MULTIPROCESS_DIR, None)  # set but empty would mean the current directory
    if workers == 1:
        return None
    made = tempfile.mkdtemp(prefix="connectlink-metrics-")
    os.environ[MULTIPROCESS_DIR] = made
    atexit.register(shutil.rmtree, made, True)
    return made
