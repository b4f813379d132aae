"""The retraining job's options: its command line, the evidence file, the defaults.

Private to :mod:`models.sensor.retrain`; :func:`options_from_args` turns parsed
arguments and the environment (``EDGEFLEET_DRIFT_EVIDENCE``, set by the
control plane's command action) into :class:`Options`, refusing bad input with
:class:`~models.sensor._retrain_api.NoDataError` (exit status 2).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from models.sensor import recipe
from models.sensor._retrain_api import NoDataError
from models.sensor._retrain_check import Bump
from models.sensor._retrain_data import Evidence, parse_time
from models.sensor.train import TrainConfig

EVIDENCE_ENV = "EDGEFLEET_DRIFT_EVIDENCE"
DEFAULT_OUT = Path("build/retrain")
#: ``--quick``: fewer epochs, for demos and CI (about a second of training on
#: two cores). The original rows stay: fewer would cost accuracy on the
#: original holdout, which the new model may lose only one point of.
QUICK_EPOCHS = 20


@dataclass(frozen=True)
class Options:
    model: str
    out: Path = DEFAULT_OUT
    since: datetime | None = None
    evidence: Evidence | None = None
    approval: bool = True
    canary_percent: float = 10.0
    release_key: Path | None = None
    selector: str | None = None
    dry_run: bool = False
    samples: int = recipe.DEFAULT_SAMPLES
    epochs: int = TrainConfig().epochs
    seed: int = recipe.DEFAULT_SEED
    recent_share: float = 0.2
    pseudo_threshold: float | None = None
    bump: Bump = "minor"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.sensor.retrain",
        description="Retrain the sensor model on captured fleet data and roll it out as a canary.",
    )
    p.add_argument("--model", help="model name (default: the evidence's model)")
    p.add_argument("--server", help="control plane URL (default: as fleetctl)")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the token")
    p.add_argument("--since", metavar="TIME", help="use captures after this ISO 8601 time")
    p.add_argument(
        "--evidence", type=Path, metavar="FILE", help=f"drift evidence JSON (else ${EVIDENCE_ENV})"
    )
    p.add_argument(
        "--approval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for 'fleetctl rollout promote' after the canary (default: yes)",
    )
    p.add_argument("--canary-percent", type=float, default=10.0, metavar="P")
    p.add_argument("--selector", help="rollout target (default: the evidence's cohort, else all)")
    p.add_argument(
        "--release-key", type=Path, metavar="KEYFILE", help="sign the release here (offline key)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="work directory")
    p.add_argument("--dry-run", action="store_true", help="stop after validation; push nothing")
    p.add_argument("--quick", action="store_true", help="20 epochs instead of 30 (demos, CI)")
    p.add_argument("--samples", type=int, default=None, help="original training rows")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=recipe.DEFAULT_SEED)
    p.add_argument("--recent-share", type=float, default=0.2, metavar="S")
    p.add_argument(
        "--pseudo-label",
        type=float,
        nargs="?",
        const=0.9,
        default=None,
        metavar="P",
        help="also train on unlabelled captures the current model predicts with max "
        "probability >= P (default 0.9; off unless given)",
    )
    p.add_argument("--bump", choices=("minor", "patch"), default="minor")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    """Options from parsed arguments and the environment; raises NoDataError on bad input."""
    evidence_file = args.evidence or (
        Path(os.environ[EVIDENCE_ENV]) if os.environ.get(EVIDENCE_ENV) else None
    )
    evidence = None
    if evidence_file is not None:
        try:
            evidence = Evidence.from_bytes(evidence_file.read_bytes())
        except OSError as exc:
            raise NoDataError(f"cannot read the evidence {evidence_file}: {exc}") from exc
    model = args.model or (evidence.model if evidence else None)
    if not model:
        raise NoDataError("name the model: --model NAME (or pass drift evidence)")
    if evidence and evidence.model and evidence.model != model:
        raise NoDataError(f"the evidence is about {evidence.model}, not {model}")
    try:
        since = None if args.since is None else parse_time(args.since)
    except ValueError as exc:
        raise NoDataError(f"--since {args.since!r} is not an ISO 8601 time") from exc
    options = Options(
        model=model,
        out=args.out,
        since=since,
        evidence=evidence,
        approval=args.approval,
        canary_percent=args.canary_percent,
        release_key=args.release_key,
        selector=args.selector,
        dry_run=args.dry_run,
        seed=args.seed,
        recent_share=args.recent_share,
        pseudo_threshold=args.pseudo_label,
        bump=args.bump,
    )
    if args.quick:
        options = replace(options, epochs=QUICK_EPOCHS)
    options = replace(
        options,
        samples=args.samples or options.samples,
        epochs=args.epochs or options.epochs,
    )
    if not 0 < options.canary_percent < 100:
        raise NoDataError("--canary-percent must be between 0 and 100")
    if not 0 < options.recent_share < 1:
        raise NoDataError("--recent-share must be between 0 and 1")
    return options


__all__ = ["DEFAULT_OUT", "EVIDENCE_ENV", "QUICK_EPOCHS", "Options", "options_from_args", "parser"]
