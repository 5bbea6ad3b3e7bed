"""Training: warm-up, then the generation loss with early stopping on validation; checkpoints and resume.

Readable in one sitting (the nanoGPT spirit):

1. Decide the split (by stimulus by default), check it for leaks, save split.json. Nothing is fitted before.
2. Fit the adapter's input standardisation on training frames only.
3. Warm-up (paper: 10 epochs, lr 1e-3): MSE from adapter outputs to the mean prompt embedding.
4. Main stage (Adam lr 1e-4, batch 8, clip 10, <= 100 epochs): cross-entropy on continuation + EOS; after each
   epoch the validation loss (never test) decides the checkpoint and early stopping (patience 10).

Every epoch ends with an atomic checkpoint (checkpoint/), so a run killed at any moment resumes with `--resume`
from the last finished epoch to the same result: shuffling and dropout are seeded per (stage, epoch), not from
a global RNG stream.

Data parallel with Accelerate (`accelerate launch -m brainllm.cli train ...`): each global batch of
`batch_size` samples is cut into equal contiguous parts, one per process, and the loss is normalised by the
token count of the whole global batch, so N processes compute exactly the single-process gradient.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import ExperimentConfig
from .data.dataset import BrainTextDataset
from .data.splits import Split, check_no_leak, make_split
from .errors import BrainLLMError
from .io import append_jsonl, read_json, read_jsonl, replace_dir, staging_dir, write_json, write_jsonl
from .model import BrainLLM, Collator, EncodedSample
from .model.aux_loss import AuxLoss
from .model.collate import permute_frames
from .model.ridge_init import fit_token_readout, ridge_initialise
from .progress import progress
from .runs import CheckpointPaths, RunPaths, build_model, load_trainable, save_trainable, write_run_file

log = logging.getLogger(__name__)


class TrainingError(BrainLLMError):
    """Training cannot go on (a non-finite loss, a resume that does not match the run folder...)."""


@dataclass
class TrainState:
    """Where training stands; saved as checkpoint/trainer_state.json after every epoch."""

    stage: str = "warmup"          # "warmup", "main" or "done"
    epoch: int = 0                 # epochs finished in this stage
    best_valid: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0            # main-stage epochs since the last improvement
    step: int = 0                  # optimizer steps taken, both stages
    skipped_batches: int = 0       # non-finite batches skipped (on_nan: skip)
    ridge_init: dict | None = None  # what `training.init: ridge` fitted (model.ridge_init.RidgeInit)
    token_readout: dict | None = None  # what the adapter's token readout fitted (model.ridge_init.ReadoutFit)


def _split_for(cfg: ExperimentConfig, dataset: BrainTextDataset) -> Split:
    method, seed = cfg.data.split, cfg.data.split_seed
    fractions = {"seed": seed, "valid_fraction": cfg.data.valid_fraction, "test_fraction": cfg.data.test_fraction}
    kwargs = {"kfold_by_stimulus": {"seed": seed, "valid_fraction": cfg.data.valid_fraction,
                                    "n_folds": cfg.data.n_folds, "fold": cfg.data.fold},
              "held_out_story": {"seed": seed, "valid_fraction": cfg.data.valid_fraction},
              "recorded": {}}.get(method, fractions)
    split = make_split(dataset, method, **kwargs, **cfg.data.split_options)
    if cfg.data.max_train_samples is not None and cfg.data.max_train_samples < len(split.train):
        keep = np.random.default_rng(cfg.data.split_seed).choice(len(split.train), cfg.data.max_train_samples,
                                                                 replace=False)
        split.train = [split.train[i] for i in sorted(keep)]
        split.info["max_train_samples"] = cfg.data.max_train_samples
    return split


def training_frames(cfg: ExperimentConfig, samples: Sequence[EncodedSample]) -> list[EncodedSample]:
    """The training samples with the frames the run learns from: their own, or for the noise-trained control
    (`training.permute_frames`) the frames of another training sample from another stimulus (one fixed
    derangement, seeded by `training.seed`), so the adapter can learn a prompt but no brain mapping. Validation and
    test samples always keep their own frames."""
    if not cfg.training.permute_frames:
        return list(samples)
    return permute_frames(samples, cfg.training.seed)


class Trainer:
    """Owns the model, the data and the run folder of one training run."""

    def __init__(self, cfg: ExperimentConfig, resume: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.cfg = cfg
        self.run_dir = Path(cfg.output)
        self.paths = RunPaths(self.run_dir)
        self.accelerator = Accelerator(cpu=cfg.training.cpu, kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True)])  # warm-up leaves the boundary unused
        self.is_main = self.accelerator.is_main_process
        if self.accelerator.num_processes > 1 and self.is_main:
            log.info("Data parallel over %d processes (%s): each global batch of %d samples is cut between them",
                     self.accelerator.num_processes, self.accelerator.distributed_type, cfg.training.batch_size)
        self.dataset = BrainTextDataset.load(cfg.data.path)
        self.state = TrainState()
        self._prepare_run_folder(resume)
        torch.manual_seed(cfg.training.seed)  # the adapter's initial weights are part of the config
        self.model, self.encoder = build_model(cfg, self.dataset.feature_dim, self.accelerator.device)
        layout = "no_text" if cfg.model.condition == "no_text" else "brain"
        self.collate = Collator(self.dataset.frames, self.encoder, layout, warmup_target=cfg.training.warmup_target,
                                tokens_per_frame=self.model.adapter.tokens_per_frame)
        self.train_samples = training_frames(cfg, self.encoder.encode_all(self.dataset, self.split.train))
        self.valid_samples = self.encoder.encode_all(self.dataset, self.split.valid)
        rows = sorted({r for s in self.train_samples for r in s.frame_rows})
        if cfg.model.standardize_frames:
            self.model.adapter.fit_input_scaler(np.asarray(self.dataset.frames[rows]))  # training frames only
        resuming = resume and self.paths.checkpoint.trainer_state.exists()
        if cfg.model.inject_layer is not None and not resuming:  # a resumed run loads it with its checkpoint
            self.model.state_centre.copy_(self._mean_text_state(self.train_samples))
        if cfg.training.init == "ridge" and not resuming:  # replaces the warm-up (a resumed run has its weights)
            start = time.perf_counter()
            fitted = ridge_initialise(self.model, self.collate, self.train_samples, cfg.training.ridge_scale,
                                      seed=cfg.training.seed, batch_size=cfg.training.eval_batch_size)
            self.state.ridge_init = {**fitted.to_json(), "seconds": round(time.perf_counter() - start, 2)}
            log.info("Ridge initialisation of the adapter: %s", self.state.ridge_init)
        if self.model.adapter.readout is not None and not resuming:  # part of the model: fitted before any step
            # its target is all the text perceived around the frames, whatever the warm-up regresses onto
            text = Collator(self.dataset.frames, self.encoder, layout, warmup_target="text")
            fitted = fit_token_readout(self.model, text, self.train_samples, seed=cfg.training.seed)
            self.state.token_readout = fitted.to_json()
            log.info("Token readout of the adapter: %s", self.state.token_readout)
        t = cfg.training
        self.aux = AuxLoss(t.aux_loss, t.aux_margin, t.aux_temperature) if t.aux_loss else None
        if resuming:
            self._load_checkpoint()
            if self._extend_finished_run() and self.is_main:
                write_run_file(self.run_dir, cfg, self.dataset.feature_dim, self.model)  # records the new schedule
        elif self.is_main:
            write_run_file(self.run_dir, cfg, self.dataset.feature_dim, self.model)

    @torch.no_grad()
    def _mean_text_state(self, samples: Sequence[EncodedSample]) -> torch.Tensor:
        """`(H,)` the mean over `samples` of their warm-up text's layer-L state (`BrainLLM.text_states`): the
        state an injecting model's adapter outputs are added to."""
        total = torch.zeros(self.model.hidden_size, device=self.accelerator.device)
        for start in range(0, len(samples), self.cfg.training.eval_batch_size):
            batch = self.collate(samples[start:start + self.cfg.training.eval_batch_size]).to(self.accelerator.device)
            total += self.model.text_states(batch.warmup_ids, batch.warmup_mask).sum(0)
        return total / max(len(samples), 1)

    # ------------------------------------------------------------------ run folder
    def _prepare_run_folder(self, resume: bool) -> None:
        split_path = self.paths.split
        if resume and split_path.exists():
            self.split = Split.from_json(read_json(split_path))
            check_no_leak(self.dataset, self.split)
            return
        if not resume and self.paths.metrics.exists():
            raise TrainingError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose "
                                "another output folder.")
        self.split = _split_for(self.cfg, self.dataset)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(split_path, self.split.to_json())
        log.info("Split %s: %d train / %d valid / %d test samples", self.split.method, len(self.split.train),
                 len(self.split.valid), len(self.split.test))

    def _save_checkpoint(self, optimizer: torch.optim.Optimizer) -> None:
        """Atomically replace checkpoint/ with the current trainable weights, optimizer and state."""
        if not self.is_main:
            return
        final = self.paths.checkpoint.folder
        tmp = CheckpointPaths(staging_dir(final))
        save_trainable(self._unwrapped, tmp.trainable)
        torch.save(optimizer.state_dict(), tmp.optimizer)
        write_json(tmp.trainer_state, self.state.__dict__)
        replace_dir(tmp.folder, final, overwrite=True)

    def _load_checkpoint(self) -> None:
        checkpoint = self.paths.checkpoint
        self.state = TrainState(**read_json(checkpoint.trainer_state))
        load_trainable(self.model, checkpoint.trainable)
        self._resume_optimizer = torch.load(checkpoint.optimizer, weights_only=True, map_location="cpu")
        # metrics lines written after the checkpoint belong to an epoch that will be redone
        rows = read_jsonl(self.paths.metrics) if self.paths.metrics.exists() else []
        keep = [r for r in rows if r["stage"] == "warmup" and (self.state.stage != "warmup" or r["epoch"] <= self.state.epoch)
                or r["stage"] == "main" and self.state.stage in ("main", "done") and r["epoch"] <= self.state.epoch]
        if self.is_main:
            write_jsonl(self.paths.metrics, keep)
        log.info("Resuming from %s epoch %d (best validation loss %.4f)", self.state.stage, self.state.epoch,
                 self.state.best_valid)

    def _extend_finished_run(self) -> bool:
        """A finished run resumed with more main epochs (or more patience) than it stopped at goes on training.

        Epoch seeds depend only on (stage, epoch), so 4 epochs then `--resume --set training.epochs=10` give the
        same weights as 10 epochs straight.
        """
        cfg = self.cfg.training
        if self.state.stage != "done" or self.state.epoch >= cfg.epochs or self.state.bad_epochs >= cfg.patience:
            return False
        log.info("Extending the finished run from main epoch %d to at most %d", self.state.epoch, cfg.epochs)
        self.state.stage = "main"
        return True

    @property
    def _unwrapped(self) -> BrainLLM:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------ data
    def _global_batches(self, samples: Sequence[EncodedSample], batch_size: int, seed: int | None
                        ) -> list[list[EncodedSample]]:
        order = np.arange(len(samples)) if seed is None else np.random.default_rng(seed).permutation(len(samples))
        world = self.accelerator.num_processes
        batches = [[samples[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
        if world > 1 and batches and len(batches[-1]) < world:
            batches.pop()  # every process needs at least one sample of each global batch
        return batches

    def _local(self, batch: list[EncodedSample]) -> list[EncodedSample]:
        parts = np.array_split(np.arange(len(batch)), self.accelerator.num_processes)
        return [batch[i] for i in parts[self.accelerator.process_index]]

    def _global_sum(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value.detach().float(), reduction="sum")

    # ------------------------------------------------------------------ loops
    def _run_epoch(self, optimizer, stage: str, epoch: int) -> dict:
        """One pass over the training data; returns the epoch's metrics row."""
        cfg = self.cfg.training
        seed = cfg.seed * 1000 + epoch + (0 if stage == "warmup" else 500)
        torch.manual_seed(seed)  # dropout: same masks on resume
        batches = self._global_batches(self.train_samples, cfg.batch_size, seed)
        if cfg.max_steps_per_epoch:
            batches = batches[: cfg.max_steps_per_epoch]
        self.model.train()
        aux = self.aux if stage == "main" else None
        total, count, n_samples, aux_total, start = 0.0, 0.0, 0, 0.0, time.perf_counter()
        bar = progress(batches, f"{stage} {epoch + 1}", enabled=self.is_main)
        for k, batch in enumerate(bar):
            out = self.model(self.collate(self._local(batch)).to(self.accelerator.device), warmup=(stage == "warmup"),
                             aux=aux)
            n_global = self._global_sum(out["n_tokens"])
            loss = out["loss_sum"] / n_global * self.accelerator.num_processes  # DDP averages over processes
            batch_loss = float(self._global_sum(out["loss_sum"]) / n_global)
            if aux is not None:  # each process's mean; DDP averages them
                loss = loss + cfg.aux_weight * out["aux"]
                aux_total += float(self._global_sum(out["aux"])) / self.accelerator.num_processes
            if not math.isfinite(batch_loss):
                self._non_finite(stage, epoch, k, batch)
                optimizer.zero_grad(set_to_none=True)
                continue
            self.accelerator.backward(loss)
            if cfg.grad_clip:
                self.accelerator.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            total += batch_loss * float(n_global)
            count += float(n_global)
            n_samples += len(batch)
            if self.is_main:
                bar.set_postfix(loss=f"{batch_loss:.4f}", samples_s=f"{n_samples / (time.perf_counter() - start):.1f}")
        seconds = time.perf_counter() - start
        row = {"stage": stage, "epoch": epoch + 1, "train_loss": total / max(count, 1.0),
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
               "samples_per_s": round(n_samples / max(seconds, 1e-9), 2), "step": self.state.step}
        if aux is not None:
            row["train_aux"] = aux_total / max(len(batches), 1)
        return row

    def _non_finite(self, stage: str, epoch: int, k: int, batch: list[EncodedSample]) -> None:
        where = f"{stage} epoch {epoch + 1}, batch {k} (samples {[s.id for s in batch][:4]}...)"
        if self.cfg.training.on_nan == "skip":
            self.state.skipped_batches += 1
            log.warning("Non-finite loss at %s; batch skipped (on_nan=skip)", where)
            return
        raise TrainingError(f"Non-finite loss at {where}. Check those samples' frames, lower the learning rate, "
                            "or set training.on_nan=skip to drop such batches.")

    @torch.inference_mode()
    def evaluate(self, samples: Sequence[EncodedSample], warmup: bool = False) -> float:
        """Token-pooled mean loss (nats per target token) over `samples`, shared across processes."""
        self.model.eval()
        total = torch.zeros((), device=self.accelerator.device)
        count = torch.zeros((), device=self.accelerator.device)
        for batch in self._global_batches(samples, self.cfg.training.eval_batch_size, None):
            local = self._local(batch)
            if not local:
                continue
            out = self._unwrapped(self.collate(local).to(self.accelerator.device), warmup=warmup)
            total += out["loss_sum"].float()
            count += out["n_tokens"].float()
        return float(self._global_sum(total) / self._global_sum(count).clamp(min=1))

    def _optimizer(self, params, lr: float, resume: bool) -> torch.optim.Optimizer:
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=self.cfg.training.weight_decay)
        if resume and getattr(self, "_resume_optimizer", None) is not None:
            optimizer.load_state_dict(self._resume_optimizer)
            self._resume_optimizer = None
        return optimizer

    def _log_epoch(self, row: dict) -> None:
        if self.is_main:
            append_jsonl(self.paths.metrics, row)
            valid = f"{row['valid_loss']:.4f}" if row.get("valid_loss") is not None else "-"
            log.info("%s epoch %d: train %.4f  valid %s  %.1f samples/s  %.1fs", row["stage"], row["epoch"],
                     row["train_loss"], valid, row["samples_per_s"], row["seconds"])

    def fit(self) -> TrainState:
        """Run (or finish) both stages. Returns the final state; the best checkpoint is RUN/adapter.safetensors."""
        cfg = self.cfg.training
        self.model = self.accelerator.prepare(self.model)
        if self.state.stage == "warmup":
            adapter_params = [p for p in self._unwrapped.adapter.parameters() if p.requires_grad]
            optimizer = self.accelerator.prepare(self._optimizer(adapter_params, cfg.warmup_lr, resume=True))
            while self.state.epoch < (0 if cfg.init == "ridge" else cfg.warmup_epochs):  # ridge replaces it
                row = self._run_epoch(optimizer, "warmup", self.state.epoch)
                row["valid_loss"] = self.evaluate(self.valid_samples, warmup=True)  # MSE, logged only
                self.state.epoch += 1
                self._log_epoch(row)
                self._save_checkpoint(optimizer)
            self.state.stage, self.state.epoch = "main", 0
            self._select(self.evaluate(self.valid_samples), epoch=0)  # the warmed-up adapter is the first candidate
            self._save_checkpoint(optimizer)
        if self.state.stage == "main":
            params = [p for p in self.model.parameters() if p.requires_grad]
            optimizer = self.accelerator.prepare(self._optimizer(params, cfg.lr, resume=self.state.epoch > 0))
            while self.state.epoch < cfg.epochs and self.state.bad_epochs < cfg.patience:
                row = self._run_epoch(optimizer, "main", self.state.epoch)
                self.state.epoch += 1
                row["valid_loss"] = self.evaluate(self.valid_samples)
                self._select(row["valid_loss"], self.state.epoch)
                row["best_valid_loss"] = self.state.best_valid
                self._log_epoch(row)
                self._save_checkpoint(optimizer)
            self.state.stage = "done"
            self._save_checkpoint(optimizer)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            log.info("Training done: best validation loss %.4f at main epoch %d; checkpoint %s",
                     self.state.best_valid, self.state.best_epoch, self.paths.adapter)
        return self.state

    def _select(self, valid_loss: float, epoch: int) -> None:
        """Model selection on the validation split: keep the best checkpoint, count epochs without improvement."""
        if valid_loss < self.state.best_valid - self.cfg.training.min_delta:
            self.state.best_valid, self.state.best_epoch, self.state.bad_epochs = valid_loss, epoch, 0
            if self.is_main:
                save_trainable(self._unwrapped, self.paths.adapter)
                if self.cfg.model.finetune == "full":
                    from safetensors.torch import save_file

                    save_file({k: v.contiguous() for k, v in self._unwrapped.backbone.state_dict().items()},
                              str(self.paths.backbone))
        else:
            self.state.bad_epochs += 1


def train(cfg: ExperimentConfig, resume: bool = False) -> TrainState:
    """Train a BrainLLM run described by `cfg` into `cfg.output` (see the module docstring)."""
    return Trainer(cfg, resume=resume).fit()
