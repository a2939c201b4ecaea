"""A window's fused tasks as programs: for each task, its fine ops in order, as plain data.

A :class:`TaskProgram` is what one Dask task executes: the instructions (one per fine op,
topologically ordered), which upstream tasks it reads, which values it exports, and when
each value is last used (so intermediates are freed as soon as possible).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from dagtrain.execute.divergence import QUIET
from dagtrain.execute.ops import OPS, OpContext, RunConfig

ValueKey = tuple[str, str]  # (op key, field)


@dataclass(frozen=True)
class Instruction:
    """Run op ``key`` of kind ``kind``; read each port from a (producer, field); then drop ``frees``."""

    key: str
    kind: str
    attrs: dict[str, Any]
    inputs: tuple[tuple[str, str, str], ...]
    frees: tuple[ValueKey, ...] = ()


@dataclass(frozen=True)
class TaskProgram:
    """Everything one fused task does."""

    name: str
    instructions: tuple[Instruction, ...]
    upstream: tuple[str, ...]
    exports: tuple[ValueKey, ...]


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
        programs.append(TaskProgram(name, tuple(instructions), tuple(sorted(tasks.predecessors(name))), tuple(exports)))
    return WindowProgram(tuple(programs), input_key, output_key, eval_key)


def run_task(program: TaskProgram, config: RunConfig, position: tuple[int, int, int],
             *upstream: dict[ValueKey, Any]) -> dict[ValueKey, Any]:
    """Execute one fused task: its fine ops in order. ``position`` is (epoch, batch0, step0) of the window."""
    env: dict[ValueKey, Any] = {}
    for values in upstream:
        env.update(values)
    epoch, batch0, step0 = position
    ctx = OpContext(config, epoch=epoch, batch0=batch0, step0=step0)
    with np.errstate(**QUIET):  # type: ignore[arg-type]  # NaN and inf are caught by the divergence checks
        for ins in program.instructions:
            inputs = {port: env[(src, field)] for port, src, field in ins.inputs}
            for field, value in OPS[ins.kind](ctx, ins.attrs, inputs).items():
                env[(ins.key, field)] = value
            for value_key in ins.frees:
                env.pop(value_key, None)
    return {k: env[k] for k in program.exports}
