"""The train-phase step's settings (names follow HF run_mlm.py / Google's run_pretraining.py) and where it runs.

`TrainingSettings` is what a phase computes; `LaunchSettings` only where: in this process,
under torchrun with one process per GPU, or on several nodes as a Kubeflow Trainer TrainJob.
A phase gives the same result (on CPU, the same weights) whichever door started it.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.core.settings import setting

# The literal choices keep this module free of torch; tests/test_training_settings.py checks
# them against models.PRESETS and optimization.OPTIMIZERS / SCHEDULES.
MODEL_SIZES = ("tiny", "mini", "small", "base", "large")
OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("linear", "polynomial", "constant")
MAX_POSITIONS = 512  # every preset's max_position_embeddings
PRECISIONS = ("auto", "bf16", "fp16", "no")


@dataclass(frozen=True)
class TrainingSettings:
    """Every knob of one pretraining phase (the data, vocab and output folders are inputs, not settings)."""

    model_size: str = setting("tiny", "model shape preset (ignored with init_model)", choices=MODEL_SIZES)
    init_model: str = setting("", "start from this model (a folder, an s3:// URI, a hub id or 'demo': the bundled MiniLM checkpoint) instead of a fresh model_size preset; "
                              "in the pipeline it seeds phase 128, and phase 512 always continues from phase 128's model")
    max_seq_length: int = setting(128, "maximum tokens per instance; must equal the data's (Google: 128 for phase 1, 512 for phase 2)",
                                  minimum=8, maximum=MAX_POSITIONS)
    max_steps: int = setting(100, "optimizer steps in this phase", minimum=1)
    per_device_train_batch_size: int = setting(32, "sequences per device per step", minimum=1)
    gradient_accumulation_steps: int = setting(
        1, "micro-batches accumulated per optimizer step (global batch = per-device batch x accumulation x world size)", minimum=1)
    learning_rate: float = setting(1e-4, "peak learning rate, reached after the warmup", above=0)
    warmup_steps: int = setting(10, "steps of linear warmup before the decay", minimum=0)
    weight_decay: float = setting(0.01, "weight decay (not applied to biases and LayerNorm)", minimum=0)
    optimizer: str = setting("adamw", "adamw (fused) or lamb (large batches, as NVIDIA's BERT)", choices=OPTIMIZERS)
    lr_scheduler_type: str = setting("linear", "decay after warmup", choices=SCHEDULES)
    lr_power: float = setting(1.0, "power of the polynomial decay", above=0)
    adam_epsilon: float = setting(1e-6, "epsilon of AdamW/LAMB", above=0)
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0: no clipping)", minimum=0)
    seed: int = setting(42, "random seed of model initialisation, dropout and batch order (same seed and inputs: same weights on CPU)", minimum=0)
    logging_steps: int = setting(10, "log metrics every N steps", minimum=1)
    save_steps: int = setting(0, "checkpoint every N steps (0: only at the end); a retried or killed phase resumes from the newest", minimum=0)
    eval_steps: int = setting(0, "validate on the dev split every N steps (0: never)", minimum=0)
    per_device_eval_batch_size: int = setting(64, "sequences per validation batch", minimum=1)
    max_eval_batches: int = setting(20, "validation batches per evaluation on the dev split", minimum=1)
    save_total_limit: int = setting(2, "checkpoints to keep, the newest (0: all)", minimum=0)
    pack_sequences: bool = setting(True, "pack a batch's instances end to end (attention, positions and NSP per instance): no compute spent on padding; "
                                         "a batch still counts instances")
    mixed_precision: str = setting("auto", "autocast dtype: auto (bf16 on GPUs that support it, else fp32), bf16, fp16 (GPU only, with loss scaling) or no",
                                   choices=PRECISIONS)
    torch_compile: bool = setting(False, "compile the model with torch.compile (GPUs; the first steps are slower while it compiles)")
    peak_tflops: float = setting(0.0, "the device's peak TFLOP/s for the MFU metric (0: from the GPU's name; none on CPU)", minimum=0)

    def warnings(self) -> list[str]:
        """Legal but probably unintended (a warning, not an error: short test phases keep the default warmup)."""
        if self.warmup_steps > self.max_steps:
            return [f"warmup_steps={self.warmup_steps} is more than max_steps={self.max_steps}: the learning rate never reaches its peak"]
        return []


@dataclass(frozen=True)
class LaunchSettings:
    """Where the phase runs; set at compile time from the cluster settings (`bertpipe compile --gpus-per-node/--num-nodes`)."""

    processes: int = setting(1, "training processes per node; above 1 they run under torchrun, one per GPU (DDP)", minimum=1)
    num_nodes: int = setting(1, "nodes; above 1 the phase runs as a Kubeflow Trainer TrainJob of num_nodes x processes ranks", minimum=1)
    trainjob_template: str = setting("", "TrainJob manifest (JSON) compiled by `bertpipe compile --num-nodes N`; needed when num_nodes > 1")

    def cross_checks(self) -> list[str]:
        if self.num_nodes > 1 and not self.trainjob_template:
            return ["num_nodes > 1 needs trainjob_template (compile the pipeline with bertpipe compile --num-nodes N)"]
        return []
