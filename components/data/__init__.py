"""The create-pretraining-data step: corpus -> masked-LM/NSP instances (Google's algorithm) in Parquet shards.

Three stages, each one entry function that the CLI (through `local`) and the pipeline's tasks call:
`split.plan_pretraining_data` -> `shard.create_pretraining_shard` (once per shard) ->
`merge.merge_pretraining_data`. `local.create_pretraining_data` runs all three with local
worker processes. `settings` holds DataSettings; `work` the folder the stages hand each
other their plan and records through; `instance_creation`, `random_stream`, `tokenization`
and `statistics` are the algorithm, its exact random stream, the tokenizer and the counts.
"""
