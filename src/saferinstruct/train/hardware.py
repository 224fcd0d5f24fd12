"""The model a training starts from, and the precision the hardware wants.

TRL's configs default to `bf16=True` and `gradient_checkpointing=True`, even on a CPU;
on CPUs without bf16 matrix units that made an SFT step 12x slower. We pick precision
from the hardware instead: bf16 on a GPU that supports it, else fp32, and no gradient
checkpointing unless asked. LoRA adapters (`lora_config`) on every projection, or on the
top share of the layers.

    model, tokenizer, dtype = load_base(ModelConfig())
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import LORA_RANK, ModelConfig

log = logging.getLogger("saferinstruct")


def hardware_args(device: str = "auto") -> dict[str, Any]:
    """TrainingArguments fields that depend on the machine (`device` 'cpu' keeps a
    GPU machine's training on the CPU)."""
    import torch

    cuda = torch.cuda.is_available() and device != "cpu"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return {
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": not cuda,
        "dataloader_num_workers": 0,
    }


def load_base(base_model: ModelConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, dtype) of the base model: in its config's dtype, or with
    `dtype: auto` in the precision the hardware wants."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..llm.local import resolve_model_path

    base = resolve_model_path(base_model.model)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.float32
    if base_model.dtype != "auto":
        dtype = getattr(torch, base_model.dtype)
    elif hardware_args(base_model.device)["bf16"]:
        params = parameter_count(base)
        gpu = torch.cuda.get_device_properties(0).total_memory
        dtype = torch.float32 if fp32_training_fits(params, gpu) else torch.bfloat16
        log.info("%.2fB parameters: %s weights, bf16 autocast", params / 1e9, dtype)
    return AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype), tokenizer, dtype

FP32_TRAINING_BYTES = 16
"""Per parameter, full fine-tune with AdamW in fp32: weights 4, gradients 4, moments 8."""


def fp32_training_fits(params: int, gpu_bytes: int, share: float = 0.5) -> bool:
    """Whether fp32 master weights (with bf16 autocast: mixed precision) fit a GPU.

    They do when weights, gradients and optimizer state take at most `share` of its
    memory (the rest for activations). Pure bf16 weights round small updates away
    (reverse tuning of the 135M model on 800 pairs: 0.284 / 0.589 with bf16 weights on
    an H100, 0.331 / 0.655 in fp32 on a CPU; other library versions there too), so they
    are kept for models that would not fit otherwise, such as a 7B full fine-tune on one
    80 GB card."""
    return params * FP32_TRAINING_BYTES <= share * gpu_bytes


def parameter_count(model_dir: Path) -> int:
    """Parameters of the model in `model_dir`, counted on the meta device (no weights
    are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def step_adapters(model: Any, step: Any) -> Any:
    """The LoRA config an `sft` or `dpo` step (`TrainStepConfig`) asks for on `model`
    (its `lora_top_fraction` and `lora_rank`); None for a full fine-tune."""
    return lora_config(model, step.lora_top_fraction, step.lora_rank) if step.lora else None


def lora_config(model: Any = None, top_fraction: float = 1.0, rank: int = LORA_RANK) -> Any:
    """LoRA on every attention and MLP projection, rank `rank` with alpha twice the rank
    (the scale alpha / r stays 2 whatever the rank).

    With `top_fraction` < 1, only the top share of `model`'s layers get adapters: the
    backward pass then stops at the lowest adapted layer and the layers below run
    without keeping activations, which is most of a CPU step (benchmarks/dpo_speed.py)."""
    from peft import LoraConfig

    layers = None
    if top_fraction < 1.0:
        if not 0.0 < top_fraction:
            raise ValueError("top_fraction must be in (0, 1]")
        n = int(model.config.get_text_config().num_hidden_layers)
        k = max(1, round(n * top_fraction))
        layers = list(range(n - k, n))
    return LoraConfig(
        layers_to_transform=layers,
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],  # fmt: skip
        task_type="CAUSAL_LM",
    )


def effective_hardware(args: Any) -> dict[str, Any]:
    """What the trainer really ran with (a config's trainer_args can override the
    hardware defaults, e.g. gradient checkpointing for the 7B config)."""
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    return {
        "device": str(args.device),
        "precision": precision,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }
