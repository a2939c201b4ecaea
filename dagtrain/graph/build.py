"""Build the exact (minibatch SGD) graph of one window: every op of every step, every dependency.

This is the graph every schedule starts from. For each step s and each layer l:

    load:s -> fwd:L1:s -> ... -> fwd:Ln:s -> loss:s -> bwd:Ln:s -> ... -> bwd:L1:s
    bwd:Ll:s -> upd:Ll:s -> (weight version s+1 of layer l) -> fwd:Ll:s+1, bwd:Ll:s+1, upd:Ll:s+1

The only reason step s+1 waits for step s is that it reads the weights step s wrote:
exactly the dependency a schedule may cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx

from dagtrain.graph.ir import add_data, add_op
from dagtrain.graph.window import Window
from dagtrain.model.mlp import MLP

PASS = "build_exact"


def build_exact(model: MLP, window: Window, batch_size: int, eval_parts: int | Sequence[int] = 1) -> nx.DiGraph:
    """The fine graph of ``window`` under exact minibatch SGD (the Sync schedule).

    A window that ends an epoch evaluates the test set in independent parts (each a range
    of test chunks, so they can run at once), combined by one eval node. ``eval_parts`` is
    how many parts, or the number of test samples each part scores: then a part's cost is
    the forward pass and loss over its samples.
    """
    g = nx.DiGraph(window=window, batch_size=batch_size)
    L = model.n_layers
    inp = add_op(g, "input", step=window.step0)
    # Where the current version of each layer's params and optimizer state comes from.
    source = {layer: (inp, f"params/L{layer}", f"velocity/L{layer}") for layer in range(1, L + 1)}
    losses = []
    for step in range(window.step0, window.stop):
        load = add_op(g, "load", step=step, epoch=None, batch=window.batch0 + step - window.step0)
        x = (load, "x")
        fwd = {}
        for layer in range(1, L + 1):
            fwd[layer] = add_op(g, "forward", layer=layer, step=step, cost=model.layer_flops(layer, batch_size))
            add_data(g, x[0], fwd[layer], (x[1], "x"), made_by=PASS)
            add_data(g, source[layer][0], fwd[layer], (source[layer][1], "params"), made_by=PASS)
            x = (fwd[layer], "out")
        loss = add_op(g, "loss", step=step, cost=loss_flops(model, batch_size))
        add_data(g, fwd[L], loss, ("out", "logits"), made_by=PASS)
        add_data(g, load, loss, ("y", "y"), made_by=PASS)
        losses.append(loss)
        grad = (loss, "grad")
        for layer in range(L, 0, -1):
            # Layer 1 needs no gradient wrt the data: half the backward flops.
            factor = 2.0 if layer > 1 else 1.0
            bwd = add_op(g, "backward", layer=layer, step=step, cost=factor * model.layer_flops(layer, batch_size),
                         input_grad=layer > 1)
            add_data(g, grad[0], bwd, (grad[1], "grad"), made_by=PASS)
            add_data(g, fwd[layer], bwd, ("cache", "cache"), made_by=PASS)
            add_data(g, source[layer][0], bwd, (source[layer][1], "params"), made_by=PASS)
            upd = add_op(g, "update", layer=layer, step=step, cost=4.0 * model.sizes[layer - 1] * model.sizes[layer])
            add_data(g, bwd, upd, ("grads", "grads"), made_by=PASS)
            add_data(g, source[layer][0], upd, (source[layer][1], "params"), (source[layer][2], "velocity"), made_by=PASS)
            source[layer] = (upd, "params", "velocity")
            grad = (bwd, "grad_in")
    out = add_op(g, "output", step=window.stop)
    for layer in range(1, L + 1):
        add_data(g, source[layer][0], out, (source[layer][1], f"params/L{layer}"),
                 (source[layer][2], f"velocity/L{layer}"), made_by=PASS)
    for loss in losses:
        add_data(g, loss, out, ("loss", f"loss/{g.nodes[loss]['step'] - window.step0}"), made_by=PASS)  # by step in the window
    if window.evaluate:
        sizes = (0,) * eval_parts if isinstance(eval_parts, int) else tuple(eval_parts)
        ev = add_op(g, "eval", epoch=window.epoch)
        for part, samples in enumerate(sizes):
            ev_part = add_op(g, "eval", epoch=window.epoch, part=part, parts=len(sizes),
                             cost=forward_flops(model, samples))
            for layer in range(1, L + 1):
                add_data(g, source[layer][0], ev_part, (source[layer][1], f"params/L{layer}"), made_by=PASS)
            add_data(g, ev_part, ev, ("sums", f"part/{part}"), made_by=PASS)
    return g


def loss_flops(model: MLP, samples: int) -> float:
    """Flops of the loss and its gradient over ``samples`` samples: about 5 per logit (softmax)."""
    return 5.0 * samples * model.n_classes


def forward_flops(model: MLP, samples: int) -> float:
    """Flops of the forward pass and the loss over ``samples`` samples (what scoring them costs)."""
    return sum(model.layer_flops(layer, samples) for layer in range(1, model.n_layers + 1)) + loss_flops(model, samples)
