"""RetinaNet-ResNet18-FPN under feedback rules: build, losses, BP heads, training, COCO mAP.

The mAP cases are worked by hand from COCO's definition (IoU thresholds 0.50:0.05:0.95,
a detection matches when IoU >= threshold, 101-point interpolated precision, mean over
classes with ground truth), not from the code under test.

Stop and resume is the worker loop's (``trainers/worker.py``, one loop for every task) and
is tested once, on a plastic-feedback rule, in ``tests/trainers/test_resume.py``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from trainers.detection import (
    BP_HEAD_LAYERS,
    all_gather_detections,
    build_retinanet,
    coco_map,
    convert_retinanet,
    detection_step,
    evaluate_map,
)
from trainers.rules import RULES, FeedbackLayer

NUM_CLASSES = 3
SIZE = 32  # two 32 px images: layer4 is 1x1, BatchNorm still sees two values per channel


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    images = [torch.randn(3, SIZE, SIZE, generator=gen) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 20.0, 24.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 2.0, 30.0, 20.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


@pytest.mark.parametrize("rule", [r for r in RULES if r != "dfa"])
def test_builds_and_backprops_for_every_rule(rule: str) -> None:
    torch.manual_seed(0)
    model = build_retinanet(NUM_CLASSES, image_size=SIZE, rule=rule)
    n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert sum(isinstance(m, FeedbackLayer) for m in model.modules()) == n_conv
    assert not any(type(m).__name__ == "FrozenBatchNorm2d" for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    losses = detection_step(model, *tiny_batch())
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    sum(losses.values()).backward()
    conv1 = model.backbone.body.conv1.weight.grad
    head = model.head.regression_head.bbox_reg.weight.grad
    assert conv1 is not None and head is not None
    assert bool(torch.isfinite(conv1).all()) and float(conv1.abs().sum()) > 0


def test_dfa_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="dfa.*RetinaNet"):
        build_retinanet(NUM_CLASSES, image_size=SIZE, rule="dfa")


def test_architecture_is_resnet18_fpn_p3_to_p7() -> None:
    torch.manual_seed(0)
    model = build_retinanet(NUM_CLASSES, image_size=64, rule="bp")
    body = model.backbone.body
    assert [m.out_channels for m in (body.layer2[-1].conv2, body.layer4[-1].conv2)] == [128, 512]
    assert len(body.layer1) == len(body.layer4) == 2  # BasicBlocks x2: ResNet-18
    assert isinstance(body.bn1, nn.BatchNorm2d)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert model.transform.min_size == (64,) and model.transform.max_size == round(64 * 1333 / 800)
    assert model.detections_per_img == 100


def test_bp_heads_stay_plain_conv_and_everything_else_converts() -> None:
    torch.manual_seed(0)
    plain = build_retinanet(NUM_CLASSES, image_size=SIZE, rule="bp")
    n_conv = sum(isinstance(m, nn.Conv2d) for m in plain.modules())
    weights = {name: plain.get_submodule(name).weight for name in BP_HEAD_LAYERS}
    model, counts = convert_retinanet(plain, "ss", last_layer="bp", seed=3)
    assert counts == {"Linear": 0, "Conv2d": n_conv - 2}
    kept = [name for name, m in model.named_modules() if type(m) is nn.Conv2d]
    assert sorted(kept) == sorted(BP_HEAD_LAYERS)
    converted = [m for m in model.modules() if isinstance(m, FeedbackLayer)]
    assert len(converted) == n_conv - 2 and all(m.rule_name == "ss" for m in converted)
    for name in BP_HEAD_LAYERS:  # same Parameters, not copies
        assert model.get_submodule(name).weight is weights[name]
    losses = detection_step(model, *tiny_batch())
    sum(losses.values()).backward()
    assert model.head.classification_head.cls_logits.weight.grad is not None

    _, all_counts = convert_retinanet(
        build_retinanet(NUM_CLASSES, image_size=SIZE, rule="bp"), "fa"
    )
    assert all_counts == {"Linear": 0, "Conv2d": n_conv}


@pytest.mark.parametrize("rule", ["bp", "ss"])
def test_sgd_steps_lower_the_loss_on_a_fixed_batch(rule: str) -> None:
    torch.manual_seed(0)
    model = build_retinanet(NUM_CLASSES, image_size=SIZE, rule=rule, last_layer="bp")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, targets = tiny_batch()
    history = []
    for _ in range(6):
        loss = sum(detection_step(model, images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.9 * history[0], history


# --- COCO mAP, hand-worked --------------------------------------------------------------

THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels)}


def pred(boxes: list[list[float]], labels: list[int], scores: list[float]) -> dict:
    return {**target(boxes, labels), "scores": torch.tensor(scores)}


def test_map_is_one_when_predictions_equal_targets() -> None:
    truth = [target([[2, 2, 20, 30], [30, 10, 60, 40]], [0, 1]), target([[5, 5, 50, 50]], [2])]
    preds = [
        pred(t["boxes"].tolist(), t["labels"].tolist(), [0.9] * len(t["labels"])) for t in truth
    ]
    found = coco_map(preds, truth)
    assert found == {"map": 1.0, "map_50": 1.0, "map_75": 1.0}


@pytest.mark.parametrize("shift", [1.0, 2.0, 4.0])
def test_map_of_a_shifted_box_counts_the_thresholds_its_iou_passes(shift: float) -> None:
    gt = [0.0, 0.0, 10.0, 10.0]
    moved = [shift, 0.0, 10.0 + shift, 10.0]
    iou = box_iou(gt, moved)
    assert iou == pytest.approx((10 - shift) / (10 + shift))  # 9/11, 8/12, 6/14
    # one image, one box, one detection: AP is 1 at a threshold the IoU reaches, else 0
    expected = sum(iou >= t - 1e-9 for t in THRESHOLDS) / len(THRESHOLDS)  # 0.7, 0.4, 0.0
    found = coco_map([pred([moved], [0], [0.8])], [target([gt], [0])])
    assert found["map"] == pytest.approx(expected, abs=1e-6)
    assert found["map_50"] == (1.0 if iou >= 0.5 else 0.0)
    assert found["map_75"] == (1.0 if iou >= 0.75 else 0.0)
    assert found["map"] < 1.0


def test_map_half_recall_and_a_higher_scored_false_positive() -> None:
    # class 0: two boxes, one found -> precision 1 up to recall 0.5: 51 of 101 recall points
    # class 1: one box, a false positive (score 0.9) ranked above the hit (0.8) ->
    #          precision 1/2 at recall 1, interpolated 1/2 at every recall point
    truth = [target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]), target([[5, 5, 25, 25]], [1])]
    preds = [
        pred([[0, 0, 10, 10]], [0], [0.7]),
        pred([[40, 40, 60, 60], [5, 5, 25, 25]], [1, 1], [0.9, 0.8]),
    ]
    found = coco_map(preds, truth)
    expected = (51 / 101 + 0.5) / 2
    assert found["map"] == pytest.approx(expected, abs=1e-6)
    assert found["map_50"] == pytest.approx(expected, abs=1e-6)


def test_evaluate_map_runs_the_model_and_gathers() -> None:
    torch.manual_seed(0)
    model = build_retinanet(NUM_CLASSES, image_size=SIZE, rule="ss")
    images, targets = tiny_batch()
    batches = [(images[:1], targets[:1]), ([], []), (images[1:], targets[1:])]
    seen = {}

    def gather(preds, truth):
        seen["n"] = (len(preds), len(truth))
        assert set(preds[0]) == {"boxes", "scores", "labels"}
        return preds + [dict(p) for p in preds], truth + [dict(t) for t in truth]

    model.train()
    found = evaluate_map(model, batches, gather=gather)
    assert seen["n"] == (2, 2)  # the empty batch is skipped
    assert set(found) == {"map", "map_50", "map_75"}
    assert all(0.0 <= v <= 1.0 for v in found.values())
    assert model.training  # mode restored


# --- the real COCO loader and the Ray Train loop ------------------------------------------

DETECT_SPEC = {
    "name": "detect-tiny",
    "task": "detect",
    "model": "retinanet_resnet18_fpn",
    "data": {"kind": "synthetic", "image_size": 48, "synth": {"images": 16, "size": 48}},
    "rule": {"name": "ss", "last_layer": "bp"},
    "optim": {"lr": 0.01, "clip_grad_norm": 10.0},
    "schedule": {"epochs": 3},
    "batch_size": 4,
    "scale": {"workers": 2},
}


def test_one_step_and_map_on_the_coco_loader(workdir) -> None:
    import data_pipelines
    from trainers.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate(DETECT_SPEC)
    data = data_pipelines.prepare(spec.data, task="detect")
    classes = data_pipelines.num_classes(data)
    torch.manual_seed(0)
    model = build_retinanet(classes, image_size=48, rule="fa", last_layer="bp")
    images, targets = next(iter(data_pipelines.build_loader(data, "train", batch_size=2)))
    assert all(int(t["labels"].max()) < classes for t in targets)
    losses = detection_step(model, images, targets)
    sum(losses.values()).backward()
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    found = evaluate_map(model, data_pipelines.build_loader(data, "val", batch_size=2))
    assert all(0.0 <= v <= 1.0 for v in found.values())


def _history(uri: str, run_id: str, name: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, name)]


def _checkpoint(result: dict) -> dict:
    (child,) = result["children"]
    return torch.load(f"{child['checkpoint']}/checkpoint.pt", weights_only=False)


@pytest.mark.slow
def test_two_worker_detection_run_logs_losses_map_alignment(workdir, ray_cluster) -> None:
    from mlflow import MlflowClient

    from trainers.launch import run_experiment
    from trainers.spec import ExperimentSpec

    result = run_experiment(ExperimentSpec.model_validate(DETECT_SPEC), job_id="detect-2w")
    assert result["status"] == "FINISHED", result
    uri, run_id = result["tracking_uri"], result["children"][0]["run_id"]
    names = ("loss", "loss_classification", "loss_bbox_regression", "map", "map_50")
    history = {name: [v for _, v in _history(uri, run_id, name)] for name in names}
    assert all(len(values) == 3 for values in history.values()), history
    for a, b, c in zip(
        history["loss"],
        history["loss_classification"],
        history["loss_bbox_regression"],
        strict=True,
    ):
        assert a == pytest.approx(b + c, rel=1e-5)
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    assert all(0.0 <= v <= 1.0 for v in history["map"] + history["map_50"])
    client = MlflowClient(uri)
    logged = client.get_run(run_id).data.metrics
    assert logged["samples_per_s"] > 0 and logged["ddp_nodes"] == 1
    assert 10.0 < logged["align_mean_angle"] < 90.0  # sign-symmetry: aligned, not exact
    # RetinaNet has more rule layers than tracking.layer_metrics_max_layers (8): its
    # per-layer statistics are rows of the per-epoch table, named by module path, not metrics
    assert not any(name.startswith("angle/") for name in logged)
    table = json.loads(
        open(client.download_artifacts(run_id, "layer_stats.json", str(workdir))).read()
    )
    layers = {row[table["columns"].index("layer")] for row in table["data"]}
    assert "backbone.body.layer1.0.conv1" in layers  # module paths name the layers
    assert "head.classification_head.cls_logits" not in layers  # kept on BP
    assert 0.0 < logged["galign_mean_grad_angle"] < 90.0
    assert "curves.png" in [a.path for a in client.list_artifacts(run_id)]
    # without a search, the best setting per rule is judged by detection's headline, mAP
    (best,) = result["best"]
    assert (best["rule"], best["metric"]) == ("ss", "map") and best["value"] == logged["map"]
    state = _checkpoint(result)
    assert state["epoch"] == 2 and state["spec"]["task"] == "detect"
    assert set(state) >= {"model", "optimizer", "lr_scheduler", "rng"}


def _gather_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from trainers.detection import all_gather_detections

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        mine = [pred([[rank, 0, rank + 5, 5]], [rank], [0.5])] * (rank + 1)  # unequal counts
        truth = [target([[rank, 0, rank + 5, 5]], [rank])] * (rank + 1)
        preds, targets = all_gather_detections(mine, truth)
        torch.save({"preds": preds, "targets": targets}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~5 s
def test_all_gather_detections_merges_ranks_in_order(tmp_path) -> None:
    import torch.multiprocessing as mp

    init = f"file://{tmp_path}/rendezvous"
    mp.spawn(_gather_worker, args=(2, init, str(tmp_path)), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        assert [int(p["labels"][0]) for p in got["preds"]] == [0, 1, 1]
        assert [int(t["labels"][0]) for t in got["targets"]] == [0, 1, 1]
    # without a process group the inputs come back unchanged
    alone = [pred([[0, 0, 1, 1]], [0], [1.0])]
    assert all_gather_detections(alone, alone) == (alone, alone)


def test_probe_alignment_in_its_declared_mode() -> None:
    """The RetinaNet probe runs in ``tracking.alignment_mode`` (BatchNorm included), a BP
    net reports 0 degrees in either mode, and the model's own mode is restored."""
    from trainers.detection import probe_alignment

    for rule in ("bp", "ss"):
        torch.manual_seed(0)
        model = build_retinanet(NUM_CLASSES, image_size=SIZE, rule=rule).train()
        for mode in ("eval", "train"):
            out = probe_alignment(model, tiny_batch(), mode)
            assert model.training and all(m.training for m in model.modules())
            if rule == "bp":
                assert out["galign_mean_grad_angle"] < 1e-3, (mode, out)
            else:
                assert out["galign_mean_grad_angle"] > 1, (mode, out)
