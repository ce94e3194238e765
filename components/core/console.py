"""Log format shared by the CLI and the KFP components, so a pod's log reads like a terminal's."""

import logging
import os

from components.core.redact import protect_logs


def configure_logging() -> None:
    level = os.environ.get("BERTPIPE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    protect_logs()
    # Third-party chatter that says nothing about the run.
    for noisy in ("alembic", "botocore", "urllib3", "httpx", "filelock", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
