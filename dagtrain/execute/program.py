"""A window's fused tasks as programs: for each task, its fine ops in order, as plain data.

A :class:`TaskProgram` is what one Dask task executes: the instructions (one per fine op,
topologically ordered), which upstream tasks it reads, which values it exports, and when
each value is last used (so intermediates are freed as soon as possible).

Values live in a numbered table while a task runs: compilation gives every value a task
reads, makes or exports a slot, and each instruction lists the slots it reads, fills and
clears. The interpreter then indexes a list where it used to hash ``(op, field)`` tuples
into a dict: on two threads that dict work was the largest share of the time a chain task
holds the GIL (py-spy ``--gil``: the interpreter 23%, more than any op).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import numpy as np

from dagtrain.execute.divergence import QUIET
from dagtrain.execute.ops import OPS, OpContext, RunConfig

ValueKey = tuple[str, str]  # (op key, field)


@dataclass(frozen=True)
class Instruction:
    """Run op ``key`` of kind ``kind``; read each port from a (producer, field); then drop ``frees``.

    ``in_slots``, ``out_slots`` and ``free_slots`` say the same in slots of the task's value
    table: (port, slot) to read, (field, slot) to fill from the op's outputs, slots to clear.
    """

    key: str
    kind: str
    attrs: dict[str, Any]
    inputs: tuple[tuple[str, str, str], ...]
    frees: tuple[ValueKey, ...] = ()
    in_slots: tuple[tuple[str, int], ...] = ()
    out_slots: tuple[tuple[str, int], ...] = ()
    free_slots: tuple[int, ...] = ()


@dataclass(frozen=True)
class TaskProgram:
    """Everything one fused task does.

    ``imports``: the values it takes from upstream tasks and the slots they go to;
    ``export_slots``: where each of ``exports`` is; ``n_slots``: the size of its value table.
    """

    name: str
    instructions: tuple[Instruction, ...]
    upstream: tuple[str, ...]
    exports: tuple[ValueKey, ...]
    imports: tuple[tuple[ValueKey, int], ...] = ()
    export_slots: tuple[int, ...] = ()
    n_slots: int = 0


@dataclass(frozen=True)
class WindowProgram:
    """The tasks of one window shape, in a topological order, plus the keys the runner needs."""

    tasks: tuple[TaskProgram, ...]
    input_key: str
    output_key: str
    eval_key: str | None


def compile_program(g: nx.DiGraph, tasks: nx.DiGraph, step0: int) -> WindowProgram:
    """Turn a fused graph (``g`` nodes carry ``task``) into programs; steps become relative to ``step0``."""
    order = {key: i for i, key in enumerate(nx.topological_sort(g))}
    feeds: dict[str, list[tuple[str, str, str]]] = {key: [] for key in g}
    for src, dst, d in g.edges(data=True):
        feeds[dst].extend((port, src, field) for field, port in d["bind"])
    programs = []
    input_key = output_key = ""
    eval_key = None
    for name in nx.lexicographical_topological_sort(tasks):
        ops = sorted(tasks.nodes[name]["ops"], key=order.__getitem__)
        if name == "in":
            input_key = ops[0]
            continue
        members = set(ops)
        last_use: dict[ValueKey, int] = {}
        instructions = []
        for i, key in enumerate(ops):
            for _, src, field in feeds[key]:
                last_use[(src, field)] = i
        exported = {(u, f) for u, v, d in g.out_edges(members, data=True) if v not in members for f, _ in d["bind"]}
        exports = sorted(exported)
        frees_at: dict[int, list[ValueKey]] = {}
        for value, i in last_use.items():
            if value not in exported:
                frees_at.setdefault(i, []).append(value)
        for i, key in enumerate(ops):
            d = g.nodes[key]
            attrs = {"layer": d["layer"], "rel_step": None if d["step"] is None else d["step"] - step0,
                     "input_grad": d.get("input_grad", True),
                     "weight_grad": d.get("weight_grad", True), "part": d.get("part"), "parts": d.get("parts"),
                     "lr_scale": d.get("lr_scale", 1.0), "predict_steps": d.get("predict_steps", 0)}
            if d["kind"] == "sync":  # which chain and step sent each port, to name a divergence
                attrs["sources"] = tuple((port, g.nodes[src].get("chain"), None if g.nodes[src].get("step") is None
                                          else g.nodes[src]["step"] - step0) for port, src, _ in sorted(feeds[key]))
            instructions.append(Instruction(key, d["kind"], attrs, tuple(sorted(feeds[key])), tuple(frees_at.get(i, ()))))
        for key in ops:  # the runner reads the output and eval ops' results
            if g.nodes[key]["kind"] == "output":
                output_key = key
                exports += [(key, port) for port, _, _ in sorted(feeds[key])]
            elif g.nodes[key]["kind"] == "eval" and g.nodes[key].get("part") is None:
                eval_key = key
                exports.append((key, "metrics"))
        programs.append(_with_slots(TaskProgram(name, tuple(instructions), tuple(sorted(tasks.predecessors(name))),
                                                tuple(exports))))
    return WindowProgram(tuple(programs), input_key, output_key, eval_key)


def _with_slots(program: TaskProgram) -> TaskProgram:
    """``program`` with its value table laid out: a slot per value it reads, makes or exports."""
    slots: dict[ValueKey, int] = {}
    made = {ins.key for ins in program.instructions}
    imports = []
    for ins in program.instructions:
        for _, src, field in ins.inputs:
            if (src, field) not in slots:
                slots[(src, field)] = len(slots)
                if src not in made:
                    imports.append(((src, field), slots[(src, field)]))
    for value in program.exports:
        slots.setdefault(value, len(slots))
    fields: dict[str, list[str]] = {}
    for src, field in slots:
        fields.setdefault(src, []).append(field)
    instructions = tuple(
        replace(ins, in_slots=tuple((port, slots[(src, field)]) for port, src, field in ins.inputs),
                out_slots=tuple((field, slots[(ins.key, field)]) for field in fields.get(ins.key, ())),
                free_slots=tuple(slots[value] for value in ins.frees))
        for ins in program.instructions)
    return replace(program, instructions=instructions, imports=tuple(imports),
                   export_slots=tuple(slots[value] for value in program.exports), n_slots=len(slots))


def run_task(program: TaskProgram, config: RunConfig, position: tuple[int, int, int],
             *upstream: dict[ValueKey, Any]) -> dict[ValueKey, Any]:
    """Execute one fused task: its fine ops in order. ``position`` is (epoch, batch0, step0) of the window."""
    given: dict[ValueKey, Any] = {}
    for values in upstream:
        given.update(values)
    env: list[Any] = [None] * program.n_slots
    for value, slot in program.imports:
        env[slot] = given[value]
    del given  # each value now lives in its slot until the instruction that uses it last clears it
    epoch, batch0, step0 = position
    ctx = OpContext(config, epoch=epoch, batch0=batch0, step0=step0)
    with np.errstate(**QUIET):  # type: ignore[arg-type]  # NaN and inf are caught by the divergence checks
        for ins in program.instructions:
            outputs = OPS[ins.kind](ctx, ins.attrs, {port: env[slot] for port, slot in ins.in_slots})
            for field, slot in ins.out_slots:
                env[slot] = outputs[field]
            for slot in ins.free_slots:
                env[slot] = None
    return {value: env[slot] for value, slot in zip(program.exports, program.export_slots, strict=True)}
