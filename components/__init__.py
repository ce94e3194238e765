"""bertpipe: BERT pretraining (masked LM + next-sentence prediction) as Kubeflow Pipelines steps.

Each step is a plain function in its own module, a `bertpipe <step>` subcommand
(pipelines/cli.py) and a KFP component (components/kfp_components.py).
"""
