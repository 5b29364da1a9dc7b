"""Where a process's large buffers come from: without transparent huge pages.

pyarrow's default pool (mimalloc) and numpy (for arrays of 4 MiB and more) ask the kernel for
transparent huge pages with ``madvise``. Where the kernel's THP mode is ``madvise`` (a common
default), the first touch of such a region faults in a whole 2 MiB page and may first wait
for the kernel to compact memory: system time that comes and goes with the machine's memory
state. Ingestion allocates batch after batch of buffers that size. pyarrow's jemalloc pool
takes no huge pages, and keeps Arrow's buffers out of the C library's heap (where, with the
system allocator, peak RSS grew: probably Arrow's freed buffers and Python's objects sharing
that heap keep it from shrinking; not examined further).

Measured on this project's 2-core machine (``thp_fault_alloc`` in ``/proc/vmstat``, peak RSS
from ``VmHWM``; docs/data-engineers.md has the runs):

- reading one 21 MB CSV file in a fresh process: 43 huge-page faults and 0.2-0.6 s of system
  time with mimalloc, none and 0.04-0.05 s with jemalloc or the system allocator;
- the night of a 100,000-user world after 91 days kept (797,380 plays, a fresh process,
  pools alternating): peak RSS 390-408 MB with mimalloc, 342-362 MB with jemalloc and
  502-518 MB with the system allocator; wall 2.6-3.3 s with mimalloc, 2.6-3.0 s with
  jemalloc. A day almost all quarantined: 571, 514-515 and 732-766 MB.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from ml_tasks.settings import get_settings

log = logging.getLogger(__name__)


def _numpy_hugepage_switch():
    """numpy's runtime switch for ``madvise(MADV_HUGEPAGE)`` (the import-time one is the
    ``NUMPY_MADVISE_HUGEPAGE`` variable), or None where this numpy has none. A private
    function of numpy 2 (pinned: 2.4), hence looked up, not imported by name."""
    from numpy._core import multiarray

    return getattr(multiarray, "_set_madvise_hugepage", None)


def _jemalloc_pool() -> pa.MemoryPool | None:
    """pyarrow's jemalloc pool, or None where this pyarrow was built without it."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return None


def without_huge_pages() -> dict[str, object]:
    """From now on in this process, allocate new Arrow buffers from pyarrow's jemalloc pool
    (where pyarrow has it) and numpy arrays without asking for huge pages, unless the
    operator set ``ARROW_DEFAULT_MEMORY_POOL`` or ``NUMPY_MADVISE_HUGEPAGE``. Buffers
    already allocated stay with the pool they came from. Returns what is in force:
    ``{"arrow_pool": backend name, "numpy_huge_pages": bool or None}``."""
    settings = get_settings()
    if settings.arrow_memory_pool is None:
        jemalloc = _jemalloc_pool()
        if jemalloc is not None and pa.default_memory_pool().backend_name != "jemalloc":
            pa.set_memory_pool(jemalloc)
    numpy_huge: bool | None = None
    switch = _numpy_hugepage_switch()
    if switch is not None:
        previous = bool(switch(False))  # the switch returns the setting it replaces
        numpy_huge = False
        if settings.numpy_madvise_hugepage is not None:  # the operator's choice stands
            switch(previous)
            numpy_huge = previous
    in_force = {"arrow_pool": pa.default_memory_pool().backend_name, "numpy_huge_pages": numpy_huge}
    log.debug("allocation: %s", in_force)
    return in_force
