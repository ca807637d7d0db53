"""`arcpoint router-model`: train, evaluate and inspect the predictive router's latency model.

Training runs the closed loop on random simulated fleets (`tools.routers.predictive.training`):
round 1 logs least-request, round robin and peak-EWMA (each with 20% random choices); round 2
adds the round-1 router itself, so the final model has seen the states its own routing creates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE, EXIT_BAD_MODEL = 0, 2, 3

_DESCRIPTION = """\
Train, evaluate or show the per-request latency model of the predictive router.

  arcpoint router-model show [PATH]                    version, training data, held-out report
  arcpoint router-model train --out PATH [--runs N]    closed-loop training on random fleets
  arcpoint router-model train --out PATH --runs 40 --rounds 2   what the shipped model used

Runs are seeded from 900000 (never the demo's scenarios, seeds or the Azure traces); a fifth
of the runs is held out and the model's coverage and calibration on them is stored in the
artifact's report. Training 40 runs takes several minutes on two cores.

Exit status: 0 on success, 2 on bad arguments, 3 when a model file cannot be read.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "router-model",
        help="train or inspect the predictive router's latency model",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="print a model's version, training data and report")
    show.add_argument("path", nargs="?", default=None, help="model base path (default: shipped)")
    tr = actions.add_parser("train", help="train a model on simulated closed-loop outcomes")
    tr.add_argument("--out", required=True, metavar="PATH", help="base path for .npz and .json")
    tr.add_argument("--runs", type=int, default=40, help="simulated runs per round (default 40)")
    tr.add_argument("--rounds", type=int, default=2, choices=(1, 2), help="collection rounds")
    tr.add_argument("--duration", type=float, default=600.0, help="seconds per run (600)")
    tr.add_argument("--seed", type=int, default=0, help="model seed (default 0)")
    parser.set_defaults(func=run, action=None)


def run(args: argparse.Namespace) -> int:
    from tools.routers.predictive import artifact
    from tools.routers.predictive.model import ModelError

    if args.action is None:
        print("give an action: show or train (see --help)", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "show":
        try:
            model = artifact.load(args.path) if args.path else artifact.load_default()
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_MODEL
        _, meta = model.to_arrays()
        keys = ("version_id", "hyperparameters", "trained_on", "report", "parent_version")
        print(json.dumps({k: meta[k] for k in keys}, indent=1))
        return EXIT_OK
    if args.runs < 5:
        print("error: --runs must be at least 5 (runs are split to fit, calibrate and test)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    model = train_model(args.runs, args.rounds, args.duration, args.seed, log=_log)
    npz, js = artifact.save(model, Path(args.out))
    print(f"{model.version_id}: {npz}, {js}")
    return EXIT_OK


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_model(runs: int, rounds: int, duration_s: float, seed: int, log=_log):  # type: ignore[no-untyped-def]
    """The full recipe: collection rounds, fit, held-out report."""
    from tools.routers.predictive import training as T

    data = []
    model = None
    for r in range(1, rounds + 1):
        seeds = [T.TRAIN_SEED_BASE + r * 1000 + k for k in range(runs)]
        log(f"round {r}: {runs} runs")
        data.append(T.collect(seeds, T.behaviour_set(model), duration_s=duration_s, log=log))
        ds = T.Dataset.concat(data)
        train_idx, test_idx = T.split_groups(ds, (0.8, 0.2), seed=seed + 7)
        info = {"seeds": f"{T.TRAIN_SEED_BASE + 1000}.. ({rounds} rounds x {runs} runs)",
                "duration_s": duration_s, "rounds": r}  # fmt: skip
        model = T.fit(ds.take(train_idx), seed=seed, trained_on=info,
                      parent_version=model.version_id if model else None)  # fmt: skip
        model.report = {"holdout": T.evaluate(model, ds.take(test_idx))}
        log(f"round {r}: {model.version_id} {json.dumps(model.report['holdout']['ttft'])}")
    assert model is not None
    return model
