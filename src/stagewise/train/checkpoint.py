"""Checkpoints a run resumes from exactly: weights, optimizer, schedule, data position, RNG.

A checkpoint is a folder written under a temporary name and renamed into place, so a
crash never leaves a half-written one that looks complete::

    model.safetensors       the model's weights (and buffers, e.g. feature scaling)
    optimizer.safetensors   the optimizer's tensors (moments, step counts)
    state.json              step, epoch, stage, sampler position, optimizer groups, RNG
                            states, the running metric sums, the best-model record, the
                            training settings (the learning rate follows from the epoch)

Nothing is pickled: tensors go to safetensors, everything else to JSON, so loading a
checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from stagewise.errors import StagewiseError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(StagewiseError):
    pass


def _contiguous(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``model``, unwrapped from DDP, with tied weights stored once."""
    inner = getattr(model, "module", model)
    state = inner.state_dict()
    seen: dict[int, str] = {}
    out = {}
    for key, value in state.items():
        pointer = value.data_ptr()
        if pointer in seen and value.numel():  # tied (e.g. embeddings and LM head)
            continue
        seen[pointer] = key
        out[key] = value
    return _contiguous(out)


def save_weights(
    weights: Mapping[str, torch.Tensor], folder: Path, files: Mapping[str, str] | None = None
) -> None:
    """A model folder (``model.safetensors`` and small text ``files``), written whole or
    not at all: a temporary folder renamed into place."""
    temp = _temporary(folder)
    save_file(_contiguous(weights), str(temp / MODEL_FILE))
    for name, text in (files or {}).items():
        (temp / name).write_text(text, encoding="utf-8")
    _replace(temp, folder)


def _temporary(folder: Path) -> Path:
    temp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    return temp


def _replace(temp: Path, folder: Path) -> None:
    """Put ``temp`` at ``folder``; an old ``folder`` is moved away first and deleted only
    once the new one is in place, so a crash leaves one of the two whole."""
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(temp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_weights(model: torch.nn.Module, folder: Path) -> None:
    path = folder / MODEL_FILE
    if not path.exists():
        raise CheckpointError(
            "no model weights in the checkpoint",
            location=str(folder),
            hint=f"a checkpoint folder holds {MODEL_FILE}; pass the folder stagewise train wrote",
        )
    inner = getattr(model, "module", model)
    missing, unexpected = inner.load_state_dict(load_file(str(path)), strict=False)
    missing = [k for k in missing if not _tied(inner, k)]
    if missing or unexpected:
        raise CheckpointError(
            "the checkpoint's weights do not fit this model",
            location=str(path),
            hint=f"missing {missing[:5]}, unexpected {unexpected[:5]}: use the config the "
            "checkpoint was trained with",
        )


def _tied(model: torch.nn.Module, key: str) -> bool:
    state = model.state_dict()
    pointer = state[key].data_ptr()
    return any(k != key and v.data_ptr() == pointer for k, v in state.items())


def _split_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for param, values in state["state"].items():
        plain = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}.{name}"] = value
            else:
                plain[name] = value
        rest["state"][str(param)] = plain
    return _contiguous(tensors), rest


def _join_optimizer(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in rest["state"].items()}
    for key, value in tensors.items():
        param, _, name = key.partition(".")
        state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return tensors, {"python": list(random.getstate()[1]), "numpy": numpy_state}


def set_rng_state(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate((3, tuple(rest["python"]), None))
    numpy_state = dict(rest["numpy"])
    numpy_state["state"] = {
        **numpy_state["state"],
        "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32),
    }
    np.random.set_state(numpy_state)


def save(
    folder: Path,
    *,
    weights: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    state: Mapping[str, Any],
) -> Path:
    """Write a complete checkpoint at ``folder`` (atomically: temp folder, then rename).
    ``weights``: :func:`model_state` of the model (or a distributed strategy's gathered
    state); ``optimizer`` None keeps no optimizer state (DeepSpeed, FSDP)."""
    temp = _temporary(folder)
    save_file(_contiguous(weights), str(temp / MODEL_FILE))
    tensors, optimizer_rest = (
        _split_optimizer(optimizer.state_dict()) if optimizer is not None else ({}, None)
    )
    rng_tensors, rng_rest = rng_state()
    tensors.update({f"rng.{k}": v for k, v in _contiguous(rng_tensors).items()})
    save_file(tensors, str(temp / OPTIMIZER_FILE))
    document = {
        **state,
        "optimizer": optimizer_rest,
        "rng": rng_rest,
    }
    with (temp / STATE_FILE).open("w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    _replace(temp, folder)
    return folder


def load(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Restore ``folder`` into the objects given; return the rest of its state."""
    path = folder / STATE_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"cannot read the checkpoint state: {exc}",
            location=str(path),
            hint="pass a checkpoint folder that stagewise train wrote completely",
        ) from None
    load_weights(model, folder)
    tensors = load_file(str(folder / OPTIMIZER_FILE))
    if optimizer is not None and document.get("optimizer") is not None:
        optimizer.load_state_dict(
            _join_optimizer(
                {k: v for k, v in tensors.items() if not k.startswith("rng.")},
                document["optimizer"],
            )
        )
    set_rng_state(
        {k.removeprefix("rng."): v for k, v in tensors.items() if k.startswith("rng.")},
        document["rng"],
    )
    return document


def checkpoints(root: Path) -> list[Path]:
    """The complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / STATE_FILE).exists()]


def prune(root: Path, keep: int) -> None:
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
