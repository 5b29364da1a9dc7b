"""Ingestion's buffers come without transparent huge pages, unless the operator chose."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml_tasks import allocation


@pytest.fixture
def restored_allocators():
    """Put pyarrow's default pool and numpy's huge-page switch back after the test."""
    pool = pa.default_memory_pool()
    switch = allocation._numpy_hugepage_switch()
    assert switch is not None, "this numpy has no runtime huge-page switch"
    huge = switch(True)
    switch(huge)
    yield switch
    pa.set_memory_pool(pool)
    switch(huge)


def _library_defaults(switch) -> None:
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    switch(True)


def test_without_huge_pages_switches_arrow_and_numpy(monkeypatch, restored_allocators):
    switch = restored_allocators
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    _library_defaults(switch)
    jemalloc = allocation._jemalloc_pool()
    assert jemalloc is not None, "the pinned pyarrow wheel is built with jemalloc"

    assert allocation.without_huge_pages() == {"arrow_pool": "jemalloc", "numpy_huge_pages": False}
    assert pa.default_memory_pool().backend_name == "jemalloc"
    assert switch(False) is False  # numpy's switch was off
    # New Arrow buffers are jemalloc's (a computed array: pa.array of a numpy array would
    # borrow numpy's memory)
    held = jemalloc.bytes_allocated()
    values = pc.add(pa.array(np.arange(1_000_000, dtype=np.int64)), 1)
    assert jemalloc.bytes_allocated() >= held + values.nbytes


def test_without_jemalloc_the_default_pool_stays(monkeypatch, restored_allocators):
    """A pyarrow built without jemalloc keeps its default pool: the system allocator measured
    worse than mimalloc (Arrow's freed buffers share the heap with Python's objects)."""
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.setattr(allocation, "_jemalloc_pool", lambda: None)
    _library_defaults(restored_allocators)

    assert allocation.without_huge_pages()["arrow_pool"] == "mimalloc"


def test_without_huge_pages_leaves_an_operators_choice(monkeypatch, restored_allocators):
    switch = restored_allocators
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    _library_defaults(switch)

    assert allocation.without_huge_pages() == {
        "arrow_pool": "mimalloc",
        "numpy_huge_pages": True,
    }
    assert switch(True) is True  # still on


def test_ingest_day_allocates_without_huge_pages(monkeypatch, restored_allocators, tmp_path):
    """The switch is made before the day is read: here the landing day is incomplete, so
    ingest stops at its first check, after the switch."""
    from datetime import date

    from ml_tasks.ingest import LandingIncomplete, ingest_day

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    _library_defaults(restored_allocators)
    with pytest.raises(LandingIncomplete):
        ingest_day(date(2026, 10, 1), landing_root=tmp_path, dsn="postgresql://unused")
    assert pa.default_memory_pool().backend_name == "jemalloc"
