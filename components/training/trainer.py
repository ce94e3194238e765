"""One phase training in this process: alone, or as one rank under torchrun (DDP: each rank takes its slice of every global batch).

components.training.phase.train_phase decides where the phase runs; this is what every
rank runs. A rerun with the same output_uri resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sys
import time
from dataclasses import asdict
from statistics import median

import torch

from components.core import allocator
from components.core import batches as batching
from components.core import bert
from components.training import checkpoints
from components.training import distributed
from components.core import models
from components.core import storage
from components.core import instances as instance_format
from components.training.dynamic_masking import DynamicMasking
from components.core.errors import BertpipeError
from components.core.scoring import pretraining_metrics
from components.training.lazy_dynamo import compile_model
from components.training.loss_curve import plot_loss_curve
from components.core.masking import MaskingConfig
from components.training.optimization import make_optimizer, make_scheduler
from components.training.stream import TrainingStream
from components.training.precision import Precision
from components.training.throughput import batch_counts, batch_training_flops, peak_flops
from components.core.progress import Progress
from components.core.tracking import Tracking, background_step_run, mlflow_errors
from components.core.vocab_files import load_vocab_info, load_vocab_tokens, mask_token_id
from components.training.settings import TrainingSettings

log = logging.getLogger(__name__)

# Settings that must be equal to continue a run from its checkpoints.
RESUME_KEYS = ("max_seq_length", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size", "seed", "optimizer", "data_manifest_sha256")


class PhaseRun:
    """The state of one phase while it trains: model, optimizer, data stream and history."""

    def __init__(self, data_uri: str, vocab_uri: str, output_uri: str, settings: TrainingSettings, tracking: Tracking | None):
        self.data_uri, self.vocab_uri, self.output_uri = data_uri, vocab_uri, output_uri
        self.settings, self.tracking = settings, tracking
        self.placement = distributed.start()
        self.device = self.placement.device
        self.peak_flops = peak_flops(self.device, settings.peak_tflops)
        self.precision = Precision(settings.mixed_precision, self.device)
        self.vocab_info = load_vocab_info(self.vocab_uri)
        self.manifest = instance_format.read_manifest(self.data_uri)
        instance_format.check_compatible(self.manifest, self.data_uri, max_seq_length=settings.max_seq_length, vocab_sha256=self.vocab_info["sha256"])
        self.manifest_sha256 = instance_format.manifest_sha256(self.data_uri)
        self.model = self._initial_model()
        self.forward = models.MaskedPretrainingModel(self.model).to(self.device)
        self.optimizer = make_optimizer(self.model, settings.optimizer, settings.learning_rate, settings.weight_decay, eps=settings.adam_epsilon)
        self.scheduler = make_scheduler(
            self.optimizer, warmup_steps=settings.warmup_steps, total_steps=settings.max_steps, schedule=settings.lr_scheduler_type, power=settings.lr_power
        )
        self.step, self.history, self.resumed_from, self.checkpoint_step = 0, [], None, None
        position = self._resume()
        self.stream = TrainingStream(
            self.data_uri,
            self.manifest,
            batch_size=settings.per_device_train_batch_size,
            seed=settings.seed,
            rank=self.placement.rank,
            world_size=self.placement.world_size,
            position=position,
            masking=self._dynamic_masking(),
            packed=settings.pack_sequences,
        )
        self.trained = self.forward
        if self.placement.world_size > 1:
            self.trained = torch.nn.parallel.DistributedDataParallel(self.forward, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if settings.torch_compile:
            self.trained = compile_model(self.trained)

    def _dynamic_masking(self) -> DynamicMasking | None:
        """Fresh masks each epoch when the data's train split was stored unmasked (create-pretraining-data --dynamic-masking)."""
        data_settings = self.manifest["settings"]
        if not data_settings.get("dynamic_masking"):
            return None
        log.info("dynamic masking: the train split is masked anew each epoch")
        return DynamicMasking(MaskingConfig.for_vocab(load_vocab_tokens(self.vocab_uri), data_settings), self.settings.seed)

    @property
    def global_batch_size(self) -> int:
        return self.settings.per_device_train_batch_size * self.settings.gradient_accumulation_steps * self.placement.world_size

    def _initial_model(self):
        settings = self.settings
        torch.manual_seed(settings.seed)
        if settings.init_model:
            log.info("initialising from %s", settings.init_model)
            model = bert.from_transformers(models.load_model(settings.init_model))
        else:
            model = models.build_model(settings.model_size, self.vocab_info["size"])
        models.check_vocab_size(model, self.vocab_info["size"], f"vocab {self.vocab_uri}")
        if settings.max_seq_length > model.config.max_position_embeddings:
            raise BertpipeError(f"max_seq_length {settings.max_seq_length} exceeds the model's {model.config.max_position_embeddings} positions")
        # Dropout draws from here on; every rank gets its own stream.
        torch.manual_seed(settings.seed + self.placement.rank)
        return model

    def _fingerprint(self) -> dict:
        return {
            "max_seq_length": self.settings.max_seq_length,
            "per_device_train_batch_size": self.settings.per_device_train_batch_size,
            "gradient_accumulation_steps": self.settings.gradient_accumulation_steps,
            "world_size": self.placement.world_size,
            "seed": self.settings.seed,
            "optimizer": self.settings.optimizer,
            "data_manifest_sha256": self.manifest_sha256,
            "model_shape": models.model_shape(self.model),
        }

    def _resume(self) -> int:
        """Continue from the newest complete checkpoint, if any; returns this rank's data position."""
        uri = checkpoints.latest(self.output_uri)
        if uri is None:
            return 0
        state = checkpoints.read_trainer_state(uri)
        if state["step"] > self.settings.max_steps:  # resuming would publish a model trained past the steps asked for
            raise BertpipeError(f"{uri} is at step {state['step']}, past max_steps={self.settings.max_steps}: raise --max-steps to at least "
                                f"{state['step']}, or use a new output_uri to train from scratch")
        mine = self._fingerprint()
        if state["run"]["model_shape"] != mine["model_shape"]:
            theirs = state["run"]["model_shape"]
            diff = ", ".join(f"{k} {theirs.get(k)} vs {v}" for k, v in mine["model_shape"].items() if theirs.get(k) != v)
            raise BertpipeError(f"checkpoint {uri} is of another model shape ({diff}); use a new output_uri or the same model_size/init_model")
        changed = [f"{k} {state['run'][k]!r} -> {mine[k]!r}" for k in RESUME_KEYS if state["run"].get(k) != mine[k]]
        if changed:
            raise BertpipeError(f"{self.output_uri} holds checkpoints of a run with other settings ({'; '.join(changed)}); use a new output_uri or the same settings")
        state, rng_states = checkpoints.restore(uri, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                                    scaler=self.precision.scaler)
        checkpoints.set_rng_state(rng_states[self.placement.rank], self.device)
        self.step, self.history, self.resumed_from = state["step"], state["history"], uri
        self.checkpoint_step = self.step
        return state["positions"][self.placement.rank]

    def run(self) -> dict:
        settings = self.settings
        params = {"data_uri": self.data_uri, "vocab_uri": self.vocab_uri, "output_uri": self.output_uri, **asdict(settings),
                  **{f"model_{k}": v for k, v in models.model_shape(self.model).items()}}
        params.update(global_batch_size=self.global_batch_size, world_size=self.placement.world_size, device=str(self.device),
                      num_parameters=self.model.num_parameters(), allocator=allocator.describe(), precision=self.precision.name)
        log.info("training %s for %d steps at %d tokens, global batch %d, on %s", settings.model_size if not settings.init_model else settings.init_model,
                 settings.max_steps, settings.max_seq_length, self.global_batch_size, self.device)
        logs_to_mlflow = self.tracking is not None and self.placement.is_main
        # Training starts while the run opens in the background; a server that dies mid-run must not stop it: metrics
        # go through a buffer (closed on failure too, sending what was measured before it), closing the run may fail.
        run_context = background_step_run(self.tracking, f"train-phase-{settings.max_seq_length}", params) if logs_to_mlflow else contextlib.nullcontext()
        with run_context as self.metrics:
            seconds = self._train()
            if self.checkpoint_step != self.step:
                self._save_checkpoint()
            summary = self._publish(seconds, params)
        distributed.barrier(self.placement)
        return summary

    def _train(self) -> float:
        settings = self.settings
        started = time.perf_counter()
        window = {"tokens": 0.0, "slots": 0.0, "sequences": 0.0, "loss": 0.0, "mlm_loss": 0.0, "nsp_loss": 0.0, "grad_norm": 0.0, "flops": 0.0, "steps": 0, "since": time.perf_counter()}
        bar = None
        if self.placement.is_main and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=settings.max_steps, initial=self.step, desc=f"train {settings.max_seq_length}", unit="step")
        self.forward.train()
        self.progress = Progress(f"train-phase-{settings.max_seq_length}") if self.placement.is_main else None
        if self.progress:
            self.progress.update(self.step, settings.max_steps)
        while self.step < settings.max_steps:
            step_values = self._one_step()
            self.step += 1
            for key, value in step_values.items():
                window[key] += value
            window["steps"] += 1
            if bar:
                bar.update(1)
            if self.step % settings.logging_steps == 0 or self.step == settings.max_steps:
                self._log_window(window, bar)
                window = {key: 0.0 for key in window} | {"steps": 0, "since": time.perf_counter()}
            paused = time.perf_counter()
            if settings.save_steps and self.step % settings.save_steps == 0:
                self._save_checkpoint()
            if settings.eval_steps and self.step % settings.eval_steps == 0:
                self._validate()
            window["since"] += time.perf_counter() - paused
        if bar:
            bar.close()
        return time.perf_counter() - started

    def _one_step(self) -> dict:
        try:
            return self._accumulate_and_update()
        except torch.OutOfMemoryError as error:
            size = self.settings.per_device_train_batch_size
            raise BertpipeError(
                f"a batch of {size} x {self.settings.max_seq_length} tokens does not fit in GPU memory: lower "
                f"per_device_train_batch_size (e.g. to {max(1, size // 2)}) and raise gradient_accumulation_steps to keep the global batch"
            ) from error

    def _accumulate_and_update(self) -> dict:
        settings = self.settings
        accumulation = settings.gradient_accumulation_steps
        micro_batches = [next(self.stream) for _ in range(accumulation)]
        # Weigh each micro-batch's MLM loss by its share of the step's masked tokens on all ranks, so that
        # accumulating k batches of n on w ranks equals one batch of k*n*w (the loss is a mean over masked
        # tokens; DDP averages the ranks' gradients, hence the factor world_size).
        masked_here = sum(len(batch["mlm_labels"]) for batch in micro_batches)
        masked_per_rank = distributed.sum_across([masked_here], self.placement, self.device)[0] / self.placement.world_size
        counts = [batch_counts(batch) for batch in micro_batches]
        totals = {key: sum(c[key] for c in counts) for key in counts[0]}
        totals["flops"] = sum(batch_training_flops(self.model.config, b["instance_lengths"], len(b["mlm_labels"])) for b in micro_batches)
        weighted = torch.zeros(2, device=self.device)  # (mlm, nsp) on the device: one host sync per step, not per micro-batch
        for micro, batch in enumerate(micro_batches):
            mlm_weight = len(batch["mlm_labels"]) / masked_per_rank
            batch = batching.batch_to(batch, self.device)
            sync = self.trained.no_sync() if self.placement.world_size > 1 and micro < accumulation - 1 else contextlib.nullcontext()
            with sync:
                with self.precision.autocast():
                    mlm_logits, nsp_logits = self.trained(**models.inputs_of(batch))
                mlm_loss, nsp_loss = models.pretraining_losses(mlm_logits, nsp_logits, batch)
                self.precision.backward(mlm_loss * mlm_weight + nsp_loss / accumulation)
            weighted += torch.stack([mlm_loss.detach() * mlm_weight, nsp_loss.detach() / accumulation])
        grad_norm = self.precision.clip(self.optimizer, self.forward.parameters(), settings.max_grad_norm)
        totals["mlm_loss"], totals["nsp_loss"], totals["grad_norm"] = torch.cat([weighted, grad_norm.reshape(1).float()]).tolist()
        totals["loss"] = totals["mlm_loss"] + totals["nsp_loss"]
        overflow_is_expected = self.precision.scaler is not None  # fp16: the scaler skips the step and lowers its scale
        if not (math.isfinite(totals["loss"]) and (math.isfinite(totals["grad_norm"]) or overflow_is_expected)):
            last = checkpoints.latest(self.output_uri)
            raise BertpipeError(
                f"training diverged at step {self.step + 1}: loss {totals['loss']}, gradient norm {totals['grad_norm']}; "
                f"last good checkpoint: {last or 'none'}; lower learning_rate or raise warmup_steps"
            )
        self.precision.step(self.optimizer)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return totals

    def _log_window(self, window: dict, bar) -> None:
        keys = ("loss", "mlm_loss", "nsp_loss", "tokens", "slots", "sequences", "grad_norm", "flops")
        summed = dict(zip(keys, distributed.sum_across([window[k] for k in keys], self.placement, self.device)))
        steps, ranks = window["steps"], self.placement.world_size
        elapsed = max(time.perf_counter() - window["since"], 1e-9)
        row = {key: summed[key] / steps / ranks for key in ("loss", "mlm_loss", "nsp_loss", "grad_norm")}
        row.update(
            step=self.step,
            learning_rate=self.scheduler.get_last_lr()[0],
            tokens_per_second=summed["tokens"] / elapsed,  # real tokens, padding not counted
            padding_share=1.0 - summed["tokens"] / max(summed["slots"], 1.0),
            sequences_per_second=summed["sequences"] / elapsed,
            epoch=self.stream.epoch,
        )
        if self.peak_flops:
            row["mfu"] = summed["flops"] / elapsed / (self.peak_flops * ranks)
        self.history.append(row)
        if not self.placement.is_main:
            return
        if self.metrics:
            self.metrics.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
        text = ", ".join(f"{k}={row[k]:.4g}" for k in ("loss", "mlm_loss", "nsp_loss", "learning_rate", "tokens_per_second", "padding_share", "mfu") if k in row)
        self.progress.update(self.step, self.settings.max_steps, loss=row["loss"], tokens_per_second=row["tokens_per_second"])
        if bar:
            bar.set_postfix_str(text)
        else:
            log.info("step %d/%d: %s", self.step, self.settings.max_steps, text)

    @functools.cached_property
    def _mask_id(self) -> int:
        """[MASK]'s id, read from the vocab at the first validation only (the vocab may be on S3)."""
        return mask_token_id(self.vocab_uri)

    def _validate(self) -> None:
        settings = self.settings
        if not self.manifest["splits"].get("dev", {}).get("num_instances"):
            log.warning("no dev instances in %s; skipping validation", self.data_uri)
            return
        batches = batching.evaluation_batches(self.data_uri, self.manifest, "dev", settings.per_device_eval_batch_size, settings.max_eval_batches)
        metrics = {f"dev_{k}": v for k, v in pretraining_metrics(self.forward, batches, self.device, self._mask_id).items()}
        self.history.append({"step": self.step, **metrics})
        if self.placement.is_main:
            if self.metrics:
                self.metrics.log(metrics, step=self.step)
            log.info("step %d dev: loss=%.4f mlm_accuracy=%.4f (at [MASK] %.4f) nsp_accuracy=%.4f", self.step, metrics["dev_loss"], metrics["dev_mlm_accuracy"],
                     metrics["dev_mlm_accuracy_at_mask"], metrics["dev_nsp_accuracy"])

    def _log_artifacts(self, loss_curve, summary: dict) -> None:
        """The loss curve and summary to the run; an unreachable server is reported, not fatal (the files are in output_uri)."""
        from mlflow import MlflowClient

        try:
            with mlflow_errors(self.tracking.tracking_uri, "logging the loss curve"):
                client = MlflowClient(self.tracking.tracking_uri)
                client.log_artifact(self.metrics.run_id, str(loss_curve))
                client.log_dict(self.metrics.run_id, summary, "training_summary.json")
        except BertpipeError as error:
            log.warning("%s; the loss curve and summary are still in %s", error, self.output_uri)

    def _save_checkpoint(self) -> None:
        rng_states = distributed.gather_objects(checkpoints.rng_state(self.device), self.placement)
        positions = distributed.gather_objects(self.stream.position, self.placement)
        if self.placement.is_main:
            state = {"run": self._fingerprint(), "positions": positions, "history": self.history}
            checkpoints.save(self.output_uri, self.step, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, rng_states=rng_states, trainer_state=state,
                             scaler=self.precision.scaler)
            if self.settings.save_total_limit:
                checkpoints.prune(self.output_uri, keep=self.settings.save_total_limit)
        self.checkpoint_step = self.step
        distributed.barrier(self.placement)

    def _publish(self, seconds: float, params: dict) -> dict:
        settings = self.settings
        model_uri = storage.join(self.output_uri, "model")
        train_rows = [row for row in self.history if "loss" in row]
        last = train_rows[-1] if train_rows else {}
        summary = {
            "model_uri": model_uri,
            "steps": self.step,
            "max_seq_length": settings.max_seq_length,
            "global_batch_size": self.global_batch_size,
            "world_size": self.placement.world_size,
            "resumed_from": self.resumed_from,
            "train_seconds": seconds,
            "final_loss": last.get("loss"),
            "final_mlm_loss": last.get("mlm_loss"),
            "final_nsp_loss": last.get("nsp_loss"),
            "tokens_per_second": median(row["tokens_per_second"] for row in train_rows) if train_rows else None,
            "sequences_per_second": median(row["sequences_per_second"] for row in train_rows) if train_rows else None,
            "padding_share": median(row["padding_share"] for row in train_rows) if train_rows and "padding_share" in last else None,
            "mfu": median(row["mfu"] for row in train_rows) if train_rows and "mfu" in last else None,
            "model_shape": models.model_shape(self.model),
            "num_parameters": self.model.num_parameters(),
            "settings": params,
            "history": self.history,
        }
        if not self.placement.is_main:
            return summary
        if self.metrics:
            report = self.metrics.close()
            summary["mlflow_logging"] = report.summary()
            (log.info if report.complete else log.warning)("MLflow: %s", report.summary())
        with storage.staged_dir(model_uri) as folder:
            self.model.save_pretrained(str(folder))
            storage.download_dir(self.vocab_uri, folder)
        storage.write_json(storage.join(self.output_uri, "training_summary.json"), summary)
        with storage.staged_dir(storage.join(self.output_uri, "plots")) as folder:
            plot_loss_curve(self.history, folder / "loss_curve.png", f"train-phase {settings.max_seq_length}")
            if self.metrics:
                self._log_artifacts(folder / "loss_curve.png", summary)
        log.info("model written to %s (%d steps, final loss %s)", model_uri, self.step, last.get("loss"))
        return summary

