"""bertpipe: BERT pretraining (masked LM + next-sentence prediction) as Kubeflow Pipelines steps.

Each step is a package here (vocab, data, training, evaluation, registry) with one entry
function per stage, over a small shared core; `bertpipe <step>` (pipelines/cli.py) and the
KFP components (pipelines/kfp_components.py) call those functions.

Importing the package tunes glibc's malloc for the process (components.core.allocator) and
sizes the thread pools to the pod's CPU limit (components.core.cpu_quota): every bertpipe
process imports it before torch loads or allocates anything large.
"""

from components.core import allocator, cpu_quota

allocator.tune()
cpu_quota.fit_thread_pools()
