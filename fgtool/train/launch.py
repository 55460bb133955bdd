"""Multi-process launch on CPUs: make ``accelerate launch --cpu --num_processes N`` start N.

Accelerate starts CPU jobs through its "simple" launcher, which spawns one process and
relies on ``mpirun`` (``--mpirun_hostfile``) for more. Without MPI, ``accelerate launch
--cpu --num_processes 2 -m fgtool train ...`` would quietly train on one process. The
launcher leaves a trace (``ACCELERATE_USE_CPU`` plus ``MASTER_ADDR``, set only when more
than one process was asked for, and no rank variables), so ``fgtool train`` recognises
it, reads N from the launcher's command line and starts the N workers itself through
``torch.distributed.run`` (gloo). GPU launches (``--multi_gpu``), ``torchrun`` and
``mpirun`` set the rank variables and are left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import FgtoolError

RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_RANK")


def _truthy(v: str | None) -> bool:
    return str(v).lower() in ("1", "true", "yes")


def requested_cpu_processes(env=os.environ, parent_cmdline: list[str] | None = None) -> int:
    """N when this process was started by Accelerate's CPU launcher with --num_processes N > 1, else 0."""
    if not _truthy(env.get("ACCELERATE_USE_CPU")) or "MASTER_ADDR" not in env:
        return 0
    if any(k in env for k in RANK_VARS):
        return 0  # some launcher already made the ranks
    if parent_cmdline is None:
        try:
            raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        except OSError:
            return 0
        parent_cmdline = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    for i, a in enumerate(parent_cmdline):
        val = None
        if a in ("--num_processes", "--num-processes") and i + 1 < len(parent_cmdline):
            val = parent_cmdline[i + 1]
        elif a.startswith(("--num_processes=", "--num-processes=")):
            val = a.split("=", 1)[1]
        if val is not None:
            try:
                n = int(val)
            except ValueError:
                raise FgtoolError(f"accelerate launch --num_processes {val!r}: expected a number") from None
            return n if n > 1 else 0
    return 0


def relaunch_cpu_workers(n: int, argv: list[str]) -> int:
    """Run ``python -m fgtool <argv>`` as n gloo workers on this machine; returns the exit code."""
    from torch.distributed import run as distrib_run

    args = distrib_run.get_args_parser().parse_args(
        ["--standalone", "--nproc_per_node", str(n), "-m", "fgtool", *argv])
    try:
        distrib_run.run(args)
    except Exception as e:  # ChildFailedError: the worker already printed its own one-line error
        failures = getattr(e, "failures", {}) or {}
        codes = [f.exitcode for f in failures.values() if getattr(f, "exitcode", None)]
        return codes[0] if codes and codes[0] > 0 else 1
    return 0


def maybe_relaunch(argv: list[str] | None = None) -> int | None:
    """If Accelerate's CPU launcher asked for N > 1 processes, run them; returns their exit code."""
    n = requested_cpu_processes()
    if not n:
        return None
    print(f"fgtool: accelerate launch --cpu asked for {n} processes; starting them with torch.distributed "
          "(gloo)", file=sys.stderr)
    return relaunch_cpu_workers(n, list(sys.argv[1:] if argv is None else argv))
