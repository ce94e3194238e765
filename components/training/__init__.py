"""The train-phase step.

phase.py      the entry, train_phase: checks the settings, decides where the phase runs
settings.py   TrainingSettings (what a phase computes) and LaunchSettings (where it runs)
trainer.py    PhaseRun: the training loop every rank runs in-process
launch.py     the rank command line and torchrun; trainjob.py: the multi-node TrainJob at run time
checkpoints.py, distributed.py, optimization.py, dynamic_masking.py, throughput.py, loss_curve.py: its parts
"""
