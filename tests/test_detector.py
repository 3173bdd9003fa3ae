"""The saved detector: scorer state, thresholds, the file, the score command, Python composition."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from ood_nolabels.config import compose
from ood_nolabels.core.ood_metrics import ood_metrics
from ood_nolabels.core.search import search_backend
from ood_nolabels.engine.evaluation import OODEvaluation
from ood_nolabels.inference.detector import Detector, without_pretrained_weights
from ood_nolabels.inference.inputs import batches_within, image_paths
from ood_nolabels.inference.thresholds import threshold_keeping
from ood_nolabels.methods.base import build_detector
from ood_nolabels.scorers.knn import KNNScorer
from ood_nolabels.scorers.mahalanobis import MahalanobisScorer
from ood_nolabels.train import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "scorer",
    [
        KNNScorer(k=1, metric="cosine"),
        KNNScorer(k=3, metric="l2", use_faiss=False),
        MahalanobisScorer(shrinkage=0.1),
    ],
    ids=["knn-cosine-faiss", "knn-l2-torch", "mahalanobis"],
)
def test_a_restored_scorer_scores_exactly_as_the_fitted_one(scorer):
    torch.manual_seed(0)
    train, test = torch.randn(200, 12), torch.randn(30, 12) * 2
    fitted = scorer.fit(train, torch.arange(200) % 3)
    restored = type(scorer)(**vars_of(scorer)).load_state_dict(fitted.state_dict())
    assert torch.equal(restored.score(test), fitted.score(test))


def vars_of(scorer):
    if isinstance(scorer, KNNScorer):
        return dict(k=scorer.k, metric=scorer.metric, use_faiss=scorer.use_faiss)
    return dict(shrinkage=scorer.shrinkage)


def test_scorer_state_errors():
    with pytest.raises(RuntimeError, match="before fit"):
        KNNScorer().state_dict()
    with pytest.raises(RuntimeError, match="before fit"):
        MahalanobisScorer().state_dict()
    with pytest.raises(ValueError, match="expected \\['bank'\\]"):
        KNNScorer().load_state_dict({"means": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="do not fit together"):
        MahalanobisScorer().load_state_dict({"means": torch.zeros(2, 3), "precision": torch.eye(4)})


@pytest.mark.parametrize(
    "device, use_faiss, faiss_gpu, expected",
    [
        ("cpu", True, False, "faiss"),
        ("cpu", True, True, "faiss"),  # CPU features stay with the exact CPU index
        ("cpu", False, True, "torch"),
        ("cuda", True, True, "faiss-gpu"),
        ("cuda", True, False, "torch"),  # faiss-cpu installed: search on the GPU with torch
        ("cuda", False, True, "torch"),
    ],
)
def test_knn_search_runs_where_the_features_live(device, use_faiss, faiss_gpu, expected):
    assert search_backend(torch.device(device), use_faiss, faiss_gpu) == expected


def test_threshold_keeps_the_requested_fraction_of_normal_scores():
    scores = torch.randperm(100).float()  # 0..99 in random order
    assert threshold_keeping(scores, 0.95) == 94.0  # 95 of 100 at or below, not 96
    assert threshold_keeping(scores, 1.0) == 99.0
    assert threshold_keeping(torch.arange(20.0), 0.95) == 18.0  # ceil(19) - 1
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        threshold_keeping(scores, 0.0)


def test_batches_never_span_two_input_groups():
    assert batches_within([5, 3], 2) == [[0, 1], [2, 3], [4], [5, 6], [7]]
    assert batches_within([4], 4) == [[0, 1, 2, 3]]


def test_loading_never_asks_for_pretrained_weights():
    timm = {"_target_": "x.TimmBackbone", "name": "resnet50", "pretrained": True}
    assert without_pretrained_weights(timm | {"checkpoint_path": "w.pth"}) == timm | {
        "pretrained": False,
        "checkpoint_path": None,
    }
    clip = {"_target_": "x.OpenClipBackbone", "pretrained": "openai"}
    assert without_pretrained_weights(clip)["pretrained"] is None


def test_image_paths_expand_folders_and_name_what_is_missing(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/2.png", "a/sub/1.jpg", "a/notes.txt", "b.png"):
        (tmp_path / name).touch()
    assert image_paths([tmp_path / "b.png", tmp_path / "a"]) == [
        tmp_path / "b.png",
        tmp_path / "a" / "2.png",
        tmp_path / "a" / "sub" / "1.jpg",
    ]
    with pytest.raises(FileNotFoundError, match="nowhere.png does not exist"):
        image_paths([tmp_path / "nowhere.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files under"):
        image_paths([tmp_path / "empty"])


def small_detector() -> tuple[Detector, list[Image.Image]]:
    """A SmallCNN detector with random weights, unusual preprocessing, both scorers fitted."""
    config = {"_target_": "ood_nolabels.models.small_cnn.SmallCNNBackbone", "width": 4}
    torch.manual_seed(0)
    backbone = instantiate(config).eval()
    backbone.mean, backbone.image_size = (0.2, 0.4, 0.6), 12  # must survive the round trip
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)) for _ in range(40)]
    with torch.no_grad():
        features = backbone(torch.stack([backbone.transform()(i) for i in images]))
    scorer_configs = {
        "knn": {"_target_": "ood_nolabels.scorers.knn.KNNScorer", "k": 2},
        "mahalanobis": {"_target_": "ood_nolabels.scorers.mahalanobis.MahalanobisScorer"},
    }
    labels = torch.arange(30) % 3
    scorers = {n: instantiate(c).fit(features[:30], labels) for n, c in scorer_configs.items()}
    normal = {n: s.score(features[30:]) for n, s in scorers.items()}
    detector = Detector(backbone, config, scorers, scorer_configs, normal, labels, 3)
    return detector, images


def test_a_saved_detector_loads_and_scores_exactly_as_before(tmp_path):
    detector, images = small_detector()
    before = detector.score(images[30:])
    assert set(before) == {"knn", "mahalanobis"}
    assert torch.equal(before["knn"], detector.normal_test_scores["knn"])

    detector.save(tmp_path / "detector.pt")
    loaded = Detector.load(tmp_path, device="cpu")  # a run directory works too
    assert loaded.backbone.mean == (0.2, 0.4, 0.6) and loaded.backbone.image_size == 12
    assert loaded.num_clusters == 3 and torch.equal(loaded.pseudo_labels, torch.arange(30) % 3)
    after = loaded.score(images[30:])
    for name in before:
        assert torch.equal(after[name], before[name])
    assert loaded.thresholds() == detector.thresholds()
    flags = loaded.is_ood(after)
    assert int(flags["knn"].sum()) == 0  # the normal test images themselves: 95 % kept, ties


def test_the_detector_keeps_the_final_fit_when_the_scorers_are_refitted_later():
    detector, _ = small_detector()
    configs = OmegaConf.create(detector.scorer_configs)
    evaluation = OODEvaluation(
        {name: instantiate(c) for name, c in configs.items()},
        {"normal_train": None, "normal_test": None, "ood": None},  # evaluate() takes features
        train_labels=torch.arange(30) % 3,
    )
    torch.manual_seed(1)
    splits = {"normal_train": torch.randn(30, 16), "normal_test": torch.randn(10, 16)}
    splits["ood"] = torch.randn(10, 16) * 3
    final = evaluation.evaluate(splits)
    test = torch.randn(5, 16)
    final_scores = {name: scorer.score(test) for name, scorer in final.scorers.items()}
    replay = evaluation.evaluate({name: 2 * x + 1 for name, x in splits.items()}, epoch=0)
    built = build_detector(detector.backbone, OmegaConf.create({}), final, configs)  # after it
    for name, scorer in built.scorers.items():
        assert not torch.equal(replay.scorers[name].score(test), final_scores[name])
        assert torch.equal(scorer.score(test), final_scores[name])
        assert torch.equal(final.scorers[name].score(test), final_scores[name])
    assert torch.equal(built.normal_test_scores["knn"], final.scores["knn"]["normal_test"])


def test_unreadable_files_are_skipped_and_named(tmp_path):
    detector, images = small_detector()
    paths = []
    for i, image in enumerate(images[30:33]):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    (tmp_path / "1.png").write_bytes(b"truncated")
    scored = detector.score_images(paths, batch_size=2)
    assert scored.indices == [0, 2] and list(scored.unreadable) == [1]
    assert "1.png" in scored.unreadable[1]
    expected = detector.score([images[30], images[32]])
    for name in expected:  # the same images in other batches: equal up to float rounding
        torch.testing.assert_close(scored.scores[name], expected[name], rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="cannot read image .*1.png"):
        detector.score(paths)


def test_not_a_detector_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no detector at"):
        Detector.load(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "detector.pt")
    with pytest.raises(ValueError, match="not an ood-nolabels detector"):
        Detector.load(tmp_path / "detector.pt")


def test_compose_gives_a_runnable_config_without_the_hydra_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose("+experiment=dn2_synthetic", "seed=3")
    assert "hydra" not in cfg and cfg.seed == 3
    resolved = OmegaConf.to_container(cfg, resolve=True)  # "HydraConfig was not set" before
    assert resolved["paths"]["root_dir"] == str(tmp_path)
    run_dir = Path(resolved["paths"]["output_dir"])
    assert run_dir.parent == tmp_path / "outputs" / "dn2_synthetic"
    assert resolved["paths"]["artifact_dir"] in (
        os.environ.get("OOD_ARTIFACT_DIR"),
        str(tmp_path / "artifacts"),
    )
    assert compose(output_dir=tmp_path / "x").paths.output_dir == str(tmp_path / "x")


def write_pngs(images, directory: Path) -> None:
    directory.mkdir(parents=True)
    for i in range(len(images)):  # 8-bit grayscale PNG: lossless
        images.get_image(i).save(directory / f"{i:04d}.png")


def read_run_scores(run_dir: Path) -> dict[tuple[str, int, str], str]:
    with (run_dir / "scores.csv").open() as file:
        return {
            (r["split"], int(r["index"]), r["scorer"]): r["score"] for r in csv.DictReader(file)
        }


@pytest.mark.slow
def test_the_score_command_reproduces_the_run_exactly(compose_cfg, tmp_path):
    """Train the synthetic method (and reuse its stage 1 for the SCAN-features baseline), then
    score the test images, written as PNG files, in a fresh process through the CLI."""
    cfg = compose_cfg("+experiment=ours_synthetic", "logger=none", "callbacks=none")
    metrics = run(cfg)
    runs = {"ours": Path(cfg.paths.output_dir)}
    scan_cfg = compose_cfg("+experiment=scan_features_synthetic", "logger=none", "callbacks=none")
    scan_cfg.paths.output_dir = str(tmp_path / "scan_run")
    runs["scan_features"] = Path(scan_cfg.paths.output_dir)
    scan_metrics = run(scan_cfg)

    write_pngs(instantiate(cfg.dataset).load("test"), tmp_path / "png" / "normal_test")
    write_pngs(instantiate(cfg.ood.synthetic_4_5).load("test"), tmp_path / "png" / "ood")
    (tmp_path / "png" / "ood" / "zz_broken.png").write_bytes(b"not an image")
    assert json.loads((runs["ours"] / "metrics.json").read_text())["detector"] == "detector.pt"
    saved = torch.load(runs["ours"] / "detector.pt", weights_only=True)
    assert saved["artifacts"][0].startswith("finetune-") and saved["num_clusters"] == cfg.K

    for method, run_metrics in (("ours", metrics), ("scan_features", scan_metrics)):
        output = tmp_path / f"{method}.csv"
        result = subprocess.run(
            [sys.executable, "-m", "ood_nolabels.score", str(runs[method])]
            + ["png/normal_test", "png/ood", "-o", str(output), "--no-progress"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "zz_broken.png" in result.stderr and "Scored 96 of 97 images" in result.stdout
        with output.open() as file:
            rows = list(csv.DictReader(file))
        expected = read_run_scores(runs[method])
        scores = {}
        for scorer in ("knn", "mahalanobis"):
            for row in rows:
                split = "normal_test" if "normal_test" in row["path"] else "synthetic_4_5"
                index = int(Path(row["path"]).stem)
                value = np.float32(row[scorer])
                # scores.csv keeps 8 significant digits; the CLI writes float32 exactly
                assert f"{value:.8g}" == expected[(split, index, scorer)], (method, row)
                scores.setdefault((scorer, split), []).append(value)
            normal = torch.tensor(scores[(scorer, "normal_test")])
            ood = torch.tensor(scores[(scorer, "synthetic_4_5")])
            detector = torch.load(runs[method] / "detector.pt", weights_only=True)
            assert torch.equal(normal, detector["normal_test_scores"][scorer])
            auroc = ood_metrics(normal, ood)["auroc"]
            assert auroc == run_metrics[f"ood/synthetic_4_5/{scorer}/auroc"]
