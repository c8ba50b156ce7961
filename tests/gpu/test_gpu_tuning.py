"""GPU tuning without a GPU: `kiln tune` for an NVIDIA target refuses clearly and writes nothing,
and an NVIDIA compile applies the target's tuning database (records committed here without
measuring: a hand-written schedule with a distinctive block size, and DLight's own schedules
as `kiln tune` seeds them) before DLight, still producing an sm_86 cubin.

The measuring half (builder and runner on the GPU) needs a GPU: scripts/gpu-check.sh runs it.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from pathlib import Path

import onnx
import pytest

from conftest import run_kiln
from kiln.artifact.gpu import driver_loadable
from kiln.errors import KilnError

pytest.importorskip("cuda.bindings", reason="needs the cuda extra: pip install 'kilnml[cuda]'")
no_gpu = pytest.mark.skipif(driver_loadable(), reason="this machine has an NVIDIA driver")
#: the mlp's last kernel (32 -> 4 classes): DLight gives it 256-thread blocks
KERNEL = "fused_matmul2_add1"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from kiln.examples.models import mlp

    path = tmp_path_factory.mktemp("gpu-tune") / "mlp.onnx"
    onnx.save(mlp(seed=3, features=16, hidden=32, classes=4), path)
    return path


@no_gpu
def test_tune_for_a_gpu_target_without_a_gpu_is_device_unavailable(model, tmp_path):
    proc = run_kiln("tune", model, "--target", "ml_g5", "--trials", "8",
                    env={"KILN_TUNE_DIR": str(tmp_path)})
    assert proc.returncode == 42, proc.stderr
    assert "error[device_unavailable]" in proc.stderr
    assert "sm_86" in proc.stderr and "no NVIDIA driver" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []          # no database was created


def test_tune_for_a_gpu_target_refuses_rpc(model, tmp_path):
    proc = run_kiln("tune", model, "--target", "ml_g5", "--trials", "8", "--rpc",
                    "127.0.0.1:9", "--rpc-key", "g5", env={"KILN_TUNE_DIR": str(tmp_path)})
    assert proc.returncode == 23, proc.stderr
    assert "error[invalid_options]" in proc.stderr and "GPU of the machine" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@no_gpu
def test_compile_with_tuning_for_a_gpu_target_without_a_gpu_is_device_unavailable(
        model, tmp_path, monkeypatch):
    from kiln.compiler import compile_model
    from kiln.options import CompileOptions

    monkeypatch.setenv("KILN_TUNE_DIR", str(tmp_path))
    with pytest.raises(KilnError) as err:
        compile_model(model, target="ml_g5", output=tmp_path / "a.tar.gz",
                      options=CompileOptions(tune_trials=8))
    assert err.value.code == "device_unavailable"
    assert list(tmp_path.iterdir()) == []


def test_a_gpu_of_another_arch_is_refused_with_the_arch_found(monkeypatch):
    """The arch comparison, with nvidia-smi's answer for an L4 and a driver (this machine has
    neither, so the probe's two functions answer as on such a machine)."""
    from kiln.artifact import gpu
    from kiln.optimize.cuda_gpu import check_tuning_gpu
    from kiln.targets import resolve_target

    monkeypatch.setattr(gpu, "driver_loadable", lambda: True)
    monkeypatch.setattr(gpu, "host_gpus", lambda: [{"name": "NVIDIA L4", "arch": "sm_89",
                                                    "driver": "580.82.07"}])
    with pytest.raises(KilnError) as err:
        check_tuning_gpu(resolve_target("ml_g5", None)[0])
    assert err.value.code == "device_unavailable"
    assert "NVIDIA L4 (sm_89)" in err.value.message and "sm_86" in err.value.message
    assert '"gpu-code": "sm_89"' in err.value.hint
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert check_tuning_gpu(resolve_target("ml_g6", None)[0])["arch"] == "sm_89"


@pytest.fixture(scope="module")
def tasks(model):
    """ml_g5's spec, the tuning target, the model's GPU tasks and DLight's schedule of each."""
    from kiln.codegen.cuda_env import enable_cuda_codegen
    from kiln.importers import import_model
    from kiln.optimize.cuda_tuning import cuda_tasks
    from kiln.targets import resolve_target

    enable_cuda_codegen()
    spec = resolve_target("ml_g5", None)[0]
    imported = import_model(model, input_shapes=None, framework="onnx", workdir=model.parent)
    return (spec, *cuda_tasks(imported.mod, spec))


@contextlib.contextmanager
def _tune_dir(path: Path):
    """KILN_TUNE_DIR set to ``path`` for the block, restored after."""
    old = os.environ.get("KILN_TUNE_DIR")
    os.environ["KILN_TUNE_DIR"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("KILN_TUNE_DIR") if old is None else os.environ.update(KILN_TUNE_DIR=old)


def _seed(tune_dir: Path, spec, target, pairs) -> Path:
    """Commit each (task, schedule) of ``pairs`` to the target's database under ``tune_dir``."""
    with _tune_dir(tune_dir):
        for task, sch in pairs:
            _commit(spec, target, task, sch)
    return tune_dir


def _commit(spec, target, task, sch) -> None:
    from tvm.s_tir import meta_schedule as ms

    from kiln.optimize.tune_db import database_dir, write_info

    workdir = database_dir(spec, create=True)
    write_info(workdir, spec)
    database = ms.database.JSONDatabase(work_dir=str(workdir))
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, database.commit_workload(task.dispatched[0]), [1e-6], target,
        ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))


def _compile(model: Path, out: Path, tune_dir: Path, copts: dict | None = None, **options):
    from kiln.codegen.cuda_build import cubin_kernels
    from kiln.compiler import compile_model
    from kiln.options import CompileOptions

    with _tune_dir(tune_dir):
        result = compile_model(model, target="ml_g5", output=out / "a.tar.gz",
                               compiler_options=copts, options=CompileOptions(**options))
    with tarfile.open(result.artifact) as tar:
        tar.extractall(out / "a", filter="data")
    return result.manifest, cubin_kernels(out / "a" / "model.so")


@pytest.fixture(scope="module")
def hand_tuned(model, tasks, tmp_path_factory):
    """A database holding one hand-written schedule of KERNEL: 4 threads, one block."""
    from tvm.s_tir import Schedule

    spec, target, _, found, _ = tasks
    task = next(t for t in found if t.task_name == KERNEL)
    sch = Schedule(task.dispatched[0])
    matmul = sch.get_sblock("matmul")
    i0, i1, _k = sch.get_loops(matmul)
    fused = sch.fuse(i0, i1)
    sch.bind(fused, "threadIdx.x")
    sch.reverse_compute_at(sch.get_sblock("T_add"), fused)
    sch.set_scope(matmul, 0, "local")
    return _seed(tmp_path_factory.mktemp("tune-db"), spec, target, [(task, sch)])


def test_the_compile_applies_the_database_before_dlight(model, hand_tuned, tmp_path):
    manifest, kernels = _compile(model, tmp_path, hand_tuned)
    assert manifest.compile_options["pipeline"] == (
        "cuda default (DLight GPU schedules)+tuned (1 kernels from the tuning database)")
    code = manifest.runtime["device"]["device_code"]
    assert code["cubin_arches"] == ["sm_86"] and not code["cuda_source"]
    assert kernels[f"{KERNEL}_kernel"] == (4, 1, 1)            # the database's schedule
    others = {k: v for k, v in kernels.items() if k != f"{KERNEL}_kernel"}
    assert len(others) == 3 and all(v[0] >= 32 for v in others.values())    # DLight's


def test_without_the_database_the_kernel_keeps_dlights_schedule(model, hand_tuned, tmp_path):
    manifest, kernels = _compile(model, tmp_path, hand_tuned, use_tuning_db=False)
    assert "tuned" not in manifest.compile_options["pipeline"]
    assert kernels[f"{KERNEL}_kernel"][0] >= 32


def test_dlight_seed_records_replay_to_dlights_schedules(model, tasks, tmp_path):
    """`kiln tune` seeds the database with DLight's schedule of every kernel (measured on the
    GPU; here with a made-up time): applied from the database they give the same kernels."""
    spec, target, _, found, scheds = tasks
    assert len(found) == 4 and all(s is not None for s in scheds)
    tune_dir = _seed(tmp_path / "db", spec, target, zip(found, scheds))
    manifest, seeded = _compile(model, tmp_path / "seeded", tune_dir)
    assert "+tuned (4 kernels from the tuning database)" in manifest.compile_options["pipeline"]
    _, default = _compile(model, tmp_path / "default", tmp_path / "empty")
    assert seeded == default and len(default) == 4


def test_float16_compiles_find_the_float16_tuning_records(model, tasks, tmp_path):
    """With dtype float16 the tasks are extracted after the same ToMixedPrecision as the build,
    so a float16 compile finds every record (gpu-check tunes ResNet-50 in float16)."""
    from kiln.importers import import_model
    from kiln.optimize.cuda_tuning import cuda_tasks

    spec = tasks[0]
    imported = import_model(model, input_shapes=None, framework="onnx", workdir=model.parent)
    target, _, found, scheds = cuda_tasks(imported.mod, spec, dtype="float16")
    assert any("float16" in t.dispatched[0].script() for t in found)
    tune_dir = _seed(tmp_path / "db", spec, target, zip(found, scheds))
    manifest, _ = _compile(model, tmp_path / "fp16", tune_dir, {"dtype": "float16"})
    assert manifest.compile_options["pipeline"].endswith(
        f"+float16+tuned ({len(found)} kernels from the tuning database)")


def test_gpu_check_skips_tuning_where_it_cannot_tune(tmp_path):
    """bench/gpu_check.py's tuning step is skipped with the reason, never failed, offline
    (the GPU host has the artifacts, not the compiler) or when turned off."""
    import argparse
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", path)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    for args, reason in ((argparse.Namespace(tune_seconds=300.0, artifacts=tmp_path), "offline"),
                         (argparse.Namespace(tune_seconds=0.0, artifacts=None), "is 0")):
        report: dict = {"stages": {}}
        check.tuning_step(report, args, "sm_86", tmp_path, {})
        assert reason in report["tuning"]["skipped"] and report["stages"] == {}
    assert check.tuning_unavailable() is None        # this host has the compiler and extras


def test_the_tuning_builder_makes_an_sm86_candidate_without_a_gpu(tasks):
    """`kiln tune`'s builder (a fresh worker process: CUDA runtime loaded, NVRTC inside
    ``with target:``, linked by zig) builds DLight's schedule of a kernel into a loadable
    library with an sm_86 cubin; only timing it needs the GPU."""
    from tvm.s_tir import meta_schedule as ms

    from kiln.codegen.cuda_build import check_device_code, cubin_kernels
    from kiln.optimize.cuda_tuning import _builder_runner
    from kiln.optimize.tuning import _remove
    from kiln.options import TuneOptions

    spec, target, _, found, scheds = tasks
    builder, _ = _builder_runner(spec, TuneOptions(trials=1, build_workers=1))
    sch = scheds[[t.task_name for t in found].index(KERNEL)]
    (result,) = builder.build([ms.builder.BuilderInput(sch.mod, target)])
    try:
        assert result.error_msg is None, result.error_msg[-2000:]
        assert check_device_code(Path(result.artifact_path), "sm_86")["cubins"] == 1
        assert list(cubin_kernels(Path(result.artifact_path))) == ["main_kernel"]
    finally:
        _remove(result.artifact_path)
