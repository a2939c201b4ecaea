"""Property tests: for random models, schedules, batch sizes and run lengths, the compiled graphs keep their promises.

Hypothesis draws the cases. The profile comes from ``DAGTRAIN_HYPOTHESIS``: ``ci`` (the
default: 25 examples per property, derandomized so CI is repeatable) or ``local`` (500
examples, random, with Hypothesis's example database), e.g.
``DAGTRAIN_HYPOTHESIS=local pytest tests/test_properties.py``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dagtrain as dt
from dagtrain.data.order import batch_indices, epoch_order
from dagtrain.graph.validate import validate
from dagtrain.reference import train_reference, train_reference_layerlocal
from tests.conftest import make_blobs, weights_equal

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("local", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("DAGTRAIN_HYPOTHESIS", "ci"))

N_SAMPLES, N_FEATURES, N_CLASSES, CHUNK = 90, 5, 3, 16


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dt.Dataset:
    """90 samples (not a multiple of the chunk or of most batch sizes), 5 features, 3 classes."""
    x, y = make_blobs(N_SAMPLES, N_FEATURES, N_CLASSES, seed=7)
    return dt.to_zarr(x, y, Path(tmp_path_factory.mktemp("props")) / "small.zarr", CHUNK)


@dataclass(frozen=True)
class Case:
    """One drawn training run."""

    sizes: tuple[int, ...]
    activation: str
    batch_size: int
    epochs: int
    momentum: float
    schedule: dt.Schedule
    max_steps: int | None = None

    def model(self) -> dt.MLP:
        return dt.MLP(list(self.sizes), activation=self.activation, seed=3)

    def plan(self, data: dt.Dataset) -> dt.Plan:
        return dt.compile(self.model(), data, self.schedule, batch_size=self.batch_size, epochs=self.epochs, lr=0.05,
                          momentum=self.momentum, max_steps=self.max_steps)

    @property
    def steps(self) -> int:
        """Training steps in the run."""
        per_epoch = -(-N_SAMPLES // self.batch_size)
        return min(self.epochs * per_epoch, self.max_steps or self.epochs * per_epoch)


@st.composite
def cases(draw: st.DrawFn, schedules: tuple[str, ...] = ("sync", "layerlocal")) -> Case:
    depth = draw(st.integers(1, 8))
    hidden = draw(st.lists(st.integers(1, 9), min_size=depth - 1, max_size=depth - 1))
    batch_size = draw(st.integers(1, 40))
    epochs = draw(st.integers(1, 2))
    steps = epochs * -(-N_SAMPLES // batch_size)
    max_steps = draw(st.none() | st.integers(1, steps))  # a run may stop mid-epoch
    kind = draw(st.sampled_from(schedules))
    schedule: dt.Schedule = dt.Sync()
    if kind == "layerlocal":
        longest = min(max_steps or steps, -(-N_SAMPLES // batch_size), 12)
        schedule = dt.LayerLocal(draw(st.integers(1, longest)), draw(st.sampled_from(["shared", "sharded"])))
    return Case((N_FEATURES, *hidden, N_CLASSES), draw(st.sampled_from(["relu", "tanh", "sigmoid"])), batch_size,
                epochs, draw(st.sampled_from([0.0, 0.9])), schedule, max_steps)


@given(case=cases())
def test_every_window_graph_is_acyclic_and_valid(case: Case, small: dt.Dataset) -> None:
    plan = case.plan(small)
    for w in range(len(plan.windows)):
        g = plan.graph(w)
        assert nx.is_directed_acyclic_graph(g)
        validate(g)
    plan.validate()


@given(case=cases(("layerlocal",)))
def test_chains_share_no_path_between_syncs(case: Case, small: dt.Dataset) -> None:
    """Remove the sync nodes: no op of one chain then reaches an op of another."""
    g = case.plan(small).graph(0)
    cut = g.subgraph(n for n, d in g.nodes(data=True) if d["kind"] != "sync")
    chain_of = {n: d["chain"] for n, d in g.nodes(data=True) if d.get("chain") is not None}
    assert set(chain_of.values()) <= set(range(1, case.model().n_layers + 1))
    for c in set(chain_of.values()):
        reached, stack = set(), [n for n, ch in chain_of.items() if ch == c]
        while stack:  # everything downstream of chain c, in one sweep
            for v in cut.succ[stack.pop()]:
                if v not in reached:
                    reached.add(v)
                    stack.append(v)
        assert {chain_of[n] for n in reached if n in chain_of} <= {c}


@given(case=cases())
def test_each_sample_is_read_the_expected_number_of_times(case: Case, small: dt.Dataset) -> None:
    """Sync and sharded chains read each sample once per epoch; shared chains read it once per chain.

    The expectation comes from the epoch orders alone: the first ``steps * batch_size`` samples the
    run visits, epoch after epoch, each read once (or once per chain).
    """
    plan = case.plan(small)
    reads: Counter[int] = Counter()
    for i, w in enumerate(plan.windows):
        for _, d in plan.graph(i).nodes(data=True):
            if d["kind"] == "load":
                reads.update(batch_indices(N_SAMPLES, CHUNK, case.model().seed, w.epoch, d["batch"], case.batch_size).tolist())
    times = case.model().n_layers if isinstance(case.schedule, dt.LayerLocal) and case.schedule.data == "shared" else 1
    expected: Counter[int] = Counter()
    left = case.steps * case.batch_size  # samples the run visits (the last batch of an epoch may be short)
    for epoch in range(case.epochs):
        visited = epoch_order(N_SAMPLES, CHUNK, case.model().seed, epoch)[:left]
        expected.update({int(i): times for i in visited})
        left -= -(-len(visited) // case.batch_size) * case.batch_size
    assert reads == expected


@given(case=cases())
def test_lowered_run_equals_the_reference_loop(case: Case, small: dt.Dataset) -> None:
    plan = case.plan(small)
    kw = {"batch_size": case.batch_size, "epochs": case.epochs, "lr": 0.05, "momentum": case.momentum,
          "max_steps": case.max_steps}
    if isinstance(case.schedule, dt.LayerLocal):
        expected = train_reference_layerlocal(case.model(), small, case.schedule, **kw)  # type: ignore[arg-type]
    else:
        expected = train_reference(case.model(), small, **kw)  # type: ignore[arg-type]
    result = plan.run("sync")
    assert weights_equal(result.weights, expected)
    assert all(np.isfinite(p.W).all() for p in result.weights)


@given(case=cases(("sync",)))
def test_k_equal_one_shared_is_sync(case: Case, small: dt.Dataset) -> None:
    sync = case.plan(small).run("sync")
    layerlocal = dt.compile(case.model(), small, dt.LayerLocal(1, "shared"), batch_size=case.batch_size,
                            epochs=case.epochs, lr=0.05, momentum=case.momentum, max_steps=case.max_steps).run("sync")
    assert weights_equal(layerlocal.weights, sync.weights)
