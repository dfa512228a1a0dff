"""Training and evaluation loops for every golden model, with checkpoints that resume exactly.

A run directory holds:
- ``checkpoint.npz``: the bundle after the last finished epoch (written atomically), with the metric
  history in its ``info``;
- ``model.npz``: the final bundle;
- ``metrics.jsonl``: one JSON object per epoch;
- ``learning_curve.png``.

Every random choice of epoch ``e`` (shuffle, β signs, stochastic encoders) comes from a generator seeded
with ``(spec.seed, e, 0)`` (the test-set evaluation after it: ``(spec.seed, e, 1)``), so a run resumed from
the checkpoint of epoch ``e − 1`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from poise.errors import PoiseError
from poise.golden.bundle import Bundle, atomic_write, load_bundle, save_bundle
from poise.golden.data import Dataset, to_unit_interval
from poise.golden.model import EqPropModel, build_model
from poise.golden.spec import NetworkSpec

CHECKPOINT = "checkpoint.npz"
FINAL = "model.npz"
METRICS = "metrics.jsonl"
CURVE = "learning_curve.png"


@dataclass
class Evaluation:
    """Accuracy and cost of a model on a labelled set."""

    accuracy: float
    confusion: np.ndarray  # (classes, classes): rows are true labels, columns predictions
    spikes_per_image: float
    synops_per_image: float
    seconds: float
    images: int

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "accuracy": self.accuracy,
            "error": self.error,
            "spikes_per_image": self.spikes_per_image,
            "synops_per_image": self.synops_per_image,
            "seconds": self.seconds,
            "confusion": self.confusion.tolist(),
        }


def evaluate(
    model: EqPropModel,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch: int = 500,
    rng: np.random.Generator | None = None,
    progress: bool = False,
    description: str = "eval",
) -> Evaluation:
    """Run the free phase on every image (uint8 or float pixels) and score the argmax of the outputs."""
    classes = model.spec.layers[-1]
    confusion = np.zeros((classes, classes), np.int64)
    spikes = synops = 0.0
    start = time.perf_counter()
    for first in tqdm(range(0, len(images), batch), desc=description, disable=not progress, leave=False,
                      unit="batch"):
        x = as_input(images[first:first + batch])
        result = model.infer(x, rng)
        np.add.at(confusion, (labels[first:first + batch].astype(np.int64), result.predictions), 1)
        spikes += float(result.spikes.sum())
        synops += float(result.synops.sum())
    n = len(images)
    return Evaluation(
        accuracy=float(np.trace(confusion) / max(n, 1)), confusion=confusion,
        spikes_per_image=spikes / max(n, 1), synops_per_image=synops / max(n, 1),
        seconds=time.perf_counter() - start, images=n,
    )


def as_input(images: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1]: uint8 images are divided by 255, float images pass through."""
    return to_unit_interval(images) if images.dtype == np.uint8 else images.astype(np.float32, copy=False)


def epoch_rng(spec: NetworkSpec, epoch: int, stream: int = 0) -> np.random.Generator:
    """The generator of epoch ``epoch``: ``stream`` 0 trains, 1 evaluates (seed entropy must be non-negative)."""
    return np.random.default_rng([spec.seed, epoch, stream])


def train_epoch(
    model: EqPropModel,
    images: np.ndarray,
    labels: np.ndarray,
    epoch: int,
    progress: bool = True,
) -> tuple[float, float]:
    """One pass over a fresh permutation; returns (running train error, seconds)."""
    rng = epoch_rng(model.spec, epoch)
    order = rng.permutation(len(images))
    batch = model.spec.batch_size
    wrong = 0
    start = time.perf_counter()
    bar = tqdm(total=len(images), desc=f"epoch {epoch}", unit="img", disable=not progress, leave=False)
    for first in range(0, len(images), batch):
        chosen = order[first:first + batch]
        result = model.train_batch(as_input(images[chosen]), labels[chosen].astype(np.int64), rng)
        wrong += int((result.predictions != labels[chosen]).sum())
        bar.update(len(chosen))
        bar.set_postfix(err=f"{wrong / min(first + batch, len(images)):.3f}", refresh=False)
    bar.close()
    return wrong / len(images), time.perf_counter() - start


def train(
    spec: NetworkSpec,
    dataset: Dataset,
    epochs: int,
    out_dir: Path,
    *,
    resume: bool = False,
    train_limit: int | None = None,
    test_limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Bundle:
    """Train ``spec`` on ``dataset`` for ``epochs`` epochs, writing the run directory ``out_dir``.

    With ``resume``, continue from ``out_dir/checkpoint.npz`` (whose spec must equal ``spec``).
    ``train_limit``/``test_limit`` use the first N images (for smoke runs); they are recorded in the bundle.
    """
    out_dir = Path(out_dir)
    train_x, train_y = dataset.train_images[:train_limit], dataset.train_labels[:train_limit]
    test_x, test_y = dataset.test_images[:test_limit], dataset.test_labels[:test_limit]
    if train_x.shape[1] != spec.layers[0]:
        raise PoiseError(
            f"dataset {dataset.name} has {train_x.shape[1]} pixels per image but the network's input layer has "
            f"{spec.layers[0]} neurons; use --arch {train_x.shape[1]}-…"
        )
    history: list[dict[str, Any]] = []
    model = build_model(spec)
    checkpoint = out_dir / CHECKPOINT
    info_base = {"dataset": dataset.name, "train_images": len(train_x), "test_images": len(test_x)}
    if resume:
        if not checkpoint.exists():
            raise PoiseError(f"{checkpoint}: nothing to resume; start without --resume")
        saved = load_bundle(checkpoint)
        if saved.spec != spec:
            raise PoiseError(f"{checkpoint}: was trained with a different spec; resume with the same options")
        trained_on = {key: saved.info.get(key) for key in info_base}
        if trained_on != info_base:
            raise PoiseError(
                f"{checkpoint}: was trained on {trained_on} but this run uses {info_base}; resume with the same "
                "dataset and limits"
            )
        model = build_model(saved.spec, saved.params)
        history = list(saved.info.get("history", []))
        log(f"resuming after epoch {len(history)}")
    write_metrics(out_dir, history)
    for epoch in range(len(history) + 1, epochs + 1):
        model.spec = spec.for_epoch(epoch)
        train_error, seconds = train_epoch(model, train_x, train_y, epoch, progress)
        result = evaluate(model, test_x, test_y, rng=epoch_rng(spec, epoch, 1), progress=progress)
        row = {
            "epoch": epoch,
            "test_error": result.error,
            "train_error": train_error,
            "seconds": seconds,
            "eval_seconds": result.seconds,
            "spikes_per_image": result.spikes_per_image,
            "synops_per_image": result.synops_per_image,
        }
        history.append(row)
        save_bundle(checkpoint, Bundle(spec, model.params, {**info_base, "history": history}))
        write_metrics(out_dir, history)
        plot_learning_curve(out_dir / CURVE, history, spec)
        log(
            f"epoch {epoch}: test error {100 * result.error:.2f}%  train error {100 * train_error:.2f}%  "
            f"{seconds:.1f} s" + (f"  {result.spikes_per_image:.0f} spikes/img" if result.spikes_per_image else "")
        )
    final = Bundle(spec, model.params, {**info_base, "history": history})
    save_bundle(out_dir / FINAL, final)
    return final


def write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` from the history (so a resumed run never duplicates a line)."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history).encode()
    atomic_write(out_dir / METRICS, lambda handle: handle.write(text))


def plot_learning_curve(path: Path, history: list[dict[str, Any]], spec: NetworkSpec) -> None:
    """Test and train error (%) against epoch, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(epochs, [100 * row["test_error"] for row in history], "o-", label="test")
    axes.plot(epochs, [100 * row["train_error"] for row in history], "s--", label="train (running)")
    axes.set_xlabel("epoch")
    axes.set_ylabel("error (%)")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.set_title(f"{spec.model} EqProp {spec.arch}")
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    plt.close(figure)
