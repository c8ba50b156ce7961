"""`kiln targets` and `kiln inspect` output, and the error-code table."""

from __future__ import annotations

import json

from kiln.errors import ERROR_CODES, KilnError
from kiln.targets.catalog import NEO_TARGET_DEVICES
from conftest import run_kiln


def test_targets_json_names_all_37_neo_devices_with_a_status():
    res = run_kiln("targets", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert len(NEO_TARGET_DEVICES) == 37
    for name in NEO_TARGET_DEVICES:
        assert rows[name]["status"] in ("verified", "codegen", "unsupported")
        assert rows[name]["reason"]
    for extra in ("rasp5", "jetson_orin", "ml_c7g", "ml_m7g", "kv260", "zcu104", "am62a", "riscv64"):
        assert extra in rows
    for verified in ("rasp4b", "ml_c6g", "imx8qm", "ml_c5"):
        assert rows[verified]["status"] == "verified"
    assert rows["rasp3b"]["status"] == "verified" and "standalone" in rows["rasp3b"]["reason"]


def test_targets_table_lists_every_device():
    res = run_kiln("targets")
    assert res.returncode == 0 and "rasp4b" in res.stdout and "jetson_nano" in res.stdout


def test_inspect_json_describes_the_artifact(model_dir, tmp_path):
    art = tmp_path / "a.tar.gz"
    assert run_kiln("compile", model_dir / "mlp.onnx", "--platform", "LINUX/X86_64", "-o",
                    art).returncode == 0
    res = run_kiln("inspect", art, "--json")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    assert m["schema_version"] == 1 and m["kiln_version"] and m["tvm_version"].startswith("0.27")
    assert m["target"]["name"] == "linux_x86_64" and m["target"]["fingerprint"].startswith("sha256:")
    assert m["target"]["spec"]["arch"] == "x86_64" and m["framework"] == "onnx"
    assert [o["name"] for o in m["outputs"]] == ["logits", "probs"]
    assert m["inputs"] == [{"name": "x", "shape": [1, 64], "dtype": "float32"}]
    # the default runtime on x86_64 is Kiln's standalone executor (no libtvm_runtime)
    for name in ("model.so", "plan.txt", "params.bin", "libkiln_runtime.so", "kiln_run",
                 "kiln_runtime.h", "signature.txt", "model.fallback.so"):
        assert len(m["files"][name]["sha256"]) == 64 and m["files"][name]["size"] > 0
    assert not any(name.startswith("libtvm") for name in m["files"])
    assert m["verification"]["verified"] and len(m["verification"]["outputs"]) == 2
    foot = m["footprint"]
    assert foot["runtime_kind"] == "standalone" and foot["chosen_because"].startswith("default")
    assert foot["runtime_bytes"] == m["files"]["libkiln_runtime.so"]["size"] + \
        m["files"]["kiln_run"]["size"] < 1_000_000
    assert foot["model_bytes"] > 0 and foot["weights_bytes"] == m["files"]["params.bin"]["size"]
    assert m["created_at"].endswith("+00:00")
    text = run_kiln("inspect", art)
    assert text.returncode == 0 and "runtime footprint" in text.stdout


def test_error_codes_have_unique_exit_statuses():
    statuses = [c.exit_status for c in ERROR_CODES.values()]
    assert len(set(statuses)) == len(statuses) and 0 not in statuses and 1 not in statuses
    err = KilnError("unknown_target", "unknown target 'x'", hint="see `kiln targets`")
    assert err.exit_status == 20 and err.one_line() == (
        "error[unknown_target]: unknown target 'x' (hint: see `kiln targets`)")


def test_every_command_prints_its_help():
    # help texts are rich markup: an unescaped "[/ACCEL]" made `kiln compile --help` and
    # `kiln jobs create --help` fail with an internal error
    import typer
    from typer.testing import CliRunner

    from kiln.cli.main import app

    def paths(cmd, prefix=()):
        yield prefix
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from paths(sub, (*prefix, name))

    runner = CliRunner()
    seen = list(paths(typer.main.get_command(app)))
    assert ("compile",) in seen and ("jobs", "create") in seen and ("tune-db", "export") in seen
    for path in seen:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, (path, res.output, res.exception)
