"""The host side of streaming, on the in-process reference device: ``poise stream`` end to end, the golden
check (and that it fails on a device that computes wrongly), a device running another network, and a port
that vanishes mid-stream."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from run_cli import poise

from poise.embedded import embedded_bundle
from poise.firmware.driver import DeviceMismatchError, PoiseDevice
from poise.firmware.link import Link, LoopbackTransport
from poise.firmware.reference import ReferenceDevice
from poise.firmware.stream import stream
from poise.golden.bundle import load_bundle
from poise.golden.data import load_dataset


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(embedded_bundle())


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def connected(device: object) -> PoiseDevice:
    host = PoiseDevice(Link(LoopbackTransport(device), timeout=0.2, retries=1))
    host.connect()
    return host


def test_poise_stream_on_the_reference_device_writes_results_summary_and_plots(tmp_path):
    status, out, err = poise("stream", "--reference", "--limit", 20, "--check", "--encoding", "raw",
                             "--out", tmp_path)
    assert status == 0, err
    assert "bit-exact" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == 20 and summary["checked"] and summary["mismatches"] == []
    assert summary["encoding"] == "raw" and summary["request_bytes"] == 785
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(20))
    assert (tmp_path / "confusion.png").stat().st_size > 0


def test_on_chip_training_is_checked_weight_by_weight(bundle, mnist, tmp_path):
    device = connected(ReferenceDevice(bundle))
    summary = stream(device, bundle, mnist.train_images[:4], mnist.train_labels[:4], tmp_path, train=True,
                     check=True, lr_shift=2)
    assert summary.checked and summary.mismatches == [] and summary.weights_equal
    assert (tmp_path / "learning.png").stat().st_size > 0


def test_the_check_catches_a_device_that_computes_wrongly(bundle, mnist, tmp_path):
    faulty = ReferenceDevice(bundle)
    faulty.model.weights[1][:, 3] += 1  # one output's weights off by one LSB
    faulty.model.weights_f64 = [w.astype(np.float64) for w in faulty.model.weights]
    device = connected(faulty)
    summary = stream(device, bundle, mnist.test_images[:20], mnist.test_labels[:20], tmp_path, check=True)
    assert summary.mismatches and "image" in summary.mismatches[0]


def test_a_device_running_another_network_is_refused_by_name(bundle):
    other = dataclasses.replace(bundle, spec=bundle.spec.replace(seed=bundle.spec.seed + 1))
    device = connected(ReferenceDevice(other))
    with pytest.raises(DeviceMismatchError, match="spec digest"):
        device.check_bundle(bundle)


class VanishingDevice:
    """The reference device, until its port vanishes after ``replies`` replies."""

    def __init__(self, bundle, replies: int) -> None:
        self.inner, self.left = ReferenceDevice(bundle), replies

    def feed(self, data: bytes) -> bytes:
        if self.left <= 0:
            raise OSError(5, "Input/output error")
        out = self.inner.feed(data)
        self.left -= out.count(0)
        return out


def test_a_port_that_vanishes_mid_stream_keeps_the_results_so_far(bundle, mnist, tmp_path):
    device = connected(VanishingDevice(bundle, replies=1 + 7))  # INFO, then 7 images
    summary = stream(device, bundle, mnist.test_images[:30], mnist.test_labels[:30], tmp_path)
    assert summary.interrupted is not None and "vanished" in summary.interrupted.lower()
    kept = (tmp_path / "results.jsonl").read_text().splitlines()
    assert 0 < summary.images == len(kept) <= 7
    assert np.isfinite(summary.accuracy)


def test_no_device_at_the_port_is_a_clear_error_not_a_traceback(tmp_path):
    status, _, err = poise("stream", "--port", tmp_path / "ttyUSB9", "--limit", 1, "--out", tmp_path)
    assert status == 1
    assert f"no device at {tmp_path / 'ttyUSB9'}" in err and "Traceback" not in err
