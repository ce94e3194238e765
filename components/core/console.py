"""Log format shared by the CLI and the KFP components, so a pod's log reads like a terminal's."""

import logging
import os

from components.core.redact import protect_logs

# Third-party progress bars and load reports (MLflow's download bar, transformers' "Loading weights" bar and its
# MISSING-keys table for heads bertpipe restores itself) that say nothing about the run; set only where the user
# has not set them. Our own bars (train-phase's, the live view's) are not affected.
QUIET_THIRD_PARTY = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def configure_logging() -> None:
    """Our log format at BERTPIPE_LOG_LEVEL; called first by every entry point, before transformers or mlflow load."""
    for name, value in QUIET_THIRD_PARTY.items():
        os.environ.setdefault(name, value)
    level = os.environ.get("BERTPIPE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    protect_logs()
    # Third-party chatter that says nothing about the run.
    for noisy in ("alembic", "botocore", "urllib3", "httpx", "filelock", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
