"""Benchmark the SEEM v1 model (full-size Focal-T, random weights): seconds, FLOPs and matmul-peak fraction per frame.

On one DAVIS frame, per precision (fp32; bf16 / fp16 = torch.autocast), under torch.inference_mode:

* ``encode``: `SeemModel.encode_image` (backbone + pixel decoder); the backbone alone is timed by forward hooks,
  the rest (resize/normalise + pixel decoder) is the difference;
* ``decode``: one `decode_spatial` call for N objects (prompt encoding + decoder, with each object's mask as
  memory prompt), and its ``prompt part`` (`encode_prompt`) alone. The N prompt masks are the GT mask and
  shifted / eroded copies of it.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``; the matmul peak (GFLOP/s of square
``torch.matmul``, growing the size until one product takes a while) is measured in the same run. Times are medians
of ``--repeats`` runs after ``--warmup`` runs. On a CPU without native bf16 (no AVX512-BF16 / AMX) bf16 is
emulated and 100x+ slower than fp32: use ``--precisions fp32`` there, or a small ``--short-side``.

    python bench/bench_seem_model.py [--repeats 5] [--objects 1 4 16] [--precisions fp32 bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from vos.seem.model import SeemModel, build_seem, prev_mask_from_binary

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis16"
DEFAULT_FRAME = DAVIS / "JPEGImages" / "480p" / "blackswan" / "00000.jpg"
DEFAULT_MASK = DAVIS / "Annotations" / "480p" / "blackswan" / "00000.png"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Clock:
    """Device-agnostic time marks: ``perf_counter`` on CPU, CUDA events on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        if not self.cuda:
            return end - start
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3


class ModuleTimer:
    """Records the (start, end) marks of every forward call of a module, via hooks."""

    def __init__(self, module: nn.Module, clock: Clock) -> None:
        self.clock, self.spans = clock, []
        module.register_forward_pre_hook(lambda *_: self.spans.append([clock.mark()]))
        module.register_forward_hook(lambda *_: self.spans[-1].append(clock.mark()))

    def seconds(self) -> list[float]:
        return [self.clock.seconds(start, end) for start, end in self.spans]


def timed(fn: Callable[[], object], clock: Clock, warmup: int, repeats: int,
          inner: ModuleTimer | None = None) -> tuple[float, float | None]:
    """Median seconds of ``fn`` (and of the ``inner`` module's forward within it) over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    if inner is not None:
        inner.spans.clear()
    marks = []
    for _ in range(repeats):
        start = clock.mark()
        fn()
        marks.append((start, clock.mark()))
    total = statistics.median(clock.seconds(a, b) for a, b in marks)
    return total, (statistics.median(inner.seconds()) if inner is not None else None)


def _sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


# FlopCounterMode has no formula for the flash-attention kernel that F.scaled_dot_product_attention runs on CPU,
# so attention (q.k and attn.v) would count 0 there; count it like the CUDA kernels.
EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def count_flops(fn: Callable[[], object], module: nn.Module | None = None) -> tuple[int, int]:
    """(total FLOPs of ``fn``, FLOPs inside ``module``). The counter names a module by its attribute path under
    the outermost module called (``SeemModel.backbone``), or by its class name when called directly."""
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
        fn()
    inner = 0
    if module is not None:
        per_module = counter.get_flop_counts()
        name = next((k for k in per_module if k == type(module).__name__ or k.endswith(".backbone")), "")
        inner = int(sum(per_module.get(name, {}).values()))
    return counter.get_total_flops(), inner


def matmul_peak(device: torch.device, dtype: torch.dtype, clock: Clock, max_size: int,
                long_enough_s: float = 0.25) -> tuple[float, int, str]:
    """Best GFLOP/s of n x n products, n = 256, 512, ... up to ``max_size`` or until one product takes
    ``long_enough_s`` (bounded time even where a dtype is emulated), over ``torch.matmul`` and ``F.linear``
    (they can dispatch to different kernels: MKL vs oneDNN on CPU). Returns (GFLOP/s, n, op)."""
    best: tuple[float, int, str] = (0.0, 0, "")
    for op in (torch.matmul, torch.nn.functional.linear):
        n = 256
        while n <= max_size:
            a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
            seconds, _ = timed(partial(op, a, b), clock, warmup=1, repeats=3)
            best = max(best, (2 * n**3 / seconds / 1e9, n, op.__name__))
            if seconds > long_enough_s:
                break
            n *= 2
    return best


def object_masks(gt: np.ndarray, count: int) -> np.ndarray:
    """``count`` different prompt masks ``[N, H, W]``: the GT, then shifted (every other one eroded) copies."""
    masks = [gt]
    for i in range(1, count):
        dy, dx = 12 * ((i % 5) - 2), 16 * ((i // 5) - 1)
        shifted = np.roll(gt, (dy, dx), axis=(0, 1))
        if i % 2:
            shifted = cv2.erode(shifted.astype(np.uint8), np.ones((2 * (i % 4) + 3,) * 2, np.uint8)) > 0
        masks.append(shifted if shifted.any() else gt)
    return np.stack(masks)


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def row(precision: str, stage: str, objects: int | None, seconds: float, flops: int, peak: float) -> dict[str, Any]:
    gflops = flops / seconds / 1e9
    return {"precision": precision, "stage": stage, "objects": objects, "seconds": seconds, "gflop": flops / 1e9,
            "gflops": gflops, "peak_fraction": gflops / peak}


class Workload:
    """The calls being measured: encode the frame, and encode prompts / decode N objects on its features."""

    def __init__(self, model: SeemModel, frame: np.ndarray, masks: np.ndarray, short_side: int) -> None:
        self.model, self.frame, self.masks, self.short_side = model, frame, masks, short_side
        self.generator = torch.Generator().manual_seed(0)

    def encode(self) -> Any:
        return self.model.encode_image(self.frame, short_side=self.short_side)

    def prompt(self, features: Any, n: int) -> Any:
        return self.model.encode_prompt(features, self.masks[:n], generator=self.generator)

    def decode(self, features: Any, n: int, prev_mask: torch.Tensor) -> Any:
        return self.model.decode_spatial(features, self.masks[:n], prev_mask=prev_mask, generator=self.generator)

    def memory(self, features: Any, n: int) -> torch.Tensor:
        """Memory prompt: each object's own mask as mask logits (what a tracker feeds back)."""
        return prev_mask_from_binary(self.masks[:n], features)


def count_workload_flops(work: Workload, objects: list[int]) -> tuple[dict[str, tuple[int, int]], Any]:
    """FLOPs (counted in fp32; the count does not depend on the dtype): encode (with its backbone part), and
    decode / prompt per object count. Also returns the fp32 image features."""
    flops = {"encode": count_flops(work.encode, work.model.backbone)}
    features = work.encode()
    for n in objects:
        flops[f"decode{n}"] = count_flops(partial(work.decode, features, n, work.memory(features, n)))
        flops[f"prompt{n}"] = count_flops(partial(work.prompt, features, n))
    return flops, features


def bench_precision(work: Workload, precision: str, args: argparse.Namespace, clock: Clock, backbone: ModuleTimer,
                    flops: dict[str, tuple[int, int]], peak: float) -> list[dict[str, Any]]:
    """Time encode and decode (per object count) in one precision; returns the table rows."""
    rows = []
    with autocast(torch.device(args.device), precision):
        total, in_backbone = timed(work.encode, clock, args.warmup, args.repeats, backbone)
        assert in_backbone is not None
        encode_flops, backbone_flops = flops["encode"]
        rows.append(row(precision, "encode", None, total, encode_flops, peak))
        rows.append(row(precision, "  backbone", None, in_backbone, backbone_flops, peak))
        rows.append(row(precision, "  pixel decoder+pre", None, total - in_backbone, encode_flops - backbone_flops,
                        peak))
        features = work.encode()
        for n in args.objects:
            decode = partial(work.decode, features, n, work.memory(features, n))
            rows.append(row(precision, "decode", n, timed(decode, clock, args.warmup, args.repeats)[0],
                            flops[f"decode{n}"][0], peak))
            prompt = partial(work.prompt, features, n)
            rows.append(row(precision, "  prompt part", n, timed(prompt, clock, args.warmup, args.repeats)[0],
                            flops[f"prompt{n}"][0], peak))
    return rows


def print_table(results: dict[str, Any]) -> None:
    env = results["environment"]
    print(f"\ndevice {env['device']} ({env['processor']}), {env['threads']} threads, torch {env['torch']}; "
          f"frame {env['frame_size']} -> input {env['input_size']} (padded {env['padded_size']}); "
          f"warmup {env['warmup']}, median of {env['repeats']}")
    if env["device"] == "cpu" and not env["cpu_bf16_hardware"]:
        print("note: this CPU has no native bf16 (no AVX512-BF16/AMX): bf16 matmuls and convs are emulated")
    for precision, (gflops, n, op) in results["matmul_peak"].items():
        print(f"matmul peak {precision}: {gflops:9.1f} GFLOP/s ({op}, {n}x{n})")
    print(f"\n{'precision':<9} {'stage':<20} {'objects':>7} {'seconds':>9} {'GFLOP':>8} {'GFLOP/s':>9} {'% peak':>7}")
    for r in results["rows"]:
        print(f"{r['precision']:<9} {r['stage']:<20} {r['objects'] or '-':>7} {r['seconds']:9.3f} "
              f"{r['gflop']:8.1f} {r['gflops']:9.1f} {100 * r['peak_fraction']:7.1f}")
    print(f"\n{'precision':<9} {'objects':>7} {'s/frame':>9} {'frames/s':>9}   (encode + one decode call)")
    for precision in results["matmul_peak"]:
        rows = [r for r in results["rows"] if r["precision"] == precision]
        encode = next(r["seconds"] for r in rows if r["stage"] == "encode")
        for r in rows:
            if r["stage"] == "decode":
                print(f"{precision:<9} {r['objects']:>7} {encode + r['seconds']:9.3f} "
                      f"{1 / (encode + r['seconds']):9.3f}")


def environment(args: argparse.Namespace, device: torch.device, frame: np.ndarray, features: Any) -> dict[str, Any]:
    cuda = device.type == "cuda"
    return {
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "processor": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "cpu_bf16_hardware": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "frame": str(args.frame), "frame_size": f"{frame.shape[1]}x{frame.shape[0]}",
        "input_size": "{1}x{0}".format(*features.image_size), "padded_size": "{1}x{0}".format(*features.padded_size),
        "short_side": args.short_side, "warmup": args.warmup, "repeats": args.repeats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--objects", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--short-side", type=int, default=512)
    parser.add_argument("--matmul-max", type=int, help="largest matmul size for the peak (default 4096 CPU, 8192 CUDA)")
    parser.add_argument("--frame", type=Path, default=DEFAULT_FRAME)
    parser.add_argument("--mask", type=Path, default=DEFAULT_MASK, help="GT mask the object prompts derive from")
    parser.add_argument("--json", type=Path, help="save the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    torch.manual_seed(0)
    clock = Clock(device)
    frame = cv2.cvtColor(cv2.imread(str(args.frame)), cv2.COLOR_BGR2RGB)
    masks = object_masks(cv2.imread(str(args.mask), cv2.IMREAD_GRAYSCALE) > 0, max(args.objects))
    model = build_seem("focalt").to(device)
    # random class-name embeddings instead of compute_vocabulary (text encoder; not part of the per-frame cost)
    vocabulary = torch.randn(model.config.num_classes + 1, model.config.decoder.dim_proj, device=device)
    model.set_class_embeddings(torch.nn.functional.normalize(vocabulary, dim=-1))
    work = Workload(model, frame, masks, args.short_side)

    with torch.inference_mode():
        flops, features = count_workload_flops(work, args.objects)
        matmul_max = args.matmul_max or (8192 if device.type == "cuda" else 4096)
        peaks = {p: matmul_peak(device, DTYPES[p], clock, matmul_max) for p in args.precisions}
        backbone, rows = ModuleTimer(model.backbone, clock), []
        for precision in args.precisions:
            rows += bench_precision(work, precision, args, clock, backbone, flops, peaks[precision][0])
    results = {"environment": environment(args, device, frame, features),
               "matmul_peak": {p: list(v) for p, v in peaks.items()}, "rows": rows}
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
