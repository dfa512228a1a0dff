"""Stream a dataset through a device: inference (two requests in flight, so the UART and the core overlap) or
on-chip training (one at a time: a TRAIN changes the weights the next image sees), every result kept as a
JSON line, then a summary, the confusion matrix, and with ``check`` the integer golden model's verdict.

The golden check of a training run starts from the device's own parameters (read back first) and resets
the device, so the golden model's random-number generator starts where the device's does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poise.errors import PoiseError
from poise.firmware.driver import PoiseDevice
from poise.firmware.link import LinkError
from poise.firmware.messages import Encoding, ImageResult, Parameter
from poise.firmware.protocol import Opcode
from poise.golden.bundle import Bundle
from poise.golden.integer import IntegerSpikingModel


@dataclass
class StreamSummary:
    """What a stream measured; ``mismatches`` lists the first disagreements with the golden model (empty when
    every checked result was equal), ``checked`` says whether the check ran."""

    images: int
    correct: int
    seconds: float
    mode: str
    encoding: str
    mean_spikes: float
    mean_synops: float
    mean_cycles: float
    request_bytes: float
    checked: bool = False
    mismatches: list[str] = field(default_factory=list)
    weights_equal: bool | None = None
    interrupted: str | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy, "images_per_second": self.images_per_second}


def beta_signs(count: int, random_sign: bool) -> np.ndarray:
    """β's sign per training image: alternating when the spec randomises it (as the golden model's ``train``)."""
    return 1 - 2 * (np.arange(count) % 2) if random_sign else np.ones(count, np.int64)


def _results(device: PoiseDevice, images: np.ndarray, labels: np.ndarray, train: bool, encoding: Encoding,
             signs: np.ndarray) -> Iterator[ImageResult]:
    if train:
        for k, image in enumerate(images):
            yield device.train(image, int(labels[k]), bool(signs[k] < 0), encoding)
        return
    pending: list[int] = []
    for image in images:
        pending.append(device.submit(Opcode.INFER, device.infer_payload(image, encoding)))
        if len(pending) == 2:
            yield device.collect(pending.pop(0))
    for sequence in pending:
        yield device.collect(sequence)


def stream(device: PoiseDevice, bundle: Bundle, images: np.ndarray, labels: np.ndarray, out: Path, *,
           train: bool = False, encoding: Encoding = Encoding.PACKED, check: bool = False,
           lr_shift: int | None = None, initial: IntegerSpikingModel | None = None,
           progress: Any = None) -> StreamSummary:
    """Streams ``images`` through ``device``; results go to ``out/results.jsonl`` as they arrive (kept if the
    port vanishes: the summary then says so). ``progress`` is a tqdm-like object updated per image. A training
    check starts the golden model from ``initial`` when the caller knows the device's parameters, else from
    the parameters read back."""
    out.mkdir(parents=True, exist_ok=True)
    signs = beta_signs(len(images), bool(bundle.spec.random_beta_sign))
    golden = None
    if check and train:
        if initial is None:
            weights, biases = device.read_parameters()
        else:
            weights, biases = initial.weights, initial.biases
        golden = IntegerSpikingModel(bundle.spec, bundle.fixed, weights, biases)
        device.reset()
    if train and lr_shift is not None:
        device.set(Parameter.LR_SHIFT, lr_shift)
        if golden is not None:
            golden.lr_shift = lr_shift
    request_bytes = float(np.mean([len(device.infer_payload(image, encoding)) for image in images[:200]]))
    got: list[ImageResult] = []
    interrupted = None
    start = time.perf_counter()
    with (out / "results.jsonl").open("w") as log:
        try:
            for k, result in enumerate(_results(device, images, labels, train, encoding, signs)):
                got.append(result)
                log.write(json.dumps({"index": k, "label": int(labels[k]), **asdict(result)}) + "\n")
                if progress is not None:
                    progress.update(1)
        except LinkError as error:
            interrupted = str(error)
    seconds = time.perf_counter() - start
    count = len(got)
    column = {name: np.array([getattr(r, name) for r in got], np.int64) for name in
              ("prediction", "spikes", "synops", "cycles")} if got else {}
    summary = StreamSummary(
        images=count, correct=int((column["prediction"] == labels[:count]).sum()) if got else 0, seconds=seconds,
        mode="train" if train else "infer", encoding=encoding.name.lower(),
        mean_spikes=float(column["spikes"].mean()) if got else 0.0,
        mean_synops=float(column["synops"].mean()) if got else 0.0,
        mean_cycles=float(column["cycles"].mean()) if got else 0.0, request_bytes=request_bytes,
        interrupted=interrupted)
    if check and got:
        summary.checked = True
        if golden is None:
            golden = IntegerSpikingModel.from_bundle(bundle)
            expected = golden.infer(images[:count])
            summary.mismatches = compare(got, expected.predictions, expected.spikes, expected.synops,
                                         expected.outputs)
        else:
            summary.mismatches, summary.weights_equal = check_training(device, golden, got, images, labels, signs)
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    if got:
        plot_confusion(column["prediction"], labels[:count], device.classes, out / "confusion.png", summary)
        if train:
            plot_learning(column["prediction"] == labels[:count], out / "learning.png")
    return summary


def compare(got: list[ImageResult], predictions: np.ndarray, spikes: np.ndarray, synops: np.ndarray,
            outputs: np.ndarray, limit: int = 10) -> list[str]:
    """The first ``limit`` images whose result differs from the golden model's, field by field."""
    problems = []
    for k, result in enumerate(got):
        fields = {"prediction": (result.prediction, int(predictions[k])), "spikes": (result.spikes, int(spikes[k])),
                  "synops": (result.synops, int(synops[k])),
                  "outputs": (list(result.outputs), [int(v) for v in outputs[k]])}
        wrong = [f"{name} {a} != golden {b}" for name, (a, b) in fields.items() if a != b]
        if wrong:
            problems.append(f"image {k}: " + "; ".join(wrong))
            if len(problems) == limit:
                break
    return problems


def check_training(device: PoiseDevice, golden: IntegerSpikingModel, got: list[ImageResult], images: np.ndarray,
                   labels: np.ndarray, signs: np.ndarray) -> tuple[list[str], bool]:
    """Replays the training on the golden model: the free-phase results before each update, then every
    weight and bias read back from the device."""
    predictions, spikes, synops, outputs = [], [], [], []
    for k in range(len(got)):
        free = golden.infer(images[k:k + 1])
        predictions.append(free.predictions[0])
        spikes.append(free.spikes[0])
        synops.append(free.synops[0])
        outputs.append(free.outputs[0])
        golden.train_image(images[k], int(labels[k]), int(signs[k]))
    problems = compare(got, np.array(predictions), np.array(spikes), np.array(synops), np.array(outputs))
    weights, biases = device.read_parameters()
    equal = all(np.array_equal(a, b) for a, b in zip(weights, golden.weights, strict=True)) and all(
        np.array_equal(a, b) for a, b in zip(biases, golden.biases, strict=True))
    if not equal:
        problems.append("after training the device's parameters differ from the golden model's")
    return problems, equal


def plot_confusion(predictions: np.ndarray, labels: np.ndarray, classes: int, path: Path,
                   summary: StreamSummary) -> None:
    import matplotlib.pyplot as plt

    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions), 1)
    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            axes.text(col, row, str(value), ha="center", va="center", fontsize=7,
                      color="white" if value > matrix.max() / 2 else "black")
    axes.set_xlabel("predicted")
    axes.set_ylabel("label")
    axes.set_xticks(range(classes))
    axes.set_yticks(range(classes))
    axes.set_title(f"{summary.mode}: {summary.images} images, accuracy {100 * summary.accuracy:.2f}%")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_learning(correct: np.ndarray, path: Path, window: int = 100) -> None:
    """Accuracy of the prediction made before each update, in a sliding window: on-chip learning as it goes."""
    import matplotlib.pyplot as plt

    if len(correct) < window:
        window = max(len(correct), 1)
    running = np.convolve(correct.astype(np.float64), np.ones(window) / window, mode="valid")
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(np.arange(window, len(correct) + 1), 100 * running)
    axes.set_xlabel("training images seen")
    axes.set_ylabel(f"accuracy before the update, last {window} (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def require_images(images: np.ndarray, size: int) -> None:
    if images.ndim != 2 or images.shape[1] != size or images.dtype != np.uint8:
        raise PoiseError(f"the device takes images of {size} uint8 pixels; the dataset has shape {images.shape} "
                         f"and type {images.dtype}")
