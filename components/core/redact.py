"""Credentials out of anything the product prints: `scheme://user:password@host` becomes `scheme://***@host`.

MLflow and S3-compatible servers accept credentials in the URI's userinfo, and users
paste such URIs into --tracking-uri or MLFLOW_TRACKING_URI. Every URI bertpipe logs,
prints or puts into an error message goes through `mask`; configure_logging also
masks every log line, third-party ones included.
"""

from __future__ import annotations

import logging
import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def mask(text: str) -> str:
    """`text` with the userinfo of every URI in it replaced by ***."""
    return _USERINFO.sub(r"\g<scheme>***@", str(text))


class MaskingFilter(logging.Filter):
    """A handler filter that masks URI credentials in the final message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def protect_logs() -> None:
    """Mask every handler of the root logger and of MLflow's own logger (it does not propagate); idempotent.

    Call again after importing mlflow: it adds its handler at import time.
    """
    for handler in logging.getLogger().handlers + logging.getLogger("mlflow").handlers:
        if not any(isinstance(existing, MaskingFilter) for existing in handler.filters):
            handler.addFilter(MaskingFilter())
