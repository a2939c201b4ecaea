"""Task programs: the value table each fused task runs on is laid out consistently.

Checked by walking each program's instructions over the slots, without running anything:
every slot is filled before it is read, never read after it is cleared, and what a task
exports is in its table at the end. The runs themselves are checked bit for bit against the
numpy loop elsewhere (test_conformance, test_layerlocal).
"""

from __future__ import annotations

import pytest

import dagtrain as dt
from dagtrain.execute.program import TaskProgram, run_task


def _programs(data: dt.Dataset, schedule: dt.Schedule, workers: int = 1) -> list[TaskProgram]:
    model = dt.MLP([data.n_features, 5, 4, data.n_classes], seed=0)
    plan = dt.compile(model, data, schedule, batch_size=8, epochs=1)
    return [t for w in plan.windows[:2] for t in plan.program(w, workers=workers).tasks]


SCHEDULES = [dt.Sync(), dt.LayerLocal(3, "sharded"), dt.LayerLocal(2, "shared"), dt.LocalSGD(2, replicas=2),
             dt.DelayedGradient()]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
@pytest.mark.parametrize("workers", [1, 2])
def test_every_slot_is_filled_before_it_is_read_and_not_read_after_it_is_cleared(
        blobs: dt.Dataset, schedule: dt.Schedule, workers: int) -> None:
    for program in _programs(blobs, schedule, workers):
        assert program.n_slots == len({s for _, s in program.imports} | set(program.export_slots)
                                      | {s for ins in program.instructions for _, s in ins.in_slots + ins.out_slots})
        filled = {slot for _, slot in program.imports}
        cleared: set[int] = set()
        for ins in program.instructions:
            read = {slot for _, slot in ins.in_slots}
            assert read <= filled, f"{program.name}: {ins.key} reads a slot nothing filled"
            assert not read & cleared, f"{program.name}: {ins.key} reads a cleared slot"
            filled |= {slot for _, slot in ins.out_slots}
            cleared |= set(ins.free_slots)
        assert set(program.export_slots) <= filled - cleared, f"{program.name} exports a value it does not hold"


@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_slots_name_the_same_values_as_the_instructions(blobs: dt.Dataset, schedule: dt.Schedule) -> None:
    for program in _programs(blobs, schedule):
        slot_of: dict[tuple[str, str], int] = dict(program.imports)
        for ins in program.instructions:
            assert [port for port, _ in ins.in_slots] == [port for port, _, _ in ins.inputs]
            for (_, src, field), (_, slot) in zip(ins.inputs, ins.in_slots, strict=True):
                assert slot_of.setdefault((src, field), slot) == slot  # one value, one slot
            for field, slot in ins.out_slots:
                assert slot_of.setdefault((ins.key, field), slot) == slot
            assert len(ins.free_slots) == len(ins.frees)
            assert all(slot_of[value] == slot for value, slot in zip(ins.frees, ins.free_slots, strict=True))
        assert [slot_of[value] for value in program.exports] == list(program.export_slots)
        made = {ins.key for ins in program.instructions}
        assert all(src not in made for (src, _), _ in program.imports)  # imports come from other tasks


def test_a_missing_upstream_value_is_a_key_error_naming_it(blobs: dt.Dataset) -> None:
    program = next(p for p in _programs(blobs, dt.Sync()) if p.imports)
    (value, _), *_ = program.imports
    with pytest.raises(KeyError, match=value[0]):
        run_task(program, None, (0, 0, 0))  # type: ignore[arg-type]  # fails before the config is used
