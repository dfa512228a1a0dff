"""``poise verilog``: the network core of a fixed-point bundle as Verilog, memory images and a manifest that
agree with the integer model, with each other and with the Verilog itself; Verilator lints it clean."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from run_cli import poise

from poise.commands.verilog import lint_verilog
from poise.errors import PoiseError
from poise.golden.bundle import Bundle, load_bundle, save_bundle
from poise.golden.fixed import derive_fixed_spec
from poise.golden.integer import IntegerSpikingModel
from poise.golden.model import build_model
from poise.golden.spec import default_spec
from poise.rtl.geometry import CoreGeometry
from poise.sim.cocotb_runner import VERILATOR_ARGS, verilator_path

# (id, layers, input mode, predictive coding, lanes, top module name)
CASES = {
    "spike-predictive-p8": ((784, 16, 10), "spike", True, 8, None),
    "current-plain-p2": ((784, 12, 6, 10), "current", False, 2, "net_top"),
}


def make_bundle(path: Path, layers: tuple[int, ...], mode: str, predictive: bool, fixed: bool = True) -> Path:
    """A small spiking network with random weights and biases (negative ones too, and biases wider than the
    weights so that two's complement and odd widths show), quantised with the derived spec."""
    spec = default_spec("spiking", layers).replace(steps_free=12, steps_nudge=6)
    options = dataclasses.replace(spec.spiking, input_mode=mode,
                                  predictive=spec.spiking.predictive if predictive else None)
    spec = spec.replace(spiking=options)
    params = dict(build_model(spec).params)
    rng = np.random.default_rng(len(layers))
    for i in range(len(layers) - 1):
        params[f"b{i}"] = rng.uniform(-3, 3, layers[i + 1]).astype(params[f"b{i}"].dtype)
    save_bundle(path, Bundle(spec, params, {"dataset": "mnist"},
                             derive_fixed_spec(spec, params) if fixed else None))
    return path


@dataclasses.dataclass
class Output:
    bundle: Path
    out: Path
    name: str
    lanes: int
    summary: dict
    manifest: dict

    def verilog(self) -> str:
        return (self.out / f"{self.name}.v").read_text()


@pytest.fixture(scope="module", params=list(CASES))
def output(request, tmp_path_factory) -> Output:
    layers, mode, predictive, lanes, name = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    bundle = make_bundle(folder / "net-fixed.npz", layers, mode, predictive)
    out = folder / "rtl"
    argv = ["verilog", bundle, "--out", out, "--lanes", lanes, "--json"]
    argv += ["--name", name] if name else ["--lint"]
    status, stdout, stderr = poise(*argv)
    assert status == 0, stderr
    name = name or "poise_core"
    manifest = json.loads((out / f"{name}.json").read_text())
    return Output(bundle, out, name, lanes, json.loads(stdout), manifest)


def read_hex(path: Path, width: int, signed: bool) -> np.ndarray:
    lines = path.read_text().splitlines()
    assert all(len(line) == -(-width // 4) for line in lines), f"{path.name}: words not padded to {width} bits"
    words = np.array([int(line, 16) for line in lines], np.int64)
    assert (words < 1 << width).all()
    if signed:
        words = np.where(words >> (width - 1) & 1, words - (1 << width), words)
    return words


def verilog_modules(text: str) -> dict[str, tuple[list[str], str]]:
    """module name -> (ports in the header, body)."""
    pattern = re.compile(r"^module\s+(\\\S+|\w+)\s*\((.*?)\);\n(.*?)^endmodule", re.M | re.S)
    return {match[1]: ([port.strip() for port in match[2].split(",")], match[3]) for match in pattern.finditer(text)}


def declared_ports(body: str) -> dict[str, tuple[str, int]]:
    pattern = re.compile(r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?(\\\S+|\w+)\s*;", re.M)
    return {m[4]: (m[1], int(m[2]) - int(m[3]) + 1 if m[2] else 1) for m in pattern.finditer(body)}


def test_every_file_is_written_and_listed_with_its_hash(output):
    manifest, lanes = output.manifest, output.lanes
    layers = manifest["parameters"]["layers"]
    expected = {f"{output.name}.v", f"{output.name}.json", "bias.hex",
                *(f"w{layer}_bank{bank}.hex" for layer in range(len(layers) - 1) for bank in range(lanes))}
    expected |= {"epsilon.hex", "lambda.hex", "inv_lambda.hex"} if manifest["parameters"]["predictive_coding"] \
        else {"epsilon.hex"}
    assert {path.name for path in output.out.iterdir()} == expected
    listed = {entry["name"]: entry for entry in manifest["files"]}
    assert set(listed) == expected - {f"{output.name}.json"}
    for name, entry in listed.items():
        data = (output.out / name).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest(), name
    assert {memory["file"] for memory in manifest["memories"]} == expected - {f"{output.name}.v",
                                                                                f"{output.name}.json"}
    assert [entry["name"] for entry in output.summary["files"]] == [*listed, f"{output.name}.json"]
    assert output.summary["lint"] == ("clean" if output.name == "poise_core" else None)


def test_manifest_identifies_the_bundle_and_its_parameters(output):
    bundle = load_bundle(output.bundle)
    manifest = output.manifest
    assert manifest["top"] == output.name
    assert manifest["bundle"]["file"] == output.bundle.name
    assert manifest["bundle"]["checksum"] == bundle.checksum()
    canonical = json.dumps({"spec": bundle.spec.to_dict(), "fixed": bundle.fixed.to_dict()}, sort_keys=True,
                           separators=(",", ":"))
    assert manifest["bundle"]["spec_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    parameters = manifest["parameters"]
    assert parameters["layers"] == list(bundle.spec.layers) and parameters["lanes"] == output.lanes
    assert parameters["input_mode"] == bundle.spec.spiking.input_mode
    assert (parameters["steps_free"], parameters["steps_nudge"]) == (12, 6)
    assert parameters["formats"]["weight"] == dataclasses.asdict(bundle.fixed.weight)
    assert parameters["formats"]["bias"]["width"] > parameters["formats"]["weight"]["width"]
    geometry = CoreGeometry(bundle.spec, bundle.fixed, output.lanes)
    for layer, entry in enumerate(parameters["memory_map"]["weights"]):
        assert entry["depth"] == geometry.bank_depth(layer) and entry["skewed"] == (layer >= 1)
        assert entry["banks"] == output.lanes


def test_hex_files_decode_to_the_integer_models_parameters(output):
    bundle = load_bundle(output.bundle)
    model = IntegerSpikingModel.from_bundle(bundle)
    fixed = bundle.fixed
    geometry = CoreGeometry(bundle.spec, fixed, output.lanes)
    for layer, weights in enumerate(model.weights):
        banks = np.stack([read_hex(output.out / f"w{layer}_bank{bank}.hex", fixed.weight.width, True)
                          for bank in range(output.lanes)])
        assert banks.shape == (output.lanes, geometry.bank_depth(layer))
        assert np.array_equal(geometry.unpack_weights(layer, banks), weights)
        assert (weights < 0).any()
    biases = read_hex(output.out / "bias.hex", fixed.bias.width, True)
    assert np.array_equal(biases, np.concatenate(model.biases)) and (biases < 0).any()
    for table in ("epsilon_rom", "lambda_rom", "inv_lambda_rom"):
        rom = getattr(fixed, table)
        path = output.out / f"{table.removesuffix('_rom')}.hex"
        assert path.exists() == (rom is not None)
        if rom is not None:
            fmt = getattr(fixed, table.replace("_rom", "_format"))
            assert read_hex(path, fmt.width - 1, False).tolist() == list(rom)


def test_manifest_ports_are_the_verilog_ports(output):
    modules = verilog_modules(output.verilog())
    header, body = modules[output.name]
    declared = declared_ports(body)
    assert set(header) == set(declared)
    ports = {port["name"]: port for port in output.manifest["ports"]}
    assert set(ports) == set(declared)
    for name, (direction, width) in declared.items():
        assert (ports[name]["direction"], ports[name]["width"]) == (direction, width), name
    fixed = load_bundle(output.bundle).fixed
    value = max(fixed.weight.width, fixed.bias.width) + 1  # one bit more, so out-of-range writes can be refused
    response = {field["name"]: field for field in ports["parameter_response__payload"]["fields"]}
    assert response["value"]["width"] == value and response["value"]["signed"] and response["error"]["width"] == 1
    for port in ports.values():  # the fields tile the payload, from bit 0 up, without gaps
        if "fields" in port:
            end = 0
            for field in port["fields"]:
                assert field["offset"] == end, (port["name"], field["name"])
                end += field["width"]
            assert end == port["width"], port["name"]
    request = {field["name"]: field for field in ports["parameter_request__payload"]["fields"]}
    assert request["value"]["width"] == value and request["value"]["signed"] and not request["row"]["signed"]
    outputs = {field["name"]: field for field in ports["result__payload"]["fields"]}["outputs"]
    assert len(outputs["fields"]) == load_bundle(output.bundle).spec.layers[-1]
    assert outputs["fields"][1]["offset"] == outputs["offset"] + fixed.state.width - 1


def test_hex_files_hold_the_verilogs_initial_memory_contents(output):
    modules = verilog_modules(output.verilog())
    for memory in output.manifest["memories"]:
        *instances, name = memory["instance"].split(".")
        module = output.name
        for instance in instances:  # follow the instance path down the hierarchy
            found = re.search(rf"^\s*(\\\S+|\w+)\s+{re.escape(instance)}\s*\(", modules[module][1], re.M)
            assert found, memory["instance"]
            module = found[1]
        body = modules[module][1]
        declaration = re.search(rf"^\s*reg\s+\[(\d+):0\]\s+{re.escape(name)}\s+\[(\d+):0\];", body, re.M)
        assert declaration, memory["instance"]
        assert (int(declaration[1]) + 1, int(declaration[2]) + 1) == (memory["width"], memory["depth"])
        initial = {int(m[1]): int(m[3], 16) for m in
                   re.finditer(rf"^\s*{re.escape(name)}\[(\d+)\] = (\d+)'h([0-9a-fA-F]+);", body, re.M)}
        words = [int(line, 16) for line in (output.out / memory["file"]).read_text().splitlines()]
        assert [initial.get(address, 0) for address in range(memory["depth"])] == words, memory["instance"]


def test_verilator_lints_the_verilog_clean(output):
    done = subprocess.run([verilator_path(), "--lint-only", *VERILATOR_ARGS, "--top-module", output.name,
                           output.out / f"{output.name}.v"], cwd=output.out.parent, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert not [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("%")]


def test_lint_reports_are_clear_errors(tmp_path):
    truncating = tmp_path / "truncating.v"  # a width warning: one of the three suppressions
    truncating.write_text("module top(input [3:0] a, output [1:0] q);\n  assign q = a;\nendmodule\n")
    lint_verilog(truncating, "top")
    out_of_range = tmp_path / "out_of_range.v"
    out_of_range.write_text("module top(input [3:0] a, output q);\n  assign q = a[5];\nendmodule\n")
    with pytest.raises(PoiseError, match=r"(?s)verilator --lint-only .*out_of_range\.v.*SELRANGE"):
        lint_verilog(out_of_range, "top")


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        pytest.param(lambda d: make_bundle(d / "float.npz", (784, 16, 10), "spike", True, fixed=False), [],
                     "has no fixed-point spec", id="no-fixed-spec"),
        pytest.param(lambda d: make_bundle(d / "fixed.npz", (784, 16, 10), "spike", True), ["--lanes", "3"],
                     "--lanes 3: the number of synapse lanes must be a power of two", id="lanes-3"),
        pytest.param(lambda d: make_bundle(d / "fixed.npz", (784, 16, 10), "spike", True), ["--name", "2core"],
                     "not a Verilog module name", id="bad-name"),
    ],
)
def test_bad_inputs_are_clear_errors_and_write_nothing(tmp_path, make, argv, message):
    bundle = make(tmp_path)
    out = tmp_path / "rtl"
    status, stdout, stderr = poise("verilog", bundle, "--out", out, *argv)
    assert status == 1 and stdout == ""
    assert stderr.startswith("poise: error:") and message in stderr
    if "no fixed-point spec" in message:
        assert f"poise quantize {bundle} --board" in stderr
    assert not out.exists()
