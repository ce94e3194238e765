"""Thread pools fit the cgroup's CPU quota (a pod's CPU limit), not the node's cores."""

import os

import pytest

from components.core import cpu_quota


@pytest.fixture
def clean_environment(monkeypatch):
    """No pool variable set during the test, and none left behind after it: fit_thread_pools writes os.environ
    itself, so monkeypatch does not know to undo it (a leaked OMP_NUM_THREADS=4 oversubscribed every later test)."""
    saved = {name: os.environ.pop(name) for name in cpu_quota.POOL_VARIABLES if name in os.environ}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))  # a 64-core node
    yield
    for name in cpu_quota.POOL_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(saved)


def cgroup_v2(folder, text: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.max").write_text(text + "\n")
    return str(folder)


def test_quota_is_read_from_cgroup_v2_and_v1(tmp_path):
    assert cpu_quota.quota_cpus(cgroup_v2(tmp_path / "limited", "250000 100000")) == 2.5
    assert cpu_quota.quota_cpus(cgroup_v2(tmp_path / "unlimited", "max 100000")) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota.quota_cpus(str(tmp_path / "v1")) == 4.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota.quota_cpus(str(tmp_path / "v1")) is None
    assert cpu_quota.quota_cpus(str(tmp_path / "nothing")) is None


def test_a_4_cpu_limit_on_a_64_core_node_gives_4_threads_per_pool(tmp_path, clean_environment):
    assert cpu_quota.fit_thread_pools(cgroup_v2(tmp_path, "400000 100000")) == 4
    assert {name: os.environ[name] for name in cpu_quota.POOL_VARIABLES} == dict.fromkeys(cpu_quota.POOL_VARIABLES, "4")


def test_a_fractional_limit_rounds_down_but_never_below_one(tmp_path, clean_environment):
    assert cpu_quota.fit_thread_pools(cgroup_v2(tmp_path, "250000 100000")) == 2
    os.environ.pop("OMP_NUM_THREADS")
    assert cpu_quota.fit_thread_pools(cgroup_v2(tmp_path, "50000 100000")) == 1 and os.environ["OMP_NUM_THREADS"] == "1"


def test_no_quota_or_one_above_the_cores_sets_nothing_and_the_users_choice_stands(tmp_path, clean_environment, monkeypatch):
    assert cpu_quota.fit_thread_pools(cgroup_v2(tmp_path, "max 100000")) is None
    assert cpu_quota.fit_thread_pools(cgroup_v2(tmp_path, "9600000 100000")) is None  # 96 CPUs of quota, 64 cores
    assert not any(name in os.environ for name in cpu_quota.POOL_VARIABLES)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert cpu_quota.fit_thread_pools(cgroup_v2(tmp_path, "400000 100000")) == 4
    assert os.environ["OMP_NUM_THREADS"] == "7" and os.environ["RAYON_NUM_THREADS"] == "4"
