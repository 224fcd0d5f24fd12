"""Saving a trained model as a normal HF directory (LoRA merged), atomically, from the
main process; with FSDP or DeepSpeed every rank takes part in the gather.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..io import apply_umask


def save_final(trainer: Any, final: Path, lora: bool) -> None:
    """Save a normal HF directory (LoRA merged) at `final`, from the main process only.

    With DDP (or one process) every rank holds the whole model and the main one writes
    it; with FSDP or DeepSpeed the weights are sharded, so every rank takes part in
    Trainer.save_model, which gathers them (LoRA: the adapter, merged afterwards)."""
    if is_sharded(trainer):
        tmp = shared_temp_dir(trainer, final)
        trainer.save_model(str(tmp))
        if trainer.is_world_process_zero():
            gathered_into_place(tmp, final, lora)
    elif trainer.is_world_process_zero():
        write_model(trainer.model.merge_and_unload() if lora else trainer.model,
                    trainer.processing_class, final)  # fmt: skip
    trainer.accelerator.wait_for_everyone()


def write_model(model: Any, tokenizer: Any, final: Path) -> None:
    """Write model and tokenizer atomically: into a fresh temp folder beside `final`
    (unique per process), then renamed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_place(tmp: Path, final: Path) -> None:
    """Replace `final` by the finished folder `tmp`, with the user's umask (mkdtemp is
    0700, safetensors writes 0600)."""
    apply_umask(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def is_sharded(trainer: Any) -> bool:
    """Whether the weights are split across the processes (FSDP or DeepSpeed): saving
    then gathers them, and no rank holds them whole."""
    return bool(trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled)


def shared_temp_dir(trainer: Any, final: Path) -> Path:
    """A fresh folder beside `final` made by the main process; its name is sent to the
    others (they write nothing into it: Trainer.save_model writes from the main one)."""
    from accelerate.utils import broadcast_object_list

    name = [None]
    if trainer.is_world_process_zero():
        final.parent.mkdir(parents=True, exist_ok=True)
        name = [tempfile.mkdtemp(prefix=f".{final.name}.gather.", dir=final.parent)]
    return Path(broadcast_object_list(name)[0])


def gathered_into_place(tmp: Path, final: Path, lora: bool) -> None:
    """Move what Trainer.save_model gathered into `final`: a full model as it is, a LoRA
    adapter merged into its base model first."""
    try:
        if lora:
            from peft import AutoPeftModelForCausalLM
            from transformers import AutoTokenizer

            merged = AutoPeftModelForCausalLM.from_pretrained(str(tmp)).merge_and_unload()
            write_model(merged, AutoTokenizer.from_pretrained(str(tmp)), final)
        else:
            move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
