"""The bert-pretraining pipeline: the DAG, its Kubernetes settings, compile/submit/run, and the CLI."""
