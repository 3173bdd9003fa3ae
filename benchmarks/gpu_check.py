"""One-command GPU check (``scripts/gpu_check.sh``): runs each step and writes a Markdown report.

Steps (each a function in :data:`STEPS`; a failing step is reported and the others still run):
the digits demo on ``trainer=gpu`` next to the CPU run, ViT-B/16 finetune and CIFAR ResNet-18
SimCLR throughput (both augmentation paths) projected to the paper's CIFAR-10 schedule, faiss GPU
vs CPU exact kNN, a 1-GPU ``trainer=ddp`` run of the synthetic method, frozen-feature clustering
on CLIP features at CIFAR-10 scale, and the kNN scorer's GPU search.

``--dry-run`` runs the same control flow on the CPU with tiny sizes (CI runs it), so the script
is known to work before a GPU is at hand; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.augmentation import RandomImages
from benchmarks.common import machine
from ood_nolabels.core.losses import nt_xent
from ood_nolabels.core.tables import markdown_table
from ood_nolabels.data.augment import TwoViews, batch_simclr_augment, simclr_transform
from ood_nolabels.data.images import IndexedDataset
from ood_nolabels.models.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD, CifarResNet18Backbone

REPO = Path(__file__).resolve().parents[1]
# The paper's CIFAR-10 schedule (SCAN's official recipe for stage 1, 5 finetune epochs).
CIFAR10_TRAIN_IMAGES = 50_000
SCHEDULE_EPOCHS = {"SimCLR": 500, "SCAN": 50, "self-label": 200, "finetune": 5}
FIGURES = ("roc", "histograms", "epochs", "retrieval", "embedding", "confusion")


@dataclass
class Check:
    """What every step gets: the device, whether this is a dry run, where to write."""

    dry_run: bool
    work_dir: Path

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.dry_run else "cuda")

    def size(self, real: int, dry: int) -> int:
        return dry if self.dry_run else real

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


Step = Callable[[Check], str]  # returns the section's Markdown body


def run_cli(check: Check, name: str, overrides: list[str], timeout: int = 420) -> dict:
    """``python -m ood_nolabels.train`` with ``overrides``; its metrics.json and wall time."""
    run_dir = check.work_dir / name
    if check.dry_run:  # control flow only: the figures are checked by their own tests
        overrides = [*overrides, *(f"plots.{name}=false" for name in FIGURES)]
    command = [
        sys.executable,
        "-m",
        "ood_nolabels.train",
        *overrides,
        "logger=csv",
        f"paths.artifact_dir={check.work_dir / name / 'artifacts'}",
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    completed = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    seconds = time.perf_counter() - start
    (check.work_dir / f"{name}.log").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        tail = (completed.stdout + completed.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(command[2:])} exited {completed.returncode}:\n{tail}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"seconds": seconds, "metrics": metrics, "command": " ".join(command[2:])}


def aurocs(metrics: dict) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("ood/") and k.endswith("/auroc")}


# -- steps ----------------------------------------------------------------------------------------


def environment(check: Check) -> str:
    lines = [f"- Machine: {machine()}"]
    if not check.dry_run:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        lines.append(f"- nvidia-smi -L: {smi.stdout.strip() or smi.stderr.strip()}")
        lines.append(
            f"- CUDA {torch.version.cuda}, bf16 supported: {torch.cuda.is_bf16_supported()}"
        )
    return "\n".join(lines)


def digits_demo(check: Check) -> str:
    """The demo on the GPU (bf16) and on the CPU at once, AUROCs side by side."""
    experiment = "+experiment=dn2_synthetic" if check.dry_run else "+experiment=digits"
    gpu_trainer = "trainer=cpu" if check.dry_run else "trainer=gpu"
    with ThreadPoolExecutor(2) as pool:
        gpu = pool.submit(run_cli, check, "demo_gpu", [experiment, gpu_trainer])
        cpu = pool.submit(run_cli, check, "demo_cpu", [experiment, "trainer=cpu"])
        gpu, cpu = gpu.result(), cpu.result()
    rows = [
        [key, f"{100 * value:.1f}", f"{100 * cpu['metrics'].get(key, float('nan')):.1f}"]
        for key, value in sorted(aurocs(gpu["metrics"]).items())
    ]
    table = markdown_table(["metric", "trainer=gpu (bf16)", "trainer=cpu (fp32)"], rows)
    return (
        f"`{gpu['command']}`: {gpu['seconds']:.0f} s; the CPU run (at the same time, sharing "
        f"the CPU cores): {cpu['seconds']:.0f} s.\n\n{table}"
    )


def projected(images_per_second: float, stages: list[str]) -> str:
    hours = {
        stage: SCHEDULE_EPOCHS[stage] * CIFAR10_TRAIN_IMAGES / images_per_second / 3600
        for stage in stages
    }
    return ", ".join(
        f"{stage} {SCHEDULE_EPOCHS[stage]} epochs {h:.2f} h" for stage, h in hours.items()
    )


def vit_finetune_throughput(check: Check) -> str:
    """Training images/s of a ViT-B/16 (random weights) + linear head at 224 px, bf16 autocast."""
    import timm

    name = "vit_tiny_patch16_224" if check.dry_run else "vit_base_patch16_224"
    size, batch, steps = check.size(224, 32), check.size(128, 4), check.size(20, 2)
    model = timm.create_model(name, pretrained=False, num_classes=10, img_size=size)
    model = model.to(check.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    images = torch.randn(batch, 3, size, size, device=check.device)
    labels = torch.randint(10, (batch,), device=check.device)
    dtype = torch.float32 if check.dry_run else torch.bfloat16
    rate = steps_per_second(
        check, steps, lambda: train_step(model, optimizer, images, labels, dtype)
    )
    per_second = rate * batch
    return (
        f"{name}, {size} px, batch {batch}, {'fp32' if check.dry_run else 'bf16-mixed'}: "
        f"**{per_second:.0f} images/s**. Projected: {projected(per_second, ['finetune'])}."
    )


def train_step(model, optimizer, images, labels, dtype) -> None:
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def steps_per_second(check: Check, steps: int, step: Callable[[], None]) -> float:
    step()  # warm-up (cuDNN autotuning, allocations)
    check.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    check.synchronize()
    return steps / (time.perf_counter() - start)


class SimCLRNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = CifarResNet18Backbone()
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)), dim=1)


def simclr_throughput(check: Check) -> str:
    """CIFAR ResNet-18 SimCLR steps at 32 px, views from PIL workers vs batched on the device."""
    count, batch = check.size(16_384, 16), check.size(512, 8)
    workers = check.size(min(8, os.cpu_count() or 1), 0)
    data = RandomImages(count)
    model = SimCLRNet().to(check.device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.4, momentum=0.9)
    dtype = torch.float32 if check.dry_run else torch.bfloat16
    on_device = batch_simclr_augment(32, CIFAR10_MEAN, CIFAR10_STD).to(check.device)
    paths = {
        f"PIL, {workers} loader workers": (
            TwoViews(simclr_transform(32, CIFAR10_MEAN, CIFAR10_STD)),
            None,
        ),
        "batched on the device (kornia)": (on_device.loader_transform(), on_device),
    }
    rows = []
    for label, (transform, augment) in paths.items():
        loader = DataLoader(
            IndexedDataset(data, transform),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=check.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        seen, start = 0, None
        for index, (images, _) in enumerate(loader):
            if index == 1:  # the first batch pays for starting the workers
                check.synchronize()
                start, seen = time.perf_counter(), 0
            if augment is None:
                view1, view2 = (v.to(check.device, non_blocking=True) for v in images)
            else:
                view1, view2 = augment.views(images.to(check.device, non_blocking=True))
            with torch.autocast(check.device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = nt_xent(model(view1), model(view2), 0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(view1)
        check.synchronize()
        per_second = seen / (time.perf_counter() - start)
        rows.append([label, f"{per_second:.0f}", projected(per_second, list(SCHEDULE_EPOCHS)[:3])])
    return (
        f"{count} random 32 px images, batch {batch}, {'fp32' if check.dry_run else 'bf16-mixed'}"
        ". SCAN and self-label are projected at SimCLR's rate (each also runs two augmented "
        "views through the ResNet-18 per image).\n\n"
        + markdown_table(
            ["augmentation", "images/s", "projected (paper's CIFAR-10 schedule)"], rows
        )
    )


def faiss_knn(check: Check) -> str:
    """Exact inner-product kNN: faiss on the CPU vs faiss on the GPU (and a torch matmul top-k)."""
    import faiss

    bank_size, queries, dim, k = check.size(50_000, 500), check.size(10_000, 100), 768, 1
    dim = check.size(dim, 16)
    generator = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(bank_size, dim, generator=generator), dim=1)
    query = F.normalize(torch.randn(queries, dim, generator=generator), dim=1)
    rows = []

    def timed(label: str, search: Callable[[], torch.Tensor]) -> torch.Tensor:
        start = time.perf_counter()
        result = search()
        check.synchronize()
        rows.append([label, f"{time.perf_counter() - start:.3f}"])
        return result

    def cpu_search() -> torch.Tensor:
        index = faiss.IndexFlatIP(dim)
        index.add(bank.numpy())
        return torch.from_numpy(index.search(query.numpy(), k)[0])

    reference = timed("faiss IndexFlatIP, CPU", cpu_search)
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        resources = faiss.StandardGpuResources()  # must outlive the index

        def gpu_search() -> torch.Tensor:
            index = faiss.GpuIndexFlatIP(resources, dim)
            index.add(bank.numpy())
            return torch.from_numpy(index.search(query.numpy(), k)[0])

        torch.testing.assert_close(
            timed("faiss GpuIndexFlatIP", gpu_search), reference, atol=1e-3, rtol=1e-3
        )
    else:
        rows.append(["faiss GpuIndexFlatIP", "not run: this faiss has no GPU support (faiss-gpu)"])
    device_bank, device_query = bank.to(check.device), query.to(check.device)

    def torch_search() -> torch.Tensor:
        return (device_query @ device_bank.T).topk(k, dim=1).values.cpu()

    torch.testing.assert_close(
        timed(f"torch matmul + topk, {check.device.type}", torch_search),
        reference,
        atol=1e-3,
        rtol=1e-3,
    )
    return f"bank {bank_size} x {dim}, {queries} queries, k={k}, cosine.\n\n" + markdown_table(
        ["search", "seconds"], rows
    )


# A dry run makes every stage tiny (the debug group): control flow only.
DRY_RUN_SHORTER = ["+debug=tiny"]


def ddp_synthetic(check: Check) -> str:
    """The synthetic method under the DDP strategy on one GPU (NCCL, gathers, bf16)."""
    if check.dry_run:
        overrides = ["trainer=ddp_cpu", "trainer.devices=1", *DRY_RUN_SHORTER]
    else:
        overrides = ["trainer=ddp", "trainer.devices=1"]
    run = run_cli(check, "ddp_synthetic", ["+experiment=ours_synthetic", *overrides])
    values = ", ".join(f"{k} {100 * v:.1f}" for k, v in sorted(aurocs(run["metrics"]).items()))
    return f"`{run['command']}`: exit 0 in {run['seconds']:.0f} s; AUROC {values}."


def run_script(check: Check, module: str, arguments: list[str], timeout: int = 420) -> str:
    """``python -m benchmarks.<module> <arguments>``: its output as the section body."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *arguments]
    completed = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    (check.work_dir / f"{module}.log").write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        tail = (completed.stdout + completed.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(command[2:])} exited {completed.returncode}:\n{tail}")
    return f"`{' '.join(command[2:])}`\n\n```\n{completed.stdout.strip()}\n```"


def frozen_features(check: Check) -> str:
    """Stage 1 on frozen CLIP ViT-B/16 features of 50,000 random 224 px images (issue 12)."""
    if check.dry_run:
        sizes = ["--backbone", "efficientnet_lite0", "--images", "32", "--image-size", "32"]
    else:  # random weights: the GPU machine has no internet; the cost is the same
        sizes = ["--backbone", "clip_vit_b16", "--images", "50000", "--image-size", "224"]
        sizes.append("--random-weights")
    return run_script(check, "frozen_features", [*sizes, "--device", check.device.type])


def knn_scorer_on_gpu(check: Check) -> str:
    """The kNN scorer's own GPU search path (faiss-gpu index or torch) against its CPU result."""
    if check.dry_run:
        from ood_nolabels.core.search import faiss_gpu_available, search_backend

        backend = search_backend(torch.device("cuda"), True, faiss_gpu_available())
        return f"dry run: no GPU here; features on a GPU would be searched with {backend!r}."
    return run_script(check, "knn_gpu_check", [])


STEPS: dict[str, Step] = {
    "Environment": environment,
    "Digits demo: GPU (bf16) vs CPU": digits_demo,
    "ViT-B/16 finetune step, 224 px": vit_finetune_throughput,
    "CIFAR ResNet-18 SimCLR step, 32 px, both augmentation paths": simclr_throughput,
    "Exact kNN, 50,000 x 10,000 x 768: faiss GPU vs CPU": faiss_knn,
    "1-GPU trainer=ddp run of the synthetic method": ddp_synthetic,
    "Frozen-feature clustering, CLIP ViT-B/16, 50,000 images at 224 px": frozen_features,
    "kNN scorer with features on the GPU (the detector's search)": knn_scorer_on_gpu,
    # -- more steps: title -> function(Check) -> Markdown ------------------------------------
}


def run_steps(check: Check, steps: dict[str, Step]) -> tuple[str, list[str]]:
    """The report and the titles of the steps that failed."""
    mode = "DRY RUN on the CPU with tiny sizes (control flow only)" if check.dry_run else "GPU"
    sections = [
        "# GPU check",
        "",
        f"Written by `scripts/gpu_check.sh{' --dry-run' if check.dry_run else ''}` on "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}: {mode}.",
    ]
    failed = []
    for title, step in steps.items():
        start = time.perf_counter()
        try:
            body = step(check)
        except Exception:
            failed.append(title)
            body = "**FAILED**\n\n```\n" + traceback.format_exc()[-3000:] + "```"
        sections += ["", f"## {title}", f"({time.perf_counter() - start:.0f} s)", "", body]
        print(f"[gpu_check] {title}: {'FAILED' if title in failed else 'ok'}", flush=True)
    return "\n".join(sections) + "\n", failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--report", type=Path, default=REPO / "benchmarks" / "GPU_CHECK.md")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/ood_nolabels_gpu_check"))
    parser.add_argument(
        "--steps",
        nargs="+",
        metavar="WORD",
        help="run only the steps whose title contains one of these words (e.g. --steps kNN DDP); "
        "the Environment step always runs",
    )
    args = parser.parse_args()
    steps = {
        title: step
        for title, step in STEPS.items()
        if not args.steps
        or step is environment  # every report says where it ran
        or any(word.lower() in title.lower() for word in args.steps)
    }
    if not steps:
        raise SystemExit(f"no step title contains any of {args.steps}; titles: {list(STEPS)}")
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible: run with --dry-run to check the script on a CPU")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    report, failed = run_steps(Check(args.dry_run, args.work_dir), steps)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    print(f"[gpu_check] report: {args.report}")
    if failed:
        raise SystemExit(f"[gpu_check] failed steps: {failed}")


if __name__ == "__main__":
    main()
