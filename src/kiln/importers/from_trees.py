"""Tree ensembles: XGBoost (.json, .ubj, legacy binary), LightGBM (.txt), scikit-learn (skops;
pickle/joblib only with ``trust_pickle``), loaded with treelite 4.

The result is an :class:`ImportedModel` whose ``mod`` is a :class:`TreeEnsemble` (the treelite
model plus what the generated code and the accuracy gate need). The artifact takes one float32
input ``data`` of shape [rows, features] (rows -1 = any count, or fixed by --input-shape) and
returns what the framework returns: ``Booster.predict`` for XGBoost / LightGBM files,
``predict_proba`` for scikit-learn classifiers, ``predict`` for regressors and
``score_samples`` for IsolationForest.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.signature import ModelSignature, TensorInfo

TREE_FRAMEWORKS = ("xgboost", "lightgbm", "sklearn")
_ALIASES = {"xgboost": "xgboost", "lightgbm": "lightgbm", "sklearn": "sklearn",
            "scikit-learn": "sklearn", "scikit_learn": "sklearn", "scikitlearn": "sklearn"}
_SKLEARN_SUPPORTED = (
    "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
    "ExtraTreesRegressor", "GradientBoostingClassifier", "GradientBoostingRegressor",
    "HistGradientBoostingClassifier", "HistGradientBoostingRegressor", "IsolationForest")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav")
_INSTALL = "pip install 'kilnml[trees]'"
INPUT_NAME, OUTPUT_NAME = "data", "output"


@dataclass(frozen=True)
class TreeEnsemble:
    """A loaded tree ensemble and how its outputs map to the framework's."""

    model: Any                 # treelite.Model
    estimator: Any             # the framework object the accuracy gate runs (None: treelite GTIL)
    method: str                # "predict", "predict_proba" or "score_samples"
    kind: str                  # e.g. "xgboost.Booster", "sklearn.ensemble.RandomForestClassifier"
    expand_binary: bool = False  # one probability p -> [1 - p, p] (predict_proba)
    negate: bool = False         # treelite's IsolationForest score is -score_samples
    category_rule: str = "treelite"  # "lightgbm": categories truncate toward zero (see tree_c)


def tree_framework(name: str | None) -> str | None:
    """The tree framework a --framework value names (Neo's upper-case enum too), else None."""
    return _ALIASES.get(str(name).strip().lower()) if name else None


def sniff(path: Path) -> str | None:
    """Which tree format ``path`` holds, from its content: a framework name, "pickle" or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return "sklearn" if "schema.json" in zf.namelist() else None
    text = head.lstrip()
    if text.startswith(b"tree\n") or text.startswith(b"tree\r\n"):
        return "lightgbm"
    if text.startswith(b"{") and b"learner" in head:
        return "xgboost"       # JSON, or UBJSON (which also starts with '{')
    if head[:1] == b"\x80" or path.suffix.lower() in _PICKLE_SUFFIXES:
        return "pickle"
    if path.suffix.lower() in (".model", ".deprecated") or head[:4] == b"binf":
        return "xgboost"       # XGBoost's legacy binary format (before 1.0; gone in 3.0)
    return None


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise KilnError("invalid_model", f"{module} is needed to import this tree model but is "
                        "not installed", hint=_INSTALL) from None


def _bad(path: Path, what: str, exc: Exception, hint: str) -> KilnError:
    last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return KilnError("invalid_model", f"{path.name} is not a readable {what}: {last[:300]}",
                     hint=hint)


def _load_xgboost(path: Path) -> TreeEnsemble:
    treelite = _need("treelite")
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    # JSON: '{' then whitespace and '"'; UBJSON: '{' then a type marker (L, i, U, $, #)
    fmt = "json" if head[1:].lstrip()[:1] in (b'"', b"}") else "ubjson"
    legacy = not head.startswith(b"{")
    try:
        if legacy:
            model = treelite.frontend.load_xgboost_model_legacy_binary(str(path))
        else:
            model = treelite.frontend.load_xgboost_model(str(path), format_choice=fmt)
    except Exception as exc:
        raise _bad(path, "XGBoost model", exc, "save it with Booster.save_model('m.json')") \
            from None
    booster = None
    if not legacy:
        xgb = _need("xgboost")
        booster = xgb.Booster(model_file=str(path))
    return TreeEnsemble(model, booster, "predict", "xgboost.Booster")


def _load_lightgbm(path: Path) -> TreeEnsemble:
    treelite, lgb = _need("treelite"), _need("lightgbm")
    try:
        model = treelite.frontend.load_lightgbm_model(str(path))
        booster = lgb.Booster(model_file=str(path))
    except Exception as exc:
        raise _bad(path, "LightGBM model", exc, "save it with Booster.save_model('m.txt')") \
            from None
    return TreeEnsemble(model, booster, "predict", "lightgbm.Booster", category_rule="lightgbm")


def _load_skops(path: Path):
    sio = _need("skops.io")
    try:
        untrusted = sio.get_untrusted_types(file=str(path))
    except Exception as exc:
        raise _bad(path, "skops file", exc, "save it with skops.io.dump(model, 'm.skops')") \
            from None
    foreign = [t for t in untrusted if not t.startswith(("sklearn.", "numpy.", "builtins."))]
    if foreign:
        raise KilnError("untrusted_model", f"{path.name} holds types outside scikit-learn and "
                        f"numpy: {', '.join(foreign[:5])}", hint="save only the fitted "
                        "scikit-learn estimator with skops.io.dump")
    try:
        return sio.load(str(path), trusted=untrusted)
    except Exception as exc:
        raise _bad(path, "skops file", exc, "save it with skops.io.dump(model, 'm.skops')") \
            from None


def _load_pickle(path: Path, trust_pickle: bool):
    if not trust_pickle:
        raise KilnError("untrusted_model", f"{path.name} is a pickle/joblib file; loading it "
                        "runs any code it contains, so Kiln does not unpickle by default",
                        hint="save the model with skops.io.dump (scikit-learn) or "
                        "Booster.save_model (XGBoost .json, LightGBM .txt); or, if you trust "
                        "the file, pass --trust-pickle (trust_pickle=True)")
    joblib = _need("joblib")
    try:
        return joblib.load(path)
    except Exception as exc:
        raise _bad(path, "pickle/joblib file", exc, "is it a pickled model?") from None


def _from_estimator(path: Path, est) -> TreeEnsemble:
    """A scikit-learn estimator (or an XGBoost/LightGBM scikit-learn wrapper) -> TreeEnsemble."""
    treelite = _need("treelite")
    name = type(est).__name__
    if hasattr(est, "get_booster"):        # xgboost.XGBModel
        booster = est.get_booster()
        return TreeEnsemble(treelite.frontend.from_xgboost(booster), booster, "predict",
                            "xgboost.Booster")
    if type(est).__module__.startswith("lightgbm") and hasattr(est, "booster_"):
        booster = est.booster_
        return TreeEnsemble(treelite.frontend.from_lightgbm(booster), booster, "predict",
                            "lightgbm.Booster", category_rule="lightgbm")
    if name not in _SKLEARN_SUPPORTED:
        raise KilnError("invalid_model", f"{path.name} holds a {type(est).__module__}.{name}, "
                        "which is not a supported tree ensemble",
                        hint=f"supported scikit-learn models: {', '.join(_SKLEARN_SUPPORTED)}")
    try:
        model = treelite.sklearn.import_model(est)
    except Exception as exc:
        raise _bad(path, f"fitted {name}", exc, "fit the model before saving it") from None
    kind = f"{type(est).__module__.split('.')[0]}.{name}"
    if name == "IsolationForest":
        return TreeEnsemble(model, est, "score_samples", kind, negate=True)
    if name.endswith("Classifier"):
        binary = len(getattr(est, "classes_", ())) == 2
        single = int(model.get_header_accessor().get_field("num_class")[0]) == 1
        return TreeEnsemble(model, est, "predict_proba", kind, expand_binary=binary and single)
    return TreeEnsemble(model, est, "predict", kind)


def _signature(ensemble: TreeEnsemble, input_shapes: dict | None) -> tuple[ModelSignature, bool]:
    from kiln.importers.tree_header import check_supported, read_header

    header = read_header(ensemble.model)
    check_supported(header)
    rows = -1
    if input_shapes:
        if len(input_shapes) != 1:
            raise KilnError("shape_mismatch", f"a tree model has one input ({INPUT_NAME!r}), "
                            f"--input-shape names {sorted(input_shapes)}",
                            hint=f'--input-shape \'{{"{INPUT_NAME}": [rows, '
                                 f'{header.num_feature}]}}\'')
        shape = list(next(iter(input_shapes.values())))
        if len(shape) != 2 or shape[1] != header.num_feature:
            raise KilnError("shape_mismatch", f"the model takes [rows, {header.num_feature}] "
                            f"float32 features, --input-shape gives {shape}",
                            hint=f'--input-shape \'{{"{INPUT_NAME}": [rows, '
                                 f'{header.num_feature}]}}\'')
        rows = shape[0]
    per_row = 2 if ensemble.expand_binary else header.slots
    out = (rows,) if per_row == 1 else (rows, per_row)
    sig = ModelSignature((TensorInfo(INPUT_NAME, (rows, header.num_feature), "float32"),),
                         (TensorInfo(OUTPUT_NAME, out, "float32"),))
    return sig, not input_shapes


def import_trees(path: Path, framework: str | None, *, input_shapes: dict | None = None,
                 trust_pickle: bool = False) -> ImportedModel:
    """Import a tree-ensemble file; ``framework`` None = detect from the content."""
    found = sniff(path)
    fw = tree_framework(framework) or (found if found in TREE_FRAMEWORKS else None)
    if found == "pickle" or (fw == "sklearn" and found != "sklearn"):
        ensemble = _from_estimator(path, _load_pickle(path, trust_pickle))
    elif fw == "sklearn":
        ensemble = _from_estimator(path, _load_skops(path))
    elif fw == "xgboost":
        ensemble = _load_xgboost(path)
    elif fw == "lightgbm":
        ensemble = _load_lightgbm(path)
    else:
        raise KilnError("invalid_model", f"{path.name} is not a tree-ensemble file Kiln knows",
                        hint="give an XGBoost .json/.ubj, a LightGBM .txt or a skops file")
    signature, derived = _signature(ensemble, input_shapes)
    framework_name = ensemble.kind.split(".")[0]
    return ImportedModel(mod=ensemble, signature=signature, framework=framework_name,
                         source=path, derived_shapes=derived)


def describe(ensemble: TreeEnsemble) -> dict:
    """Facts for the manifest's ``source`` entry."""
    from kiln.importers.tree_header import read_header

    h = read_header(ensemble.model)
    return {"model_kind": ensemble.kind, "reference_method": ensemble.method,
            "num_tree": int(ensemble.model.num_tree), "num_feature": h.num_feature,
            "num_target": h.num_target, "num_class": list(h.num_class),
            "postprocessor": h.postprocessor,
            "treelite_version": _version("treelite"),
            "framework_version": _version({"xgboost": "xgboost", "lightgbm": "lightgbm"}
                                          .get(ensemble.kind.split(".")[0], "scikit-learn"))}


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    for name in (dist, f"{dist}-cpu"):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


__all__ = ["TREE_FRAMEWORKS", "TreeEnsemble", "describe", "import_trees", "sniff",
           "tree_framework"]
