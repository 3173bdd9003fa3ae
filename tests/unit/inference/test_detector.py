"""The saved detector: the file, loading without pretrained weights, scoring image files."""

import pytest
import torch
from helpers import small_detector
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ood_nolabels.engine.evaluation import OODEvaluation
from ood_nolabels.inference.detector import Detector, without_pretrained_weights
from ood_nolabels.methods.base import build_detector


def test_loading_never_asks_for_pretrained_weights():
    timm = {"_target_": "x.TimmBackbone", "name": "resnet50", "pretrained": True}
    assert without_pretrained_weights(timm | {"checkpoint_path": "w.pth"}) == timm | {
        "pretrained": False,
        "checkpoint_path": None,
    }
    clip = {"_target_": "x.OpenClipBackbone", "pretrained": "openai"}
    assert without_pretrained_weights(clip)["pretrained"] is None


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


class Foreign:
    """Any object that is not tensors and plain containers."""


def test_an_unreadable_detector_file_is_named_and_never_unpickled(tmp_path):
    path = tmp_path / "detector.pt"
    torch.save({"weights": torch.zeros(4)}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"detector.pt.*(truncated|cannot be read)"):
        Detector.load(path)

    torch.save(Foreign(), path)
    with pytest.raises(
        ValueError, match=r"not a detector written by ood-nolabels.*will not be unpickled"
    ):
        Detector.load(path)
