"""Fault points: named places in the pipeline where a reliability test can make the process die.

A fault point costs one environment lookup when no fault is configured (production). A test sets
``SYNTHCORPUS_FAULTS_FILE`` to a JSON file it may write at any time (also after the deployment started)::

    {"faults": [{"point": "publish:after_data", "run": "faults-1", "action": "kill"}]}

``point`` is a fault point's name (``"<stage>:<where>"``, see :data:`POINTS`); ``run`` (optional) limits the
fault to one run id; ``action`` is ``"kill"`` (SIGKILL this process: what an OOM kill or a lost node does
to a task), ``"raise"`` (a :class:`InjectedFault`, an ordinary task failure) or ``"pause"`` (wait until
the test creates ``<faults file>.fired/<n>.release``, then go on: the test acts on the world at that exact
moment, e.g. stops the object store between publish's data files and its manifest; a pause not released
within ``timeout_s``, default 600, raises :class:`InjectedFault`). Each configured fault fires once: the
first process to reach it creates ``<faults file>.fired/<n>`` (O_EXCL) before acting, so the retry that
follows passes the same point. Which faults fired is what the test reads back (:func:`fired`); a test
releases a pause with :func:`release`.
"""

from __future__ import annotations

import json
import os
import signal
import time

ENV = "SYNTHCORPUS_FAULTS_FILE"

# Where a fault can be injected. "<stage>:before_commit" exists for every stage (its work done and
# stored, its marker not yet written), see stages.contract.commit_once.
POINTS = ("publish:after_data", "publish:after_manifest")


class InjectedFault(RuntimeError):
    """A fault a test asked for (action "raise")."""


def point(name: str, run_id: str | None = None) -> None:
    """Fire the fault configured for this point (and run), once; do nothing when none is configured."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        with open(path, encoding="utf-8") as fh:
            faults = json.load(fh).get("faults", [])
    except (OSError, ValueError):
        return  # no file yet, or one being written: no fault
    for n, fault in enumerate(faults):
        if fault.get("point") != name or (fault.get("run") not in (None, run_id)):
            continue
        fired = f"{path}.fired"
        os.makedirs(fired, exist_ok=True)
        try:
            fd = os.open(os.path.join(fired, str(n)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue  # fired already (by an earlier try of this task)
        os.write(fd, json.dumps({"point": name, "run": run_id, "pid": os.getpid()}).encode())
        os.fsync(fd)
        os.close(fd)
        action = fault.get("action", "kill")
        if action == "raise":
            raise InjectedFault(f"fault injected at {name} (run {run_id})")
        if action == "pause":
            _paused(os.path.join(fired, f"{n}.release"), float(fault.get("timeout_s", 600)), name, run_id)
            continue
        os.kill(os.getpid(), signal.SIGKILL)


def _paused(release: str, timeout_s: float, name: str, run_id: str | None) -> None:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise InjectedFault(f"fault pause at {name} (run {run_id}) was not released within {timeout_s:g} s")
        time.sleep(0.05)


def release(path: str, index: int) -> None:
    """Let the process paused at fault ``index`` of faults file ``path`` go on."""
    directory = f"{path}.fired"
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{index}.release"), "w", encoding="utf-8"):
        pass


def fired(path: str) -> list[dict]:
    """The faults of a faults file that fired, in the order they are configured."""
    out = []
    directory = f"{path}.fired"
    names = [n for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []
    for name in sorted(names, key=int):
        with open(os.path.join(directory, name), encoding="utf-8") as fh:
            out.append({"index": int(name), **json.load(fh)})
    return out
