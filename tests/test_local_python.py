"""kfp.local must hand a task its parameters unchanged, "python3" in them or not (pipelines.local_python)."""

import kfp.local
from kfp import dsl

from pipelines.local_python import python_swap_in_command_only

VENV_PATH = "/home/me/.venv/lib/python3.11/site-packages/some_model"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def echo(text: str) -> str:
    return text


def echoed(tmp_path) -> str:
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    return echo(text=VENV_PATH).output


def test_kfp_local_alone_mangles_a_path_holding_python3(tmp_path):
    """The defect the fix is for: if kfp.local ever stops doing this, the fix can go."""
    assert echoed(tmp_path) != VENV_PATH


def test_the_swap_stays_in_the_command(tmp_path):
    with python_swap_in_command_only():
        assert echoed(tmp_path) == VENV_PATH


def test_the_command_still_gets_this_interpreter():
    from kfp.local import subprocess_task_handler as handler

    command = ["sh", "-c", "python3 -m kfp.dsl.executor_main", "--executor_input", '{"path": "lib/python3.11"}', "--function_to_execute", "echo"]
    with python_swap_in_command_only():
        swapped = handler.replace_python_executable(command, "/opt/venv/bin/python")
    assert swapped == ["sh", "-c", "/opt/venv/bin/python -m kfp.dsl.executor_main", "--executor_input", '{"path": "lib/python3.11"}',
                       "--function_to_execute", "echo"]
    assert handler.replace_python_executable(command, "/x")[4] == '{"path": "lib//x.11"}'  # restored on leaving
