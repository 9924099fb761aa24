"""A cell's training settings as training and embedding read them: the
defaults of keys added after the first schema (:data:`SPEED_DEFAULTS`), the
device outside a job, the backbone's input view and the speed settings.

Speed settings (``training.precision``, ``channels_last``, ``compile``, see
:func:`resolve_speed`) change the arithmetic, not the algorithm: bf16
autocast runs the backbone in bfloat16 and the loss in float32.
"""

from __future__ import annotations

import torch

from workflow.augment import RRC_CROP_FRACTION, RRC_RATIO, RRC_SCALE

# Training keys added after the first schema; settings built by hand (tests,
# benchmarks) may omit them and get these values, the schema's defaults.
SPEED_DEFAULTS = {
    "augment": "none",
    "augment_padding": 4,
    "input_size": None,
    "augment_scale": {"min": RRC_SCALE[0], "max": RRC_SCALE[1]},
    "augment_ratio": {"min": RRC_RATIO[0], "max": RRC_RATIO[1]},
    "eval_crop_fraction": None,
    "precision": "auto",
    "channels_last": "auto",
    "compile": False,
    "checkpoint_every": 1,
    "data_on_device": True,
    "loader_workers": 4,
}


def select_device(requested: str = "auto") -> torch.device:
    """The device of ``training.device`` outside a job (tests, benchmarks);
    jobs claim theirs with :func:`workflow.devices.claim_device`."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def training_option(cfg: dict, key: str):
    return cfg.get(key, SPEED_DEFAULTS[key])


def bounds(cfg: dict, key: str) -> tuple[float, float]:
    """(min, max) of a range setting (``training.augment_scale``, ``augment_ratio``)."""
    value = training_option(cfg, key)
    return value["min"], value["max"]


def input_view(cfg: dict, height: int, width: int) -> tuple[int | None, float]:
    """The backbone's input side and the evaluation crop fraction of
    training settings ``cfg`` for images stored at ``height`` x ``width``:
    ``training.input_size``, or with ``augment: rrc*`` the stored shorter
    side, or None (the stored images as they are: the default);
    ``training.eval_crop_fraction``, or 0.875 with ``rrc*`` (torchvision's
    224 of 256), else 1 (the whole image)."""
    rrc = training_option(cfg, "augment") in ("rrc", "rrc_flip")
    size = training_option(cfg, "input_size")
    if size is None and rrc:
        size = min(height, width)
    fraction = training_option(cfg, "eval_crop_fraction")
    if fraction is None:
        fraction = RRC_CROP_FRACTION if rrc else 1.0
    return size, fraction


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX),
    where oneDNN's bf16 kernels beat fp32; without them PyTorch emulates
    bf16, usually slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_speed(cfg: dict, device: torch.device) -> dict:
    """The effective speed settings of a cell on ``device``: ``auto`` is
    the fastest measured setting (benchmarks/throughput.py) that keeps the
    CPU's numbers the same on every CPU.

    - ``precision``: ``auto`` is ``fp32`` on the CPU, so that the default
      config gives the same numbers on every CPU (with ``bf16`` they would
      depend on whether the CPU computes bfloat16 natively), and ``bf16`` on
      a CUDA device that supports bfloat16 (there results depend on the GPU
      model and library versions anyway; ``fp32`` pins them closer). ``bf16``
      stays available on the CPU: 1.6-1.9x fp32's training speed on a 2-core
      AMD EPYC with AVX512-BF16 (:func:`cpu_has_native_bf16`;
      benchmarks/throughput.py), emulated and slower on CPUs without it.
    - ``channels_last``: ``auto`` is on (tensor cores want NHWC; on the
      CPU it trained convolutional backbones 1.1-1.5x faster in fp32 and up
      to 1.4x in bf16, and left Swin-T unchanged).
    - ``compile``: ``torch.compile`` of backbone and loss (``True`` is the
      ``default`` mode; a mode name is passed on), only when asked: it
      costs tens of seconds per job before the first step, which the short
      cells of this benchmark do not win back, and it needs a C++ compiler.
    """
    precision = training_option(cfg, "precision")
    if precision == "auto":
        precision = (
            "bf16"
            if device.type == "cuda" and torch.cuda.is_bf16_supported()
            else "fp32"
        )
    if precision not in ("fp32", "bf16"):
        raise ValueError(
            f"training.precision: unknown precision {precision!r}; use auto, fp32 or bf16"
        )
    channels_last = training_option(cfg, "channels_last")
    compile = training_option(cfg, "compile")
    return {
        "precision": precision,
        "channels_last": True if channels_last == "auto" else bool(channels_last),
        "compile": "default"
        if compile is True
        else compile,  # False or a torch.compile mode
    }
