"""Post-hoc detectors (mchad.evaluation.detectors): scores against pytorch-ood's own model-based API,
AUROC rows against scikit-learn, applicability, config and command-line behaviour."""

from __future__ import annotations

import functools
import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from omegaconf import OmegaConf
from pytorch_ood.detector import (
    ASH,
    DICE,
    GEN,
    KNN,
    ODIN,
    RMD,
    SCALE,
    EnergyBased,
    Entropy,
    Mahalanobis,
    MaxLogit,
    MaxSoftmax,
    ReAct,
    ViM,
)
from sklearn.metrics import roc_auc_score

from mchad.config import CONFIG_DIR, compose, options
from mchad.data.augment import BatchAugment
from mchad.data.datamodule import OODDataModule
from mchad.errors import ConfigError
from mchad.evaluation.detectors import (
    SELECTION_FILE,
    DetectorBank,
    DetectorSpec,
    check_detectors,
    fitted,
    representations,
)
from mchad.evaluation.evaluator import evaluate
from mchad.evaluation.oracle import sklearn_metrics
from mchad.methods.mchad import MCHAD
from mchad.methods.softmax import Softmax
from mchad.module import OODModule
from mchad.nn.wrn import WideResNet
from mchad.train import build_run, evaluate_checkpoint, train

N_CLASSES = 6
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
DETECTORS = options("detectors")


@functools.cache
def all_specs() -> dict[str, DetectorSpec]:
    """Every detector of config/detectors as the project composes it (odin's norm_std is data.std)."""
    cfg = compose(["experiment=quickstart", "detectors=all", f"data.std=[{','.join(map(str, STD))}]"])
    return {name: DetectorSpec.from_config(name, node) for name, node in cfg.detectors.items()}


@pytest.fixture(scope="module")
def fixed_model():
    """A seeded WRN-10-1 softmax classifier (logits = backbone output), ID training and test images."""
    torch.manual_seed(0)
    backbone = WideResNet(depth=10, widen_factor=1, drop_rate=0.0, n_outputs=N_CLASSES)
    module = OODModule(backbone, Softmax(N_CLASSES, N_CLASSES), BatchAugment(MEAN, STD, 0, False)).eval()
    generator = torch.Generator().manual_seed(1)
    train_x = torch.randint(0, 256, (120, 32, 32, 3), dtype=torch.uint8, generator=generator)
    train_y = torch.arange(120) % N_CLASSES
    test_x = torch.randint(0, 256, (48, 32, 32, 3), dtype=torch.uint8, generator=generator)
    test_x[24:] //= 3  # darker images: the "OOD" half
    return module, train_x, train_y, test_x


def reference_detector(name: str, spec: DetectorSpec, backbone: WideResNet):
    """pytorch-ood's detector driven through its own model-based API (it runs the network itself)."""
    hp = spec.hyperparameters
    fc = backbone.fc
    pooled_as_maps = lambda x: backbone.features(x)[:, :, None, None]
    head = lambda maps: fc(maps.mean(dim=(2, 3)))
    return {
        "msp": lambda: MaxSoftmax(backbone, **hp),
        "maxlogit": lambda: MaxLogit(backbone),
        "energy": lambda: EnergyBased(backbone, **hp),
        "entropy": lambda: Entropy(backbone),
        "gen": lambda: GEN(backbone, **hp),
        "mahalanobis": lambda: Mahalanobis(backbone.features),
        "rmd": lambda: RMD(backbone.features),
        "knn": lambda: KNN(backbone.features, **hp),
        "vim": lambda: ViM(backbone.features, w=fc.weight, b=fc.bias, **hp),
        "dice": lambda: DICE(backbone.features, w=fc.weight, b=fc.bias, **hp),
        "react": lambda: ReAct(pooled_as_maps, head, **hp),
        "ash": lambda: ASH(backbone.feature_maps, head, **hp),
        "scale": lambda: SCALE(pooled_as_maps, head, **hp),
        "odin": lambda: ODIN(backbone, **hp),
    }[name]()


def oracle_difference(name: str, fixed_model) -> tuple[float, torch.Tensor]:
    """Max |project score - pytorch-ood score| of detector ``name`` on the fixed model, and the project's scores."""
    module, train_x, train_y, test_x = fixed_model
    spec = all_specs()[name]
    x_train, x_test = (module.augment(x, train=False) for x in (train_x, test_x))
    with torch.no_grad():
        train = representations(module.backbone, module.method, x_train, {"features", "logits"})[1]
    [ours] = fitted([spec], module, {**train, "labels": train_y}, torch.device("cpu"))
    project = DetectorBank([ours]).score_loaders(module, [[(test_x, torch.zeros(len(test_x)))]], torch.device("cpu"))
    project = project[0][name]

    reference = reference_detector(name, spec, module.backbone)
    if reference.requires_fit:
        reference.to("cpu").fit([(x_train, train_y)])
    expected = reference.predict(x_test).detach()
    assert project.shape == expected.shape
    return float((project.double() - expected.double()).abs().max()), project


@pytest.mark.parametrize("name", DETECTORS)
def test_scores_equal_pytorch_ood_and_auroc_equals_sklearn(name, fixed_model):
    difference, scores = oracle_difference(name, fixed_model)
    assert difference <= 1e-5 * max(1.0, float(scores.abs().max()))
    assert torch.isfinite(scores).all()

    id_scores, ood_scores = scores[:24], scores[24:]
    [row] = evaluate({"id": {name: id_scores}, "ood": {name: ood_scores}}, "id", torch.zeros(24), torch.zeros(24), {})
    labels = np.r_[np.zeros(24), np.ones(24)]
    assert row["score"] == name
    assert row["AUROC"] == pytest.approx(roc_auc_score(labels, scores.double().numpy()), abs=1e-12)


def test_method_scores_of_the_same_name_equal_the_detectors(fixed_model):
    """Softmax's own msp / maxlogit / energy rows stand; the detectors would give identical values."""
    module, _, _, test_x = fixed_model
    specs = all_specs()
    bank = DetectorBank(fitted([specs[n] for n in ("msp", "maxlogit", "energy")], module, {}, torch.device("cpu")))
    with torch.no_grad():
        x = module.augment(test_x, train=False)
        _z, detector_scores = bank.score_batch(module.backbone, module.method, x)
        own = module.method.scores(module.method(module.backbone(x)))
    for name in ("msp", "maxlogit", "energy"):
        assert torch.equal(detector_scores[name], own[name]), name


def test_detector_pass_gives_the_plain_embedding(fixed_model):
    module, _, _, test_x = fixed_model
    with torch.no_grad():
        x = module.augment(test_x, train=False)
        z, _ = representations(module.backbone, module.method, x, {"features", "feature_maps"})
        assert torch.equal(z, module.backbone(x))


def test_inapplicable_detector_is_refused_before_data(run_config, tmp_path):
    cfg, run_dir = run_config("experiment=quickstart", *TINY, "detectors=[vim]")
    with pytest.raises(ConfigError) as error:
        build_run(cfg, run_dir)
    message = str(error.value)
    assert message.startswith(
        "detector vim does not apply to method mchad: it needs the weights of a linear class head"
    )
    assert "\n" not in message
    assert not (tmp_path / "data").exists()  # no data set was prepared


def test_all_skips_what_does_not_apply(run_config, caplog):
    cfg, _ = run_config("experiment=quickstart", *TINY, "detectors=all")
    assert cfg.detectors_all is True
    assert sorted(cfg.detectors) == DETECTORS
    method = MCHAD(N_CLASSES, 8)
    with caplog.at_level("INFO"):
        specs = check_detectors(cfg, "mchad", method, WideResNet(10, 1, 0.0, 8))
    assert [s.name for s in specs] == ["knn", "mahalanobis", "rmd"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("detectors=all: skipping")]
    assert len(skipped) == len(DETECTORS) - 3


def test_softmax_own_scores_stand(run_config):
    cfg, _ = run_config("experiment=quickstart", *TINY, "method=softmax", "method.n_embedding=6", "detectors=all")
    specs = check_detectors(cfg, "softmax", Softmax(6, 6), WideResNet(10, 1, 0.0, 6))
    assert sorted(s.name for s in specs) == sorted(set(DETECTORS) - {"msp", "maxlogit", "energy"})


def test_unknown_detector_lists_the_choices():
    with pytest.raises(ConfigError, match=r"^unknown detectors 'nosuch': choose one of ash, dice, .*, vim, all$"):
        compose(["experiment=quickstart", "detectors=[knn,nosuch]"])


def test_a_detector_from_another_config_dir(tmp_path, run_config):
    folder = tmp_path / "more" / "detectors"
    folder.mkdir(parents=True)
    (folder / "knn3.yaml").write_text(
        "knn3:\n  detector:\n    _target_: pytorch_ood.detector.KNN\n    _partial_: true\n    k: 3\n"
        "  input: embedding\n  search: {k: [1, 3]}\n"
    )
    cfg = compose(["experiment=quickstart", "detectors=[knn3,rmd]"], config_dirs=[tmp_path / "more"])
    specs = check_detectors(cfg, "mchad", MCHAD(N_CLASSES, 8), WideResNet(10, 1, 0.0, 8))
    assert [(s.name, s.input, s.hyperparameters) for s in specs] == [
        ("knn3", "embedding", {"k": 3}),
        ("rmd", "features", {}),
    ]
    everything = compose(["experiment=quickstart", "detectors=all"], config_dirs=[tmp_path / "more"])
    assert "knn3" in everything.detectors


def test_a_wrong_input_is_refused():
    cfg = compose(["experiment=quickstart", "detectors=[knn]", "detectors.knn.input=logits"])
    with pytest.raises(ConfigError, match=r"^detectors.knn.input=logits does not fit KNN, which consumes features"):
        check_detectors(cfg, "mchad", MCHAD(N_CLASSES, 8), WideResNet(10, 1, 0.0, 8))


def test_without_pytorch_ood_one_line_says_what_to_install(monkeypatch):
    cfg = compose(["experiment=quickstart", "detectors=[knn]"])
    monkeypatch.setitem(sys.modules, "pytorch_ood", None)
    monkeypatch.setitem(sys.modules, "pytorch_ood.api", None)
    with pytest.raises(ConfigError, match=r"pip install 'mchad\[detectors\]'$"):
        check_detectors(cfg, "mchad", MCHAD(N_CLASSES, 8), WideResNet(10, 1, 0.0, 8))


def test_every_detector_yaml_is_in_the_package():
    assert sorted(p.stem for p in (Path(CONFIG_DIR) / "detectors").glob("*.yaml")) == DETECTORS
    assert {"msp", "maxlogit", "energy", "entropy", "gen", "mahalanobis", "rmd", "knn", "vim", "dice", "react",
            "ash", "scale", "odin"} <= set(DETECTORS)  # fmt: skip


def test_every_detector_is_in_the_docs_table():
    table = (Path(__file__).resolve().parents[1] / "docs" / "detectors.md").read_text()
    assert [name for name in DETECTORS if f"| `{name}` |" not in table] == []


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory):
    """A tiny softmax quickstart run with four detectors, one of them a gradient detector."""
    tmp = tmp_path_factory.mktemp("detectors")
    run_dir = tmp / "run"
    overrides = ["experiment=quickstart", *TINY, "method=softmax", "method.n_embedding=6", "logger=none",
                 f"paths.data_dir={tmp / 'data'}", "detectors=[knn,mahalanobis,ash,odin,msp]",
                 "detectors.knn.detector.k=5", "detectors_fit_samples=64"]  # fmt: skip
    reads = []
    with pytest.MonkeyPatch.context() as patch:  # count what reads the test sets
        test_dataloader = OODDataModule.test_dataloader
        patch.setattr(OODDataModule, "test_dataloader", lambda self: reads.append(1) or test_dataloader(self))
        rows = train(compose(overrides, output_dir=run_dir), run_dir)
    return tmp, run_dir, pd.DataFrame(rows), len(reads)


def test_one_pass_over_the_test_sets_odin_included(detector_run):
    assert detector_run[3] == 1


def test_rows_per_detector_and_ood_set(detector_run):
    _, run_dir, rows, _ = detector_run
    assert set(rows.score) == {"msp", "maxlogit", "energy", "knn", "mahalanobis", "ash", "odin"}
    assert rows.groupby("ood_dataset").score.apply(list).map(len).eq(7).all()
    assert list(rows.ood_dataset) == sorted(rows.ood_dataset, key=["digits-ood", "gaussian", "uniform"].index)
    for _, group in rows.groupby("ood_dataset"):  # odin is scored on the test pass's batches
        assert group.n_id.nunique() == 1 and group.n_ood.nunique() == 1 and group.Accuracy.nunique() == 1
    assert len(list((run_dir / "detectors").glob("fit-*.pt"))) == 1


def test_rows_equal_pytorch_ood_fitted_on_the_capped_training_split_and_sklearn(detector_run):
    """Each detector row's numbers, recomputed here: pytorch-ood's detector on the tested weights, fitted through
    its own API on the ``detectors_fit_samples`` images of the ID training split (un-augmented) that
    ``id_train_split`` samples, scoring the batches the test pass read; the four metrics by scikit-learn
    (mchad.evaluation.oracle). Fitting on the whole split or on augmented images gives other numbers."""
    _, run_dir, rows, _ = detector_run
    cfg = OmegaConf.load(run_dir / "config.yaml")
    run = build_run(cfg, run_dir, evaluation_only=True)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    run.module.load_state_dict(state["state_dict"])
    module, datamodule = run.module.eval(), run.datamodule
    datamodule.setup("test")
    backbone = module.backbone

    def batches(loader, limit=None):
        return [(module.augment(x, train=False), y) for x, y in itertools.islice(loader, limit)]

    fit_split = datamodule.id_train_split(cfg.detectors_fit_samples)
    assert len(fit_split) == 64 < len(datamodule.id_train_split()), "the case this test needs: a capped split"
    train_batches = batches(datamodule.eval_loader(fit_split))
    limit = cfg.trainer.limit_test_batches
    test_sets = dict(zip(datamodule.test_set_names, (batches(ld, limit) for ld in datamodule.test_dataloader())))
    id_name = datamodule.test_set_names[0]
    for name in ("knn", "mahalanobis", "ash", "odin"):
        reference = reference_detector(name, DetectorSpec.from_config(name, cfg.detectors[name]), backbone)
        if reference.requires_fit:
            reference.fit(train_batches)
        scores = {s: torch.cat([reference.predict(x).detach() for x, _ in b]).double() for s, b in test_sets.items()}
        for ood_name, ood in scores.items():
            if ood_name == id_name:
                continue
            [row] = rows[(rows.score == name) & (rows.ood_dataset == ood_name)].to_dict("records")
            expected = sklearn_metrics(scores[id_name].numpy(), ood.numpy())
            assert (row["n_id"], row["n_ood"]) == (len(scores[id_name]), len(ood)), row
            for metric in ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95"):
                assert row[metric] == pytest.approx(expected[metric], abs=1e-6), (name, ood_name, metric)


def test_eval_reuses_the_fit_representations(detector_run, monkeypatch):
    """On a run whose config.yaml predates detectors (no detector keys), with the kept representations."""
    tmp, run_dir, rows, _ = detector_run
    old_run = tmp / "old-run"
    for part in ("checkpoints", "detectors"):
        shutil.copytree(run_dir / part, old_run / part)
    saved = OmegaConf.load(run_dir / "config.yaml")
    for key in ("detectors", "detectors_select", "detectors_fit_samples", "detectors_all"):
        saved.pop(key)
    OmegaConf.save(saved, old_run / "config.yaml")
    monkeypatch.setattr(OODDataModule, "id_train_split", lambda *a, **k: pytest.fail("no second training pass"))
    eval_dir = tmp / "eval"
    cfg = compose([f"ckpt_path={old_run / 'checkpoints' / 'best.ckpt'}", "logger=none", "detectors_fit_samples=64",
                   "detectors=[mahalanobis,knn]", "detectors.knn.detector.k=5"], output_dir=eval_dir)  # fmt: skip
    evaluated = pd.DataFrame(evaluate_checkpoint(cfg, eval_dir))
    columns = ["ood_dataset", "score", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95", "n_id", "n_ood"]
    trained = rows[rows.score.isin(evaluated.score)][columns]
    pd.testing.assert_frame_equal(*(f.sort_values(["ood_dataset", "score"]).reset_index(drop=True)
                                    for f in (evaluated[columns], trained)))  # fmt: skip


@pytest.mark.slow
def test_select_on_validation_records_the_choice_and_tests_it(detector_run):
    """The choice is recorded, and the test rows are those of the chosen values: equal to an evaluation with the
    chosen values set by hand."""
    tmp, run_dir, _, _ = detector_run
    eval_dir = tmp / "select"
    evaluation = [f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", "logger=none", "detectors=[knn,react]"]
    cfg = compose([*evaluation, "detectors_select=val", "detectors.knn.search={k:[1,3,100]}"], output_dir=eval_dir)
    selected = pd.DataFrame(evaluate_checkpoint(cfg, eval_dir))
    record = json.loads((eval_dir / SELECTION_FILE).read_text())
    for name, sizes in (("knn", 2), ("react", 4)):  # k=100 exceeds the 64 fitting images: left out
        entry = record["detectors"][name]
        assert len(entry["candidates"]) == sizes
        best = max(entry["candidates"], key=lambda c: c["AUROC"])
        assert entry["values"] == best["values"] and entry["AUROC"] == best["AUROC"]
    assert record["n_val_id"] > 0 and record["n_val_ood"] > 0
    chosen = {name: record["detectors"][name]["values"] for name in ("knn", "react")}
    assert chosen["knn"] != {"k": cfg.detectors.knn.detector.k}, "the case this test needs: a choice unlike the yaml's"
    by_hand = [f"detectors.{name}.detector.{key}={value}" for name, values in chosen.items() for key, value in
               values.items()]  # fmt: skip
    fixed_dir = tmp / "fixed"
    fixed = pd.DataFrame(evaluate_checkpoint(compose([*evaluation, *by_hand], output_dir=fixed_dir), fixed_dir))
    columns = ["ood_dataset", "score", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95", "n_id", "n_ood"]
    pd.testing.assert_frame_equal(*(f[columns].sort_values(["ood_dataset", "score"]).reset_index(drop=True)
                                    for f in (selected, fixed)))  # fmt: skip


def test_a_precision_alias_fits_as_the_test_pass_runs(tmp_path):
    """``trainer.precision=bf16`` is Lightning's bf16-mixed: the detectors fit on representations of the same
    autocast as the test pass, so both spellings give the same rows."""
    rows = {}
    for precision in ("bf16", "bf16-mixed"):
        run_dir = tmp_path / precision
        overrides = ["experiment=quickstart", *TINY, "method=softmax", "method.n_embedding=6", "logger=none",
                     f"paths.data_dir={tmp_path / 'data'}", f"trainer.precision={precision}", "seed=3",
                     "detectors=[mahalanobis]", "detectors_fit_samples=64"]  # fmt: skip
        rows[precision] = pd.DataFrame(train(compose(overrides, output_dir=run_dir), run_dir)).drop(columns="run_dir")
    pd.testing.assert_frame_equal(rows["bf16"], rows["bf16-mixed"])
