"""Several devices behind one backend: one model replica per device, used for big jobs only.

A small job runs on the first device alone (no thread hand-off, no replicas); the replicas on
the other devices are loaded the first time a job reaches ``min_pairs`` pairs, and then the
engine scores that job's batches from one thread per device.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from crossrank.engine.backend import TorchBackend
from crossrank.engine.batching import TokenBatch

logger = logging.getLogger(__name__)

#: jobs with fewer pairs than this stay on the first device
DEFAULT_MIN_PAIRS = 4096


class DevicePool:
    """A :class:`~crossrank.engine.backend.Backend` spreading batches over several devices.

    ``load_model(device)`` returns our model on ``device``. ``score`` runs a batch on whichever
    replica is free (the first device when called from one thread); :meth:`workers_for` tells
    the engine how many threads to use for a job and loads the replicas when it first says more
    than one.
    """

    name = "torch"
    n_outputs = 1

    def __init__(
        self,
        load_model: Callable[[torch.device], torch.nn.Module],
        devices: Sequence[torch.device],
        dtype: torch.dtype,
        *,
        min_pairs: int = DEFAULT_MIN_PAIRS,
    ) -> None:
        if not devices:
            raise ValueError("a device pool needs at least one device")
        self.devices = list(devices)
        self.device = self.devices[0]
        self.dtype = dtype
        self.min_pairs = min_pairs
        self._load = load_model
        self.primary = TorchBackend(load_model(self.device), self.device, dtype)
        self.model = self.primary.model
        self.replicas: list[TorchBackend] = [self.primary]
        # LIFO: a caller from one thread always gets the primary back
        self._free: queue.LifoQueue[TorchBackend] = queue.LifoQueue()
        self._free.put(self.primary)
        self._spin_lock = threading.Lock()

    def workers_for(self, n_pairs: int, n_batches: int) -> int:
        """Threads to score a job of ``n_pairs`` pairs in ``n_batches`` batches (1: in-line)."""
        if len(self.devices) == 1 or n_pairs < self.min_pairs or n_batches < 2:
            return 1
        self._spin_up()
        return min(len(self.devices), n_batches)

    def _spin_up(self) -> None:
        with self._spin_lock:
            if len(self.replicas) == len(self.devices):
                return
            for dev in self.devices[len(self.replicas) :]:
                logger.info("loading a model replica on %s", dev)
                replica = TorchBackend(self._load(dev), dev, self.dtype)
                self.replicas.append(replica)
                self._free.put(replica)

    def score(self, batch: TokenBatch) -> np.ndarray:
        backend = self._free.get()
        try:
            return backend.score(batch)
        finally:
            self._free.put(backend)
