"""The same model in PyTorch on the CPU, beside the numpy loop and dagtrain Sync.

    python -m benchmarks.peer [--rounds 5] [--epochs 1] [--data warm|cold]

Needs the optional extra ``bench`` (``pip install -e .[bench]``: torch 2.13.0, CPU build).

Every contender trains 784-256-256-10 relu on real MNIST (batch 128, lr 0.05, momentum
0.9) from the same initial weights (dagtrain's He-normal draw, copied into torch), over
the same batches in the same order (dagtrain's epoch order), and evaluates the test set
once per epoch. PyTorch uses ``x @ W + b``, mean softmax cross-entropy and
``torch.optim.SGD``, whose momentum rule is the one dagtrain uses, so both train the
same model; the table shows their test accuracy side by side.

"Threads" is the number of cores a contender may use: torch at 2 threads uses 2
intra-op threads; dagtrain at 2 either runs 2 workers (the threaded scheduler) or lets
BLAS use 2 threads (``plan.run(..., blas_threads=2)``; not bitwise equal to 1 thread).
Each ratio is taken within one round against that round's PyTorch run at the same
thread count. Both peers have the training set in memory before the clock starts; so has
dagtrain with ``--data warm`` (the default), while ``--data cold`` makes it read its zarr
chunks inside every timed run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

import dagtrain as dt
from benchmarks.common import add_data_option, before_run, machine_line
from dagtrain.data.order import epoch_order, steps_per_epoch
from dagtrain.execute.ops import evaluate
from dagtrain.model import kernels
from dagtrain.reference import train_reference

SIZES = [784, 256, 256, 10]
SETTINGS = {"batch_size": 128, "lr": 0.05, "momentum": 0.9}


def torch_trainer(model: dt.MLP, data: dt.Dataset, arrays: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray], epochs: int) -> Callable[[int], tuple[float, float]]:
    """A function ``run(threads) -> (seconds, test accuracy)`` that trains the model in PyTorch."""
    import torch

    x_all, y_all = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1].astype(np.int64))
    x_test, y_test = torch.from_numpy(test[0]), torch.from_numpy(test[1].astype(np.int64))
    n, batch = len(y_all), int(SETTINGS["batch_size"])
    orders = [torch.from_numpy(epoch_order(n, data.chunk_size, model.seed, e).astype(np.int64)) for e in range(epochs)]

    def run(threads: int) -> tuple[float, float]:
        torch.set_num_threads(threads)
        params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for p in model.init_params() for a in (p.W, p.b)]
        opt = torch.optim.SGD(params, lr=SETTINGS["lr"], momentum=SETTINGS["momentum"])

        def logits(x: torch.Tensor) -> torch.Tensor:
            for i in range(0, len(params), 2):
                x = x @ params[i] + params[i + 1]
                if i + 2 < len(params):
                    x = torch.relu(x)
            return x

        t = time.perf_counter()
        for order in orders:
            for b in range(steps_per_epoch(n, batch)):
                idx = order[b * batch : (b + 1) * batch]
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(logits(x_all[idx]), y_all[idx]).backward()
                opt.step()
            with torch.no_grad():
                accuracy = float((logits(x_test).argmax(1) == y_test).float().mean())
        return time.perf_counter() - t, accuracy

    return run


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    add_data_option(parser)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("benchmarks.peer needs PyTorch: pip install -e .[bench]") from None

    data = dt.datasets.mnist()
    arrays, test = data.read_split("train"), data.read_split("test")
    model = dt.MLP(SIZES, seed=0)
    plan = dt.compile(model, data, epochs=args.epochs, **SETTINGS)  # type: ignore[arg-type]
    samples = args.epochs * data.size("train")
    torch_run = torch_trainer(model, data, arrays, test, args.epochs)

    def numpy_loop() -> tuple[float, float]:
        t = time.perf_counter()
        with kernels.using("numpy"):  # the plain numpy loop, without dagtrain's kernels
            params = train_reference(model, data, epochs=args.epochs, arrays=arrays, **SETTINGS)  # type: ignore[arg-type]
        with threadpool_limits(1, "blas"), kernels.using("numpy"):
            for _ in range(args.epochs):
                accuracy = evaluate(model, params, data, "test")["accuracy"]
        return time.perf_counter() - t, accuracy

    def dagtrain_on(scheduler: str, blas_threads: int = 1) -> tuple[float, float]:
        before_run(args.data)
        result = plan.run(scheduler, blas_threads=blas_threads)
        return result.wall_time, float(result.test_accuracy or 0.0)

    contenders: dict[str, tuple[int, Callable[[], tuple[float, float]]]] = {
        "PyTorch": (1, lambda: torch_run(1)),
        "numpy loop": (1, numpy_loop),
        "dagtrain Sync, synchronous": (1, lambda: dagtrain_on("sync")),
        "PyTorch, 2 threads": (2, lambda: torch_run(2)),
        "dagtrain Sync, threaded (2 workers, BLAS 1 thread each)": (2, lambda: dagtrain_on("threads")),
        "dagtrain Sync, synchronous, BLAS 2 threads": (2, lambda: dagtrain_on("sync", 2)),
        "dagtrain Sync, threaded (2 workers, BLAS 2 threads each)": (2, lambda: dagtrain_on("threads", 2)),
    }
    for _, f in contenders.values():  # warm-up: imports, page cache, torch's kernels
        f()
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, (_, f) in contenders.items():
            rows[name].append(f())
    peer = {1: rows["PyTorch"], 2: rows["PyTorch, 2 threads"]}
    print(f"# Peer: PyTorch {torch.__version__} on the CPU, {args.rounds} rounds, "
          f"{args.epochs} epoch(s) each, data {args.data}\n")
    print(machine_line() + "\n")
    print("| contender | threads | median samples/s | min | max | test accuracy % | ratio to PyTorch, same threads |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (threads, _) in contenders.items():
        speeds = [samples / seconds for seconds, _ in rows[name]]
        ratios = [base / seconds for (seconds, _), (base, _) in zip(rows[name], peer[threads], strict=True)]
        accuracy = statistics.median(a for _, a in rows[name])
        print(f"| {name} | {threads} | {statistics.median(speeds):,.0f} | {min(speeds):,.0f} | {max(speeds):,.0f} | "
              f"{100 * accuracy:.2f} | {statistics.median(ratios):.3f} |", flush=True)


if __name__ == "__main__":
    main()
