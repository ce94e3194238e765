"""The local stack: `up` starts SeaweedFS and MLflow and returns their environment, `down` stops them, data survives."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest

from components.core.errors import BertpipeError
from pipelines.stack import STATE_FILE, export_lines, stack_down, stack_status, stack_up


def test_stack_up_status_down_and_up_again_keeps_data(tmp_path):
    folder = tmp_path / "stack"
    stack = stack_up(folder)
    try:
        env = stack.env()
        assert sorted(env) == ["AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_SECRET_ACCESS_KEY",
                               "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"]
        status = stack_status(folder)
        assert status["s3"]["running"] and status["mlflow"]["running"] and status["s3"]["bucket"] == "bertpipe"
        assert (folder / STATE_FILE).stat().st_mode & 0o077 == 0
        stack.s3.client().put_object(Bucket="bertpipe", Key="kept.txt", Body=b"kept")
        with urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=5) as response:
            assert response.read() == b"OK"

        assert stack_up(folder).s3.pid == stack.s3.pid  # already running: found, not started twice
        stack_down(folder)
        status = stack_status(folder)
        assert not status["s3"]["running"] and not status["mlflow"]["running"]
        with pytest.raises(OSError):
            urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=2)

        again = stack_up(folder)
        assert again.env() == env  # same ports and credentials
        assert again.s3.client().get_object(Bucket="bertpipe", Key="kept.txt")["Body"].read() == b"kept"
    finally:
        stack_down(folder)


def test_export_lines_are_shell_safe():
    lines = export_lines({"B": "it's $HOME", "A": "plain"})
    assert lines == "export A=plain\nexport B='it'\"'\"'s $HOME'"
    shell = subprocess.run(["bash", "-c", lines + '\nprintf %s "$B"'], capture_output=True, text=True, check=True, env={})
    assert shell.stdout == "it's $HOME"


def test_status_of_a_folder_without_a_stack_says_what_to_run(tmp_path):
    with pytest.raises(BertpipeError, match=r"no local stack in .*: run `bertpipe stack up --dir"):
        stack_status(tmp_path)


def test_stack_command_refuses_unknown_actions(tmp_path):
    from pipelines.stack import stack_command

    with pytest.raises(BertpipeError, match="unknown stack action 'restart': use up, down or status"):
        stack_command("restart", tmp_path)
