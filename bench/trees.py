"""Compiled tree ensembles (Kiln) against the framework's own predict and treelite's GTIL.

    .venv/bin/python bench/trees.py [--rows 1,10000] [--repeat 30]

Models are trained here (seeded): an XGBoost multi-class booster (300 rounds x 3 classes, depth
6), a LightGBM regressor (300 trees, 31 leaves) and a scikit-learn random forest (100 trees,
depth 12). Each runtime runs in this process, interleaved round by round; the table gives
medians in ms and the speed-up of Kiln (framework ms / Kiln ms; above 1 means Kiln is faster).
Kiln's generated code runs on one thread; the frameworks use their defaults.
Writes bench/results/<date>-<host>-trees.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def train(root: Path) -> dict:
    import lightgbm as lgb
    import skops.io as sio
    import xgboost as xgb
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import RandomForestClassifier

    warnings.filterwarnings("ignore")
    xm, ym = make_classification(5000, 20, n_informative=10, n_classes=3, random_state=0)
    xr, yr = make_regression(5000, 20, random_state=0)
    boost = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 6,
                       "nthread": 2}, xgb.DMatrix(xm, ym), 300)
    boost.save_model(root / "xgb.json")
    gbm = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(xr, yr), 300)
    gbm.save_model(root / "lgb.txt")
    rf = RandomForestClassifier(100, max_depth=12, random_state=0).fit(xm, ym)
    sio.dump(rf, root / "rf.skops")
    return {"xgboost multi-class": (root / "xgb.json", lambda x: boost.predict(xgb.DMatrix(x))),
            "lightgbm regressor": (root / "lgb.txt", gbm.predict),
            "sklearn random forest": (root / "rf.skops", rf.predict_proba)}


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,10000")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    import treelite
    import treelite.gtil

    import kiln
    from kiln.compiler import compile_model

    rows_list = [int(r) for r in args.rows.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, (path, predict) in train(root).items():
            art = compile_model(path, target="ml_c5", output=root / f"{path.stem}.tar.gz")
            model = kiln.load(art.artifact)
            tl_model = _treelite(path)
            for rows in rows_list:
                x = np.random.default_rng(0).standard_normal((rows, 20)).astype(np.float32)
                row = {"model": name, "rows": rows,
                       "kiln_ms": median_ms(lambda: model.run(x), args.repeat),
                       "framework_ms": median_ms(lambda: predict(x), args.repeat),
                       "gtil_ms": median_ms(lambda: treelite.gtil.predict(tl_model, x),
                                            args.repeat)}
                results.append(row)
                print(f"| {name} | {rows} | {row['framework_ms']:.3f} | {row['gtil_ms']:.3f} | "
                      f"{row['kiln_ms']:.3f} | {row['framework_ms'] / row['kiln_ms']:.1f}x |",
                      flush=True)
            model.close()
    out = HERE / "results" / f"{dt.date.today()}-{platform.machine()}-trees.json"
    out.write_text(json.dumps({"host": platform.node(), "results": results}, indent=2) + "\n")


def _treelite(path: Path):
    import treelite

    if path.suffix == ".json":
        return treelite.frontend.load_xgboost_model(str(path))
    if path.suffix == ".txt":
        return treelite.frontend.load_lightgbm_model(str(path))
    import skops.io as sio

    return treelite.sklearn.import_model(sio.load(path, trusted=sio.get_untrusted_types(file=str(path))))


if __name__ == "__main__":
    print("| model | rows | framework ms | treelite GTIL ms | Kiln ms | Kiln speed-up |")
    print("|---|---|---|---|---|---|")
    main()
