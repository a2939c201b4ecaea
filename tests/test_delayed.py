"""DelayedGradient: pipeline stages whose forward reads weights d steps old; exact at d = 0, equal to its loop."""

from __future__ import annotations

import networkx as nx
import pytest

import dagtrain as dt
from dagtrain.graph.ir import producer_of
from dagtrain.graph.window import Window
from dagtrain.reference import train_reference, train_reference_delayed
from tests.conftest import weights_equal

MODEL = dt.MLP([12, 16, 8, 3], seed=3)  # three layers: stages of (1, 2) and (3) when stages=2
KW = {"batch_size": 16, "epochs": 2, "lr": 0.1, "momentum": 0.9}


def stage_graph(schedule: dt.DelayedGradient, n_steps: int = 8, step0: int = 0) -> nx.DiGraph:
    return schedule.build(MODEL, Window(0, 0, step0, step0, n_steps, evaluate=False), batch_size=4)


@pytest.mark.parametrize("schedule", [dt.DelayedGradient(2, 1), dt.DelayedGradient(1, 4),
                                      dt.DelayedGradient(3, 1, stashing=False)], ids=str)
def test_no_delay_is_exactly_sync(blobs: dt.Dataset, schedule: dt.DelayedGradient) -> None:
    """One microbatch in flight (or one stage) means every delay is 0: Sync, bit for bit."""
    result = dt.compile(MODEL, blobs, schedule, **KW).run("sync")
    assert weights_equal(result.weights, train_reference(MODEL, blobs, **KW))


def test_stages_and_delays_follow_the_pipeline() -> None:
    s = dt.DelayedGradient(stages=3, microbatches=3)
    assert [s.stage_of(layer, 3) for layer in (1, 2, 3)] == [1, 2, 3]
    assert [s.delay(stage) for stage in (1, 2, 3)] == [2, 1, 0]  # the input side is the stalest
    assert [dt.DelayedGradient(2, 2).stage_of(layer, 5) for layer in range(1, 6)] == [1, 1, 1, 2, 2]
    assert [dt.DelayedGradient(3, 2).delay(stage) for stage in (1, 2, 3)] == [1, 1, 0]  # capped by microbatches - 1


def test_forward_reads_old_weights_and_backward_reads_what_forward_read() -> None:
    stashed = stage_graph(dt.DelayedGradient(3, 3))
    assert producer_of(stashed, "fwd:L1:s5", "params") == ("upd:L1:s2", "params")  # d = 2: version 3 for step 5
    assert producer_of(stashed, "bwd:L1:s5", "params") == ("upd:L1:s2", "params")  # stashed: the same version
    assert producer_of(stashed, "fwd:L2:s5", "params") == ("upd:L2:s3", "params")  # d = 1
    assert producer_of(stashed, "fwd:L3:s5", "params") == ("upd:L3:s4", "params")  # the top stage is never stale
    assert producer_of(stashed, "fwd:L1:s1", "params") == ("in:s0", "params/L1")  # flushed at the window start
    assert producer_of(stashed, "upd:L1:s5", "params") == ("upd:L1:s4", "params")  # updates apply to the latest
    unstashed = stage_graph(dt.DelayedGradient(3, 3, stashing=False))
    assert producer_of(unstashed, "bwd:L1:s5", "params") == ("upd:L1:s4", "params")
    assert stashed.graph["passes"] == ["build_exact", "assign_stages", "delay_weight_reads"]


def test_the_next_forward_no_longer_waits_for_this_backward(blobs: dt.Dataset) -> None:
    plan = dt.compile(MODEL, blobs, dt.DelayedGradient(2, 2), **KW)
    g = plan.graph(0)
    assert not nx.has_path(g, "bwd:L1:s3", "fwd:L1:s4") and nx.has_path(g, "bwd:L1:s2", "fwd:L1:s4")
    names = {t.name for t in plan.program(plan.windows[0]).tasks}
    assert {"chain1-f0", "chain1-b0", "chain2-f0", "chain2-b0"} <= names
    exact = dt.compile(MODEL, blobs, **KW).analyze(workers=2)
    assert plan.analyze(workers=2).span_flops < exact.span_flops  # a shorter critical path


@pytest.mark.parametrize("schedule", [dt.DelayedGradient(2, 2), dt.DelayedGradient(3, 3),
                                      dt.DelayedGradient(3, 3, stashing=False)], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_graph_equals_the_plain_delayed_loop(blobs: dt.Dataset, schedule: dt.DelayedGradient, momentum: float) -> None:
    kw = {**KW, "momentum": momentum}
    plan = dt.compile(MODEL, blobs, schedule, window_steps=20, **kw)
    result = plan.run("threads")
    expected = train_reference_delayed(MODEL, blobs, schedule, [w.step0 for w in plan.windows], **kw)
    assert weights_equal(result.weights, expected)
    assert not weights_equal(result.weights, train_reference(MODEL, blobs, **kw))
    if momentum == 0:  # stale gradients with heavy momentum at this lr diverge; plain SGD learns
        assert result.test_accuracy is not None and result.test_accuracy > 0.9


@pytest.mark.parametrize("bad, match", [
    ({"stages": 0}, "stages = 0 must be a positive integer"),
    ({"microbatches": -1}, "microbatches = -1 must be a positive integer"),
    ({"stashing": "yes"}, "stashing = 'yes' must be True or False"),
])
def test_bad_settings_are_refused(bad: dict[str, object], match: str) -> None:
    with pytest.raises(dt.ConfigError, match=match):
        dt.DelayedGradient(**bad)  # type: ignore[arg-type]


def test_more_stages_than_layers_or_fused_steps_are_refused(blobs: dt.Dataset) -> None:
    with pytest.raises(dt.ConfigError, match="stages = 4 is more than the model's 3 layers"):
        dt.compile(MODEL, blobs, dt.DelayedGradient(4, 2), **KW)
    with pytest.raises(dt.ConfigError, match="segment_steps = 5 is not possible with DelayedGradient"):
        dt.compile(MODEL, blobs, dt.DelayedGradient(2, 2), segment_steps=5, **KW)


def test_picture_and_schedule_table_show_the_stages(blobs: dt.Dataset, tmp_path: object) -> None:
    from pathlib import Path

    plan = dt.compile(MODEL, blobs, dt.DelayedGradient(2, 2), **KW)
    plan.validate()
    svg = plan.draw(Path(str(tmp_path)) / "pipeline.svg").read_text()
    assert "chain 1 (stage 1)" in svg and "chain 2 (stage 2)" in svg and "the first 3 steps" in svg
    table = plan.schedule_table(2)
    assert "chain1-f0" in table and "chain2-b0" in table
