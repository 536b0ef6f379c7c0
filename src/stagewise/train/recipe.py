"""``stagewise train``: the multi-dataset training recipe, top to bottom.

1. Read and check every record (labels against num_classes and num_labels, with file and
   line) before anything trains.
2. Build the model: per-dataset inputs, one shared head of ``num_labels``.
3. Resume from the newest checkpoint in ``output_dir/checkpoints`` when there is one.
4. Train: each step's logits are masked to the sample's own dataset's classes; every
   ``log_every`` steps the per-dataset training metrics are printed and logged; a partial
   evaluation (each dataset's ``eval_ratio`` share) runs every ``eval_every`` steps or at
   each epoch's end, and tracks the best model; checkpoints make the run resumable.
5. With a data release attached and the stage ``auto``, the StageController sees every
   epoch's loss and accuracy and may switch the stage; the next epoch trains on the new
   stage's mixture.
6. At the end, a full evaluation of the best model (or of every saved model).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stagewise.config.training import TrainConfig, TrainingSection
from stagewise.data.order import MixturePlan, MixtureSampler
from stagewise.errors import ConfigError, DataError, Problem
from stagewise.models import build_model
from stagewise.store.atomic import atomic_write
from stagewise.train import checkpoint, distributed
from stagewise.train.data import Split, batches, dataset_specs, describe_loading, eval_subset
from stagewise.train.evaluation import BEST_DIR, evaluate, final_evaluation, losses_of
from stagewise.train.metrics import Tally, available_metrics, eval_table, train_lines
from stagewise.train.sources import (
    Data,
    all_stage_shapes,
    load_data,
    stage_index,
    stage_setting,
)

FORECASTING_MODELS = ("timeseries",)


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    best: dict[str, Any] | None
    final: dict[str, float] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)


def task_of(config: TrainConfig) -> str:
    return "forecasting" if config.model.name in FORECASTING_MODELS else "classification"


def check_config(config: TrainConfig, task: str) -> None:
    """Config problems that need no data: reported together, before anything is read."""
    problems = []
    head = config.model.num_labels
    for name, settings in config.datasets.dataset_configs.items():
        where = f"datasets.dataset_configs.{name}.num_classes"
        if task == "classification" and settings.num_classes is None:
            problems.append(Problem(f"{name} has no num_classes", key=where))
        elif task == "classification" and settings.num_classes > head:
            problems.append(
                Problem(
                    f"{name} has {settings.num_classes} classes but model.num_labels is {head}",
                    key=where,
                    hint=f"raise model.num_labels to at least {settings.num_classes} (the "
                    "largest num_classes of all datasets)",
                )
            )
    tracking = config.training.best_model_tracking
    known = available_metrics(list(config.datasets.dataset_configs), task)
    if tracking.enabled and tracking.metric not in known:
        problems.append(
            Problem(
                f"best_model_tracking.metric {tracking.metric!r} is not a metric of this run",
                key="training.best_model_tracking.metric",
                hint=f"use one of {', '.join(known)}",
            )
        )
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the training config", problems=problems)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_fingerprint(config: TrainConfig) -> str:
    """What a checkpoint must agree with to be resumed: the model and the data settings."""
    relevant = {k: v for k, v in config.to_data().items() if k in ("model", "datasets", "data")}
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -------------------------------------------------------------------------- the recipe


def train(
    config: TrainConfig,
    *,
    resume: bool = True,
    echo: Callable[[str], None] = print,
    run_name: str | None = None,
) -> TrainResult:
    task = task_of(config)
    check_config(config, task)
    settings = config.training
    processes = distributed.start(settings)
    say = echo if processes.main else (lambda _text: None)
    out = Path(settings.output_dir)
    seed_everything(settings.seed)

    # 1. Data, checked before anything trains.
    controller = None
    first_stage = stage_setting(config) if config.release is not None else None
    if first_stage == "auto":
        from stagewise.release import StageController, open_release

        controller = StageController(open_release(config.release.path))  # type: ignore[union-attr]
        first_stage = controller.start()
    data = load_data(config, task, first_stage)
    shapes_from = all_stage_shapes(config, task) if config.release is not None else []
    say(describe_loading(data.train, "训练模式"))
    partial = eval_subset(data.val, config, settings.seed)
    if settings.evaluation.partial_eval_during_training and data.val.total:
        full_sizes = {n: len(t) for n, t in data.val.tables.items()}
        say(describe_loading(partial, "评估模式", full_sizes))
    _check_tracked_metric(config, partial)

    # 2. The model and its optimizer.
    model, classes = _model(config, task, data, shapes_from, processes.device)
    _fit_scaling(model, [data.train, *shapes_from])
    trained, optimizer, engine = _prepare(model, settings, processes)
    drop_last = processes.distributed if settings.drop_last is None else settings.drop_last
    if processes.distributed and not drop_last:
        raise ConfigError(
            "training.drop_last: false cannot run on several processes",
            location="training.drop_last",
            hint="every rank must take the same number of steps: leave drop_last out",
        )
    if settings.precision == "fp16" and processes.device.type != "cuda":
        raise ConfigError(
            "training.precision fp16 needs a GPU (its loss scaling runs on CUDA)",
            location="training.precision",
            hint="use bf16 or fp32 on CPUs",
        )
    eval_size = settings.eval_batch_size or 4 * settings.batch_size
    # Evaluation runs the plain model (a DDP forward would broadcast buffers, and a rank
    # without an eval batch would never join), except under FSDP, whose shards need every
    # rank in each forward pass: there every rank evaluates everything.
    runner = trained if settings.strategy == "fsdp" else None
    # fp16 needs its gradients scaled; the scaler is a pass-through otherwise.
    scaler = torch.amp.GradScaler(
        processes.device.type,
        enabled=settings.precision == "fp16" and processes.device.type == "cuda",
    )

    # 3. Resume from the newest checkpoint, or start over (an earlier run's files kept).
    step, epoch, best, last_eval = 0, 0, None, None
    sampler_state = None
    train_tally, epoch_tally = Tally(data.names, task), Tally(data.names, task)
    stages = [data.stage] if data.stage else []
    fingerprint = config_fingerprint(config)
    found = checkpoint.checkpoints(out / "checkpoints")
    if found and not resume:
        _set_aside(out, processes, say)
        found = []
    if found:
        state = checkpoint.load(found[-1], model=model, optimizer=optimizer)
        if state.get("config_fingerprint") != fingerprint:
            raise ConfigError(
                "the checkpoint in output_dir was trained with a different model or data",
                location=str(found[-1]),
                hint="pass --no-resume to start over, or use a new training.output_dir",
            )
        _warn_changed(state.get("training"), _training_settings(config), say)
        step, epoch, best = state["step"], state["epoch"], state.get("best")
        last_eval = state.get("last_eval")
        sampler_state = state["sampler"]
        if processes.main:  # the sums of every rank; the others start from zero
            train_tally.sums = torch.tensor(state["train_tally"], dtype=torch.float64)
            epoch_tally.sums = torch.tensor(state["epoch_tally"], dtype=torch.float64)
        stages = state.get("stages", stages)
        if state.get("stage") and state["stage"] != data.stage:
            data = load_data(config, task, state["stage"])
        if controller is not None and data.stage is not None:
            controller.continue_from(data.stage)
        say(f"↩️  resumed from {found[-1]} (step {step}, epoch {epoch})")

    from stagewise.train.trackers import open_trackers  # the trackers' libraries load here

    trackers = open_trackers(
        config,
        out,
        run_name=run_name or out.name,
        rank=processes.rank,
        resume_step=step if found else None,
    )
    with trackers:  # a run that fails closes its trackers as failed

        def save_checkpoint() -> None:
            # Every rank sums its tallies in (and gathers FSDP shards); rank 0 writes.
            sums = train_tally.reduced_sums(), epoch_tally.reduced_sums()
            weights = distributed.full_weights(trained, model)
            if not processes.main:
                return
            sharded = engine is not None or settings.strategy == "fsdp"
            checkpoint.save(
                out / "checkpoints" / f"step-{step:08d}",
                weights=weights,
                optimizer=None if sharded else optimizer,
                state={
                    "step": step,
                    "epoch": epoch,
                    "stage": data.stage,
                    "stages": stages,
                    "sampler": sampler.state_dict(),
                    "train_tally": sums[0],
                    "epoch_tally": sums[1],
                    "best": best,
                    "last_eval": last_eval,
                    "config_fingerprint": fingerprint,
                    "training": _training_settings(config),
                },
            )
            checkpoint.prune(out / "checkpoints", settings.keep_checkpoints)

        def partial_evaluation() -> dict[str, float] | None:
            """Evaluate the eval_ratio subset; track the best model. Returns the overall
            metrics (what the stage controller's conditions see)."""
            nonlocal best
            if not (settings.evaluation.partial_eval_during_training and partial.total):
                return last_eval
            tally = evaluate(
                runner or model, partial, data.names, task=task, classes=classes,
                batch_size=eval_size, processes=processes, precision=settings.precision,
                shard=runner is None,
            )  # fmt: skip
            say(eval_table(tally))
            trackers.log(tally.values("eval"), step)
            tracking = settings.best_model_tracking
            value = tally.tracked(tracking.metric) if tracking.enabled else None
            better = value is not None and _better(value, best, tracking.mode)
            keep = not tracking.save_best_only
            weights = distributed.full_weights(trained, model) if better or keep else {}
            if better:
                best = {"metric": tracking.metric, "value": value, "step": step, "epoch": epoch}
                if processes.main:
                    note = {"best.json": json.dumps(best, indent=1)}
                    checkpoint.save_weights(weights, out / BEST_DIR, note)
                say(f"🏆 发现更好模型! {tracking.metric}: {value:.4f} (步骤 {step})")
                trackers.log({"best_model_step": step, f"best_{tracking.metric}": value}, step)
            if processes.main and keep:
                checkpoint.save_weights(weights, out / "models" / f"step-{step:08d}")
            return tally.overall()

        # 4. Train.
        model.train()
        sampler = MixtureSampler(
            data.plan, settings.seed, epoch, rank=processes.rank, world_size=processes.world_size
        )
        if sampler_state is not None:
            sampler.load_state_dict(sampler_state)
        lr = settings.lr
        while epoch < settings.epochs:
            sampler.set_epoch(epoch)
            per_epoch = _steps(data.plan, settings.batch_size, processes.world_size, drop_last)
            for batch in batches(
                sampler, data.train, data.names, settings.batch_size, drop_last=drop_last
            ):
                done = -(-(sampler.consumed - batch.size) // settings.batch_size)  # before it
                lr = learning_rate(settings, epoch, done, per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = batch.to(processes.device)
                with distributed.autocast(settings.precision, processes.device):
                    outputs = trained(batch)
                per_sample, compared = losses_of(outputs, batch, task, classes)
                loss = per_sample.mean()
                if engine is not None:  # DeepSpeed steps, scales and clips by its config
                    engine.backward(loss)
                    engine.step()
                else:
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if settings.max_grad_norm:
                        scaler.unscale_(optimizer)
                        distributed.clip_gradients(trained, model, settings.max_grad_norm)
                    scaler.step(optimizer)
                    scaler.update()
                step += 1
                train_tally.add(batch.dataset, per_sample, compared, batch.targets)
                epoch_tally.add(batch.dataset, per_sample, compared, batch.targets)
                if step % settings.log_every == 0:
                    _log_training(train_tally, trackers, step, epoch, lr, say)
                if settings.eval_every and step % settings.eval_every == 0:
                    last_eval = partial_evaluation()
                    save_checkpoint()
                elif settings.checkpoint_every and step % settings.checkpoint_every == 0:
                    save_checkpoint()
            if step % settings.log_every:  # the epoch's last steps since the last log
                _log_training(train_tally, trackers, step, epoch, lr, say)
            if not settings.eval_every:
                last_eval = partial_evaluation()
            if data.stage is not None:  # the stage this epoch trained on, by priority
                trackers.log({"stage_index": float(stage_index(config, data.stage))}, step)
            epoch_tally.reduce()
            epoch_metrics = _epoch_metrics(epoch_tally, last_eval, task)
            epoch_tally.reset()
            epoch += 1
            if controller is not None:
                decision = controller.observe(epoch=epoch, metrics=epoch_metrics)
                if decision.switched:
                    _announce_switch(decision, epoch_metrics, trackers, say, step)
                    data = load_data(config, task, decision.to_stage)
                    stages.append(decision.to_stage)
                    sampler = MixtureSampler(
                        data.plan, settings.seed, epoch,
                        rank=processes.rank, world_size=processes.world_size,
                    )  # fmt: skip
                    train_tally = Tally(data.names, task)
                    epoch_tally = Tally(data.names, task)
            save_checkpoint()

        # 5. Full evaluation at the end.
        final: dict[str, float] = {}
        if settings.evaluation.full_eval_at_end and data.val.total:
            final = final_evaluation(
                config, model, data, out, best, task, classes, eval_size, processes, say, runner
            )
            trackers.log(final, step)
        summary = {"steps": step, **final}
        if best is not None:
            summary |= {"best_model_step": best["step"], f"best_{best['metric']}": best["value"]}
        trackers.summary(summary)
    if processes.main:
        result = {"steps": step, "best": best, "final": final, "stages": stages}
        atomic_write(out / "result.json", json.dumps(result, indent=1))
    distributed.stop()
    return TrainResult(out, step, best, final, stages)


def learning_rate(settings: TrainingSection, epoch: int, done: int, per_epoch: int) -> float:
    """The learning rate of the step after ``done`` steps of ``epoch``: a linear warm-up
    over ``warmup_ratio`` of the run, then the schedule. It is a function of the run's
    progress in epochs, so a stage switch that changes an epoch's length, or a resume,
    never moves it."""
    progress = (epoch + done / max(per_epoch, 1)) / settings.epochs
    warmup = settings.warmup_ratio
    if warmup and progress < warmup:
        return settings.lr * min(1.0, (progress + 1 / (per_epoch * settings.epochs)) / warmup)
    rest = (progress - warmup) / (1 - warmup) if warmup < 1 else 1.0
    if settings.scheduler == "linear":
        return settings.lr * max(0.0, 1.0 - rest)
    if settings.scheduler == "cosine":
        return settings.lr * 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))
    return settings.lr


def _model(
    config: TrainConfig, task: str, data: Data, more: list[Split], device: torch.device
) -> tuple[torch.nn.Module, torch.Tensor | None]:
    """The model for every dataset of the run, on ``device``, and each dataset's class
    count for logits masking (None when masking is off)."""
    specs = dataset_specs(data.names, [data.train, data.val, *more], config)
    model = build_model(
        config.model.name,
        datasets=specs,
        num_labels=config.model.num_labels,
        options=config.model.options,
        pretrained=config.model.pretrained_name,
    ).to(device)
    if task != "classification" or not config.datasets.enable_logits_masking:
        return model, None
    return model, torch.tensor([s.num_classes for s in specs], device=device)


def _steps(plan: MixturePlan, batch_size: int, world_size: int, drop_last: bool) -> int:
    per_rank = plan.total // world_size if drop_last else -(-plan.total // world_size)
    return max(1, per_rank // batch_size if drop_last else -(-per_rank // batch_size))


def _fit_scaling(model: torch.nn.Module, splits: list[Split]) -> None:
    fit = getattr(model, "fit_input_scaling", None)
    if fit is None:
        return
    for split in splits:
        for name, table in split.tables.items():
            for column, values in table.inputs.items():
                if len(values):
                    fit(name, column, values)


def _better(value: float, best: Mapping[str, Any] | None, mode: str) -> bool:
    if math.isnan(value):
        return False
    if best is None or math.isnan(best["value"]):
        return True
    return value > best["value"] if mode == "max" else value < best["value"]


def _log_training(
    tally: Tally, trackers: Any, step: int, epoch: int, lr: float, say: Callable
) -> None:
    tally.reduce()
    for line in train_lines(tally):
        say(line)
    values = tally.values("train") | {"epoch": float(epoch), "lr": float(lr)}
    trackers.log(values, step)
    tally.reset()


def _epoch_metrics(
    epoch_tally: Tally, last_eval: Mapping[str, float] | None, task: str
) -> dict[str, float]:
    """What the stage controller's conditions see: the epoch's training loss, and the
    accuracy of the latest evaluation (else of training)."""
    overall = epoch_tally.overall()
    metrics = {"loss": overall.get("loss", math.nan)}
    source = last_eval if last_eval else overall
    key = "accuracy" if task == "classification" else "mae"
    if key in source:
        metrics[key] = source[key]
    return metrics


def _check_tracked_metric(config: TrainConfig, partial: Split) -> None:
    """Best-model tracking on a dataset that has no evaluation data would never fire."""
    tracking = config.training.best_model_tracking
    if not (tracking.enabled and config.training.evaluation.partial_eval_during_training):
        return
    scope = tracking.metric.rpartition("_")[0]
    if scope != "overall" and scope not in partial.tables:
        raise ConfigError(
            f"best_model_tracking.metric {tracking.metric!r} names dataset {scope!r}, which "
            "has no evaluation data",
            location="training.best_model_tracking.metric",
            hint=f"add {scope}'s eval records (data.val_jsonl_list, or its store's "
            f"{config.release.val_split if config.release else 'test'} split), or track "
            f"one of: overall, {', '.join(partial.tables)}",
        )


def _prepare(
    model: torch.nn.Module, settings: TrainingSection, processes: distributed.Processes
) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """What the loop calls, the optimizer, and the DeepSpeed engine (None without it)."""
    if settings.strategy == "deepspeed":
        engine, optimizer = distributed.deepspeed_engine(model, settings)
        return engine, optimizer, engine
    trained = distributed.wrap(model, settings, processes)
    optimizer = torch.optim.AdamW(  # after wrapping: FSDP's parameters are its own
        [p for p in trained.parameters() if p.requires_grad],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )
    return trained, optimizer, None


def _training_settings(config: TrainConfig) -> dict[str, Any]:
    data = config.training.model_dump(mode="json")
    data.pop("output_dir", None)
    return data


def _warn_changed(before: Mapping[str, Any] | None, now: Mapping[str, Any], say: Callable) -> None:
    """A resumed run takes its training settings from the config it is given; say what
    changed (the result then differs from an uninterrupted run)."""
    if not before:
        return
    changed = [
        f"{k}: {before[k]!r} -> {now[k]!r}" for k in now if k in before and before[k] != now[k]
    ]
    if changed:
        say(
            "⚠️  resuming with changed training settings (they apply from here): "
            + "; ".join(changed)
        )


def _set_aside(out: Path, processes: distributed.Processes, say: Callable) -> None:
    """--no-resume in a folder an earlier run wrote: move that run's files into
    ``previous-<time>/`` so nothing is lost and nothing of it is resumed or pruned."""
    if processes.main:
        aside = out / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        for item in sorted(out.iterdir()):
            if item != aside and not item.name.startswith("previous-"):
                item.rename(aside / item.name)
        say(f"📦 an earlier run's files in {out} were moved to {aside}")
    if processes.distributed:
        torch.distributed.barrier()


def _announce_switch(
    decision: Any, metrics: Mapping[str, float], trackers: Any, say: Callable, step: int
) -> None:
    event = {
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
        "event": "stage_switch",
        "from_stage": decision.from_stage,
        "to_stage": decision.to_stage,
        "trigger": "auto",
        "condition": decision.condition,
        "metadata": {"epoch": decision.epoch, **metrics},
    }
    trackers.event("stage_switch", event)
    say(
        f"🔄 阶段切换: {decision.from_stage} → {decision.to_stage} "
        f"(epoch {decision.epoch}, {decision.condition}; step {step})"
    )


def evaluate_checkpoint(
    config: TrainConfig, folder: Path, *, echo: Callable[[str], None] = print
) -> dict[str, float]:
    """``stagewise eval``: the full evaluation of a saved model, on its own."""
    task = task_of(config)
    check_config(config, task)
    processes = distributed.start(config.training)
    stage = stage_setting(config) if config.release is not None else None
    data = load_data(config, task, None if stage == "auto" else stage)
    if not data.val.total:
        raise DataError(
            "there is no evaluation data",
            hint="list data.val_jsonl_list (or data.val_stores, or release.val_split)",
        )
    shapes_from = all_stage_shapes(config, task) if config.release is not None else []
    model, classes = _model(config, task, data, shapes_from, processes.device)
    checkpoint.load_weights(model, Path(folder))
    say = echo if processes.main else (lambda _text: None)
    say(describe_loading(data.val, "评估模式"))
    tally = evaluate(
        model, data.val, data.names, task=task, classes=classes,
        batch_size=config.training.eval_batch_size or 4 * config.training.batch_size,
        processes=processes, precision=config.training.precision,
    )  # fmt: skip
    say(eval_table(tally, "完整评估结果"))
    distributed.stop()
    return tally.values("final_eval")
