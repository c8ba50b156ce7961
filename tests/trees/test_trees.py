"""Tree ensembles compiled to C: XGBoost, LightGBM and scikit-learn models trained here (seeded),
compiled for x86_64 (run natively), aarch64 (rasp4b), 32-bit ARM (rasp3b) and RISC-V (riscv64)
(run under qemu-user), and compared with the framework's own predictions.

Tolerance: max abs error 1e-5 on float32 outputs (probabilities, regression values, scores).
Artifacts are compiled once per module and shared; models are small so the file runs in
about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("treelite")
xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
sio = pytest.importorskip("skops.io")
joblib = pytest.importorskip("joblib")
from sklearn import ensemble as E  # noqa: E402
from sklearn.datasets import make_classification, make_regression  # noqa: E402

import kiln  # noqa: E402
from kiln.artifact import unpack  # noqa: E402
from kiln.cli.run import run_artifact  # noqa: E402
from kiln.compiler import compile_model  # noqa: E402
from kiln.errors import ERROR_CODES, KilnError  # noqa: E402
from kiln.options import CompileOptions, parse_input_shapes  # noqa: E402

ATOL = 1e-5
KILN = Path(sys.executable).parent / "kiln"
HOST = "ml_c5"  # an AVX-512 device: tree code is built for the x86-64 baseline, so it runs here
_SYSROOTS = {"rasp4b": ("qemu-aarch64", "/usr/aarch64-linux-gnu"),
             "rasp3b": ("qemu-arm", "/usr/arm-linux-gnueabihf"),
             "riscv64": ("qemu-riscv64", "/usr/riscv64-linux-gnu")}
ALL_TARGETS = [HOST, "rasp4b", "rasp3b", "riscv64"]


def _can_run(target: str) -> bool:
    if target == HOST:
        return True
    qemu, root = _SYSROOTS[target]
    return shutil.which(qemu) is not None and Path(root, "lib").is_dir()


def _needs(target: str):
    if not _can_run(target) and not os.environ.get("CI"):
        pytest.skip(f"needs {_SYSROOTS[target][0]} and {_SYSROOTS[target][1]} "
                    "(scripts/setup-system.sh installs them)")


# ---- models, trained here ------------------------------------------------------------------
def _data():
    xb, yb = make_classification(400, 6, n_informative=4, random_state=0)
    xm, ym = make_classification(400, 6, n_informative=4, n_classes=3, random_state=1)
    xr, yr = make_regression(400, 6, noise=0.1, random_state=2)
    return {"bin": (xb, yb), "multi": (xm, ym), "reg": (xr, yr)}


def _train(root: Path) -> dict[str, tuple[Path, object, str, int]]:
    """name -> (file, framework object, method, n_features)."""
    warnings.filterwarnings("ignore")
    d, out = _data(), {}
    xm, ym = d["multi"]
    xb, yb = d["bin"]
    xr, yr = d["reg"]
    boost = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 4, "seed": 0},
                      xgb.DMatrix(xm, ym), 12)
    boost.save_model(root / "xgb_multi.json")
    out["xgb_multi"] = (root / "xgb_multi.json", boost, "predict", 6)
    xb_nan = xb.copy()
    xb_nan[::7, 2] = np.nan  # missing values take each split's default direction
    boost = xgb.train({"objective": "binary:logistic", "max_depth": 3, "seed": 0},
                      xgb.DMatrix(xb_nan, yb), 10)
    boost.save_model(root / "xgb_bin.ubj")
    out["xgb_bin"] = (root / "xgb_bin.ubj", boost, "predict", 6)
    xq = xm.copy()
    xq[:, 0] = np.random.default_rng(4).integers(0, 6, len(xq))
    yq = ((xq[:, 0].astype(int) % 3 == 1) ^ (xq[:, 1] > 0)).astype(int)
    boost = xgb.train({"objective": "binary:logistic", "max_depth": 3, "max_cat_to_onehot": 1,
                       "seed": 0}, xgb.DMatrix(xq, yq, feature_types=["c"] + ["q"] * 5,
                                               enable_categorical=True), 8)
    boost.save_model(root / "xgb_cat.json")
    out["xgb_cat"] = (root / "xgb_cat.json", boost, "predict", 6)
    gbm = lgb.train({"objective": "regression", "num_leaves": 12, "verbose": -1, "seed": 0},
                    lgb.Dataset(xr, yr), 15)
    gbm.save_model(root / "lgb_reg.txt")
    out["lgb_reg"] = (root / "lgb_reg.txt", gbm, "predict", 6)
    xc = xm.copy()
    xc[:, 0] = np.random.default_rng(3).integers(0, 7, len(xc))  # a categorical feature, 7 levels
    yc = (xc[:, 0].astype(int) % 3 + (xm[:, 1] > 0)) % 3        # that the label depends on
    gbm = lgb.train({"objective": "multiclass", "num_class": 3, "num_leaves": 8, "verbose": -1,
                     "min_data_per_group": 5, "cat_smooth": 1, "seed": 0},
                    lgb.Dataset(xc, yc, categorical_feature=[0]), 8)
    gbm.save_model(root / "lgb_cat.txt")
    out["lgb_cat"] = (root / "lgb_cat.txt", gbm, "predict", 6)
    sk = {
        "rf_multi": (E.RandomForestClassifier(6, max_depth=5, random_state=0), "multi", "predict_proba"),
        "et_reg": (E.ExtraTreesRegressor(6, max_depth=5, random_state=0), "reg", "predict"),
        "gb_bin": (E.GradientBoostingClassifier(n_estimators=8, max_depth=3, random_state=0), "bin",
                   "predict_proba"),
        "gb_reg": (E.GradientBoostingRegressor(n_estimators=8, random_state=0), "reg", "predict"),
        "hgb_multi": (E.HistGradientBoostingClassifier(max_iter=8, random_state=0), "multi",
                      "predict_proba"),
        "hgb_reg": (E.HistGradientBoostingRegressor(max_iter=8, random_state=0), "reg", "predict"),
        "iso": (E.IsolationForest(n_estimators=8, random_state=0), "bin", "score_samples"),
    }
    for name, (est, data, method) in sk.items():
        x, y = d[data]
        est.fit(x) if name == "iso" else est.fit(x, y)
        sio.dump(est, root / f"{name}.skops")
        out[name] = (root / f"{name}.skops", est, method, 6)
    joblib.dump(out["rf_multi"][1], root / "rf_multi.joblib")
    return out


def _reference(obj, method: str, x: np.ndarray) -> np.ndarray:
    if isinstance(obj, xgb.Booster):
        return obj.predict(xgb.DMatrix(x, missing=np.nan))
    return getattr(obj, method)(x)


#: models whose framework takes NaN (missing) inputs at predict time
NAN_OK = {"xgb_multi", "xgb_bin", "xgb_cat", "lgb_reg", "lgb_cat", "hgb_multi", "hgb_reg", "rf_multi"}


def _inputs(n_features: int, rows: int = 50, seed: int = 11, *, nan: bool = True) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, n_features)).astype(np.float32)
    x[:, 0] = np.abs(np.round(x[:, 0] * 3)) % 7  # categories for *_cat, any value else
    x[5::13, 0] = -0.5  # LightGBM reads it as category 0, XGBoost as no category
    if nan:
        x[3::9, 2] = np.nan
    return x


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("trees")
    return root, _train(root)


@pytest.fixture(scope="module")
def compiled(models):
    """Compile on first use, keyed by (model, target); every compile runs the accuracy gate."""
    root, _ = models
    cache: dict[tuple[str, str], object] = {}

    def get(name: str, target: str):
        if (name, target) not in cache:
            path = models[1][name][0]
            cache[name, target] = compile_model(path, target=target,
                                                output=root / f"{name}-{target}.tar.gz")
        return cache[name, target]

    return get


def _check_run(result, obj, method, n_features, tmp_path, *, nan: bool) -> float:
    """Run the artifact with `kiln run`'s code path (qemu for foreign arches); max abs error."""
    x = _inputs(n_features, nan=nan)
    np.save(tmp_path / "x.npy", x)
    mode, _, names = run_artifact(result.artifact, [f"data={tmp_path / 'x.npy'}"],
                                  tmp_path / "y.npz")
    got = np.load(tmp_path / "y.npz")[names[0]]
    ref = np.asarray(_reference(obj, method, x), dtype=np.float32)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.abs(got - ref).max())


# ---- every framework on every CPU arch --------------------------------------------------------
@pytest.mark.parametrize("target", ALL_TARGETS)
@pytest.mark.parametrize("name", ["xgb_multi", "lgb_reg", "rf_multi"])
def test_framework_on_every_arch(models, compiled, name, target, tmp_path):
    _needs(target)
    path, obj, method, nf = models[1][name]
    result = compiled(name, target)
    m = result.manifest
    assert m.runtime["kind"] == "trees" and m.runtime["tvm_libraries"] == []
    assert m.target["name"] == target
    assert [t.name for t in m.signature.inputs] == ["data"]
    assert m.signature.inputs[0].shape == (-1, nf)
    report = m.verification
    assert report["verified"] and report["passed"], report
    assert report["outputs"][0]["max_abs_error"] <= ATOL
    expected_mode = {HOST: "native"}.get(target, _SYSROOTS.get(target, ("",))[0])
    assert report["mode"].startswith(expected_mode), report["mode"]
    assert _check_run(result, obj, method, nf, tmp_path, nan=name in NAN_OK) <= ATOL


def test_neo_platform_linux_arm_eabihf(models, tmp_path):
    _needs("rasp3b")
    path, obj, method, nf = models[1]["lgb_reg"]
    result = compile_model(path, platform="LINUX/ARM_EABIHF", output=tmp_path / "p.tar.gz")
    report = result.manifest.verification
    assert report["passed"] and report["mode"].startswith("qemu-arm"), report
    assert result.manifest.runtime["cflags"][-1] == "-mcpu=cortex_a7"
    assert _check_run(result, obj, method, nf, tmp_path, nan=True) <= ATOL


def test_armv7_artifact_is_32bit_hard_float(compiled, tmp_path):
    _needs("rasp3b")
    result = compiled("xgb_multi", "rasp3b")
    folder = unpack(result.artifact, tmp_path)
    with open(folder / "model.so", "rb") as f:
        head = f.read(64)
    assert head[4] == 1 and int.from_bytes(head[18:20], "little") == 40  # ELFCLASS32, EM_ARM
    assert int.from_bytes(head[36:40], "little") & 0x400  # EF_ARM_ABI_FLOAT_HARD
    assert result.manifest.runtime["cflags"][-1] == "-mcpu=cortex_a53"


# ---- every scikit-learn ensemble, binary/ubj XGBoost, categorical LightGBM, on the host ------
@pytest.mark.parametrize("name", ["xgb_bin", "xgb_cat", "lgb_cat", "et_reg", "gb_bin", "gb_reg", "hgb_multi",
                                  "hgb_reg", "iso"])
def test_model_kinds_on_host(models, compiled, name):
    path, obj, method, nf = models[1][name]
    result = compiled(name, HOST)
    assert result.manifest.verification["passed"]
    x = _inputs(nf, rows=37, nan=name in NAN_OK)
    with _loaded(result.artifact) as model:
        got = model.run({"data": x})[0]
        one = model.run(x[:1])[0]  # any row count, same artifact
    ref = np.asarray(_reference(obj, method, x), dtype=np.float32)
    assert got.shape == ref.shape and np.abs(got - ref).max() <= ATOL, np.abs(got - ref).max()
    assert np.abs(one - ref[:1]).max() <= ATOL


class _loaded:
    def __init__(self, path):
        self.model = kiln.load(path)

    def __enter__(self):
        return self.model

    def __exit__(self, *exc):
        self.model.close()


def test_categorical_splits_and_missing_values_are_exercised(models):
    import treelite

    def count(model, field):
        return sum(int(np.asarray(model.get_tree_accessor(i).get_field(field)).sum())
                   for i in range(model.num_tree))

    cat = treelite.frontend.load_lightgbm_model(models[1]["lgb_cat"][0])
    assert count(cat, "has_categorical_split") > 0
    xgb_bin = treelite.frontend.load_xgboost_model(models[1]["xgb_bin"][0], format_choice="ubjson")
    assert count(xgb_bin, "default_left") > 0
    xgb_cat = treelite.frontend.load_xgboost_model(models[1]["xgb_cat"][0])
    assert count(xgb_cat, "has_categorical_split") > 0


def test_large_batches_split_over_threads(models, compiled, monkeypatch):
    path, obj, method, nf = models[1]["rf_multi"]
    x = _inputs(nf, rows=3001)
    ref = obj.predict_proba(x)
    outs = []
    for threads in ("1", "5"):  # 5 threads of 600 rows, the last one uneven
        monkeypatch.setenv("KILN_NUM_THREADS", threads)
        with _loaded(compiled("rf_multi", HOST).artifact) as model:
            outs.append(model.run(x)[0])
    assert np.array_equal(outs[0], outs[1])
    assert np.abs(outs[1] - ref).max() <= ATOL


def test_classifier_outputs_match_predict_proba_shape(compiled):
    m = compiled("gb_bin", HOST).manifest
    assert m.signature.outputs[0].shape == (-1, 2)  # [1 - p, p], as predict_proba
    assert m.source["reference_method"] == "predict_proba"
    assert m.framework == "sklearn" and m.source["model_kind"].endswith("GradientBoostingClassifier")


def test_fixed_rows_from_input_shape(models, tmp_path):
    path, obj, method, nf = models[1]["xgb_multi"]
    opts = CompileOptions(input_shapes=parse_input_shapes({"data": [4, nf]}))
    result = compile_model(path, target=HOST, output=tmp_path / "fixed.tar.gz", options=opts)
    assert result.manifest.signature.inputs[0].shape == (4, nf)
    assert result.manifest.signature.outputs[0].shape == (4, 3)
    x = _inputs(nf, rows=5)
    with _loaded(result.artifact) as model:
        got = model.run(x[:4])[0]
        with pytest.raises(KilnError) as info:
            model.run(x)
    assert np.abs(got - obj.predict(xgb.DMatrix(x[:4]))).max() <= ATOL
    assert info.value.code == "invalid_input"


def test_trusted_pickle(models, tmp_path):
    root, m = models
    _, obj, method, nf = m["rf_multi"]
    result = compile_model(root / "rf_multi.joblib", target=HOST, output=tmp_path / "p.tar.gz",
                           trust_pickle=True)
    x = _inputs(nf)
    with _loaded(result.artifact) as model:
        assert np.abs(model.run(x)[0] - obj.predict_proba(x)).max() <= ATOL


# ---- the CLI ----------------------------------------------------------------------------------
def _kiln(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(KILN), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def _error(res: subprocess.CompletedProcess, code: str) -> str:
    assert res.returncode == ERROR_CODES[code].exit_status, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and f"error[{code}]" in res.stderr, res.stderr
    return " ".join(res.stderr.split())


def test_cli_compile_and_run_rasp3b_with_neo_framework_name(models, tmp_path):
    _needs("rasp3b")
    path, obj, method, nf = models[1]["lgb_reg"]
    res = _kiln("compile", path, "--target", "rasp3b", "--framework", "LIGHTGBM", "-o",
                tmp_path / "a.tar.gz", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "verified (qemu-arm" in res.stderr and "lightgbm" in res.stderr
    x = _inputs(nf)
    np.save(tmp_path / "x.npy", x)
    res = _kiln("run", tmp_path / "a.tar.gz", "--input", f"data={tmp_path / 'x.npy'}", "-o",
                tmp_path / "y.npz", cwd=tmp_path)
    assert res.returncode == 0 and "qemu-arm" in res.stderr, res.stderr
    got = np.load(tmp_path / "y.npz")["output"]
    assert np.abs(got - obj.predict(x)).max() <= ATOL
    inspect = json.loads(_kiln("inspect", tmp_path / "a.tar.gz", "--json", cwd=tmp_path).stdout)
    assert inspect["runtime"]["kind"] == "trees" and inspect["framework"] == "lightgbm"


def test_kiln_bench_on_a_tree_artifact(compiled, tmp_path):
    result = compiled("xgb_multi", HOST)
    res = _kiln("bench", result.artifact, "--repeat", "5", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    bench = json.loads(res.stdout)
    assert bench["batch"] == 1 and bench["latency"]["p50_ms"] > 0


# ---- errors, with their codes -----------------------------------------------------------------
def test_pickle_needs_opt_in(models, tmp_path):
    root, _ = models
    with pytest.raises(KilnError) as info:
        compile_model(root / "rf_multi.joblib", target=HOST, output=tmp_path / "x.tar.gz")
    assert info.value.code == "untrusted_model" and "--trust-pickle" in info.value.hint
    text = _error(_kiln("compile", root / "rf_multi.joblib", "--target", HOST, "-o",
                        tmp_path / "x.tar.gz", cwd=tmp_path), "untrusted_model")
    assert "trust-pickle" in text and not (tmp_path / "x.tar.gz").exists()


@pytest.mark.parametrize("name, content", [
    ("bad.json", b'{"learner": {"gradient_booster": 3'),
    ("bad.txt", b"tree\nversion=v4\nnum_class=banana\n"),
    ("bad.ubj", b"{L\x00\x00learner garbage"),
    ("bad.model", b"binf\x00\x00\x00\x3f\x03\x00\x00\x00"),  # XGBoost legacy binary
])
def test_corrupt_model_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(KilnError) as info:
        compile_model(tmp_path / name, target=HOST, output=tmp_path / "x.tar.gz")
    assert info.value.code == "invalid_model", info.value
    assert name in info.value.message


def test_framework_flag_that_contradicts_the_file(models, tmp_path):
    path = models[1]["xgb_multi"][0]
    text = _error(_kiln("compile", path, "--target", HOST, "--framework", "lightgbm", "-o",
                        tmp_path / "x.tar.gz", cwd=tmp_path), "invalid_model")
    assert "LightGBM" in text


def test_wrong_feature_count_at_run_time(compiled, tmp_path):
    result = compiled("xgb_multi", HOST)
    with _loaded(result.artifact) as model:
        with pytest.raises(KilnError) as info:
            model.run(np.zeros((3, 5), dtype=np.float32))
    assert info.value.code == "invalid_input" and "[-1, 6]" in info.value.message
    np.save(tmp_path / "x.npy", np.zeros((3, 5), dtype=np.float32))
    text = _error(_kiln("run", result.artifact, "--input", f"data={tmp_path / 'x.npy'}", "-o",
                        tmp_path / "y.npz", cwd=tmp_path), "invalid_input")
    assert "[-1, 6]" in text
    # the C runtime checks too: the artifact's own runner, without Python in front
    folder = unpack(result.artifact, tmp_path / "a")
    proc = subprocess.run([str(folder / "kiln_run"), str(folder), "--input",
                           f"data={tmp_path / 'x.npy'}"], capture_output=True, text=True)
    assert proc.returncode == 1 and "6 float32 features" in proc.stderr, proc.stderr


def test_tree_model_on_a_target_without_a_linux_cpu(models, tmp_path):
    with pytest.raises(KilnError) as info:
        compile_model(models[1]["xgb_multi"][0], target="x86_win64", output=tmp_path / "x.tgz")
    assert info.value.code == "target_not_yet_supported" and "tree" in info.value.message


def test_input_shape_with_wrong_feature_count(models, tmp_path):
    opts = CompileOptions(input_shapes=parse_input_shapes({"data": [4, 9]}))
    with pytest.raises(KilnError) as info:
        compile_model(models[1]["xgb_multi"][0], target=HOST, output=tmp_path / "x.tgz",
                      options=opts)
    assert info.value.code == "shape_mismatch" and "[rows, 6]" in info.value.message
