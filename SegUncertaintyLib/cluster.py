"""Cases on a Dask cluster: a local one of N worker processes, or an existing one by its address.

Triage (:mod:`.triage`) and evaluation (:mod:`.evaluation.harness`) run their cases here.

Each worker process builds one :class:`~.predictor.Predictor` (per model, device and search
settings) the first time it is given a case and keeps it for every later case, so a network is
loaded once per worker. Cases come back as they finish, in any order (:func:`run_cases`).

A case whose worker dies (killed, out of memory) is given to another worker once; if that one dies
too, the case comes back as :class:`WorkerDied` and the others go on. On a local cluster this is
set here (the scheduler's ``distributed.scheduler.allowed-failures`` = 1); an existing cluster's
scheduler keeps its own setting (Dask's default allows 3 retries).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from .errors import SegUncertaintyError

RETRIES_AFTER_DEATH = 1  # a case whose worker died is given to another worker this many times


@dataclass(frozen=True)
class ClusterSettings:
    """Where the cases run: ``workers`` local processes, or the Dask scheduler at ``scheduler``.

    Attributes:
        workers: start a local cluster of this many worker processes (one thread each).
        scheduler: address of an existing Dask scheduler (``tcp://host:8786``); wins over ``workers``.
        threads: PyTorch threads per worker process (default: the machine's cores over the workers).
    """

    workers: int | None = None
    scheduler: str | None = None
    threads: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.scheduler) or (self.workers or 0) > 0


class WorkerDied(SegUncertaintyError):
    """A case's worker process died on every attempt (killed, or out of memory)."""


@contextmanager
def open_client(settings: ClusterSettings) -> Iterator[Any]:
    """A Dask ``Client`` for ``settings`` (a local cluster is shut down on leaving).

    Raises:
        SegUncertaintyError: Dask's ``distributed`` is not installed, or the scheduler cannot be reached.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise SegUncertaintyError("running on Dask needs its distributed package: pip install distributed") from None
    if settings.scheduler:
        try:
            client = Client(settings.scheduler, timeout="20s")
        except OSError as exc:
            raise SegUncertaintyError(f"cannot reach the Dask scheduler at {settings.scheduler}: {exc}") from None
        with client:
            yield client
        return
    threads = settings.threads or max(1, (os.cpu_count() or 1) // settings.workers)
    # One case at a time per worker, none queued behind it: a worker's death is then blamed on the
    # one case it was running (Dask counts a death against every case a worker holds).
    config = {
        "distributed.scheduler.allowed-failures": RETRIES_AFTER_DEATH,
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(config):
        cluster = LocalCluster(
            n_workers=settings.workers,
            threads_per_worker=1,  # one case at a time per process: a case's memory is the unit
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env={"OMP_NUM_THREADS": str(threads), "SEGUNCERTAINTY_THREADS": str(threads)},
        )
        with cluster, Client(cluster) as client:
            yield client


@cache
def worker_predictor(model: Any, device: str, fragility: Any, samples: int | None = None) -> Any:
    """This process's Predictor for these settings, built on first use (see the module text)."""
    import torch

    from .predictor import Predictor

    threads = os.environ.get("SEGUNCERTAINTY_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    return Predictor(model, device, samples, fragility)


def run_cases(
    client: Any, function: Callable[..., Any], cases: Iterable[tuple[str, tuple]]
) -> Iterator[tuple[str, Any]]:
    """``function(*args)`` for every ``(key, args)`` of ``cases`` on the cluster, yielded as ``(key, result)``
    as each finishes; a case whose worker died on every attempt yields a :class:`WorkerDied` as its result.

    Cancelling (closing the iterator) cancels the cases not yet finished.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    futures = {client.submit(function, *args, key=f"case-{key}", pure=False): key for key, args in cases}
    try:
        for future in as_completed(futures):
            key = futures[future]
            try:
                yield key, future.result()
            except KilledWorker:
                tries = 1 + RETRIES_AFTER_DEATH
                yield key, WorkerDied(f"the worker running this case died {tries} times (killed, or out of memory?)")
    finally:
        client.cancel([future for future in futures if not future.done()])
