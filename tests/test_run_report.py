"""The run report opens with a summary table, and renders: HTML in headless Chromium, table in the DOM, images loaded."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.evaluation.evaluate import render_report
from components.registry.model_card import evaluation_interval_lines
from components.registry.run_report import summary_section, write_run_report
from components.registry.step import training_phases
from components.training.loss_curve import plot_loss_curve
from tests.markdown_html import to_html

METRICS = {
    **{f"{name}_{length}": value for length in (128, 512) for name, value in
       (("mlm_accuracy", 0.15), ("mlm_accuracy_at_mask", 0.12), ("most_frequent_token_accuracy_at_mask", 0.06), ("nsp_accuracy", 0.7), ("mlm_top5_accuracy", 0.3), ("perplexity", 210.5), ("mlm_loss", 5.35),
        ("nsp_loss", 0.55), ("loss", 5.9), ("most_frequent_token_accuracy", 0.08), ("majority_nsp_accuracy", 0.5))},
}
REGISTERED = {"model_uri": "models:/demo/1", "promotion": {"decision": "promoted", "reasons": ["no champion yet", "mlm_accuracy_512 0.1500 vs trivial 0.0800 (+0.0700, no interval): above"],
                                                             "champion_before": None, "champion_after": "1", "dry_run": False}}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    for length, steps in ((128, 900), (512, 30)):
        (run / f"data-{length}").mkdir()
        splits = {"train": {"num_instances": 12000 // (length // 128)}, "dev": {"num_instances": 600}, "test": {"num_instances": 580, "num_documents": 19}}
        (run / f"data-{length}" / "manifest.json").write_text(json.dumps({"corpus": "demo", "vocab_size": 4000, "splits": splits}))
        (run / f"phase-{length}" / "plots").mkdir(parents=True)
        history = [{"step": step, "loss": 9 - step / 200, "mlm_loss": 8.3 - step / 200, "nsp_loss": 0.7} for step in range(10, steps + 1, 10)]
        plot_loss_curve(history, run / f"phase-{length}" / "plots" / "loss_curve.png", f"train-phase {length}")
        summary = {"steps": steps, "global_batch_size": 32, "train_seconds": 181.4 if length == 128 else 20.2, "final_loss": history[-1]["loss"],
                   "num_parameters": 1_290_000, "model_shape": {"num_hidden_layers": 2, "hidden_size": 128}, "max_seq_length": length,
                   "history": history, "settings": {"model_size": "tiny", "data_uri": str(run / f"data-{length}"),
                                                    "init_model": str(run / "phase-128" / "model") if length == 512 else ""}}
        (run / f"phase-{length}" / "training_summary.json").write_text(json.dumps(summary))
    (run / "evaluation").mkdir()
    results = {length: {key.rsplit("_", 1)[0]: value for key, value in METRICS.items() if key.endswith(f"_{length}")} for length in (128, 512)}
    examples = {length: [{"text": "the king [MASK] the queen", "masked": [{"truth": "loves", "shown": "[MASK]", "predicted": ["loves", "and", "is"]},
                                                                       {"truth": "queen", "shown": "queen", "predicted": ["queen", "king", ","]}]}]
                for length in (128, 512)}
    (run / "evaluation" / "report.md").write_text(render_report("/m", "test", results, examples, METRICS, None))
    (run / "evaluation" / "metrics.json").write_text(json.dumps({"metrics": METRICS}))
    write_run_report(str(run / "report.md"), str(run / "evaluation"), REGISTERED, phases_of(run))
    return run


def phases_of(run: Path) -> list[dict]:
    """The phases as the register step finds them: from the final model back through each phase's init_model."""
    return training_phases(str(run / "phase-512" / "model"))


def test_report_opens_with_the_summary_table(run_folder):
    lines = (run_folder / "report.md").read_text().splitlines()
    assert lines[:4] == ["# bert-pretraining run", "", "| | |", "|---|---|"]
    assert lines[4] == "| data | corpus `demo`, 4000-token vocab; 128: 12,000 / 600 / 580, 512: 3,000 / 600 / 580 train / dev / test instances |"
    assert lines[5] == "| model | `tiny` preset, from scratch: 2 layers, hidden 128, 1.29M parameters |"
    assert lines[6] == "| phase 128 | 900 steps, batch 32, 181 s, final loss 4.500 |"
    assert lines[9] == ("| test at 512 | mlm_accuracy_at_mask 0.1200 (trivial 0.0600), mlm_accuracy 0.1500 (trivial 0.0800), nsp_accuracy 0.7000 (trivial 0.5000), "
                        "mlm_top5_accuracy 0.3000, perplexity 210.5 |")
    assert lines[10] == "| promotion | **promoted**: no champion yet; mlm_accuracy_512 0.1500 vs trivial 0.0800 (+0.0700, no interval): above |"
    text = "\n".join(lines)
    assert text.index("## Loss curves") < text.index("Fill-mask examples")
    assert "  - loves -> loves / and / is; queen (kept) -> queen / king / ," in lines


def test_a_model_continued_from_a_checkpoint_is_named_by_it_not_by_the_unused_preset(run_folder):
    phases = phases_of(run_folder)
    phases[0]["settings"] = {**phases[0]["settings"], "init_model": "demo"}
    lines = summary_section(METRICS, REGISTERED, phases)
    assert lines[3] == "| model | continued from `demo`: 2 layers, hidden 128, 1.29M parameters |"


def test_the_intervals_against_the_champion_then_the_trivial_baselines_are_listed():
    def interval(difference, low, high):
        return {"difference": difference, "low": low, "high": high, "level": 0.95, "instances": 113, "units": 2000, "resamples": 1000, "seed": 0}

    evaluation = {"intervals": {"mlm_accuracy_512": interval(0.004, -0.001, 0.009)}, "baseline_intervals": {"mlm_accuracy_at_mask_512": interval(0.0018, -0.004, 0.0075)}}
    assert evaluation_interval_lines(evaluation) == [
        "New model minus champion on the same instances, paired bootstrap over instances (1000 resamples, seed 0):", "",
        "| metric | difference | interval | level | instances | units |", "|---|---|---|---|---|---|",
        "| mlm_accuracy_512 | +0.0040 | [-0.0010, +0.0090] | 95% | 113 | 2000 |", "",
        "New model minus trivial baseline on the same instances, paired bootstrap over instances (1000 resamples, seed 0):", "",
        "| metric | difference | interval | level | instances | units |", "|---|---|---|---|---|---|",
        "| mlm_accuracy_at_mask_512 | +0.0018 | [-0.0040, +0.0075] | 95% | 113 | 2000 |", "",
    ]
    assert evaluation_interval_lines({"metrics": METRICS, "intervals": {}}) == []  # a first version of an older metrics.json: neither


def find_chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)


def chromium_or_install() -> str | None:
    """Chromium from PATH; in CI (CI set, root, apt-get), Debian's package is installed first, so the check runs there.

    A developer's machine is never changed by a test: without a browser there, the test skips and says how to get one."""
    if (found := find_chromium()) or not (os.environ.get("CI") and os.geteuid() == 0 and shutil.which("apt-get")):
        return found
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, capture_output=True, timeout=900).returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
        subprocess.run(install, capture_output=True, timeout=900)
    return find_chromium()


def test_report_renders_in_headless_chromium(run_folder, tmp_path):
    chromium = chromium_or_install()
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium; CI installs it as root); the HTML rendering check needs a browser")
    page = run_folder / "report.html"
    # After load, the page records how many images really decoded; --dump-dom shows the DOM after that script ran.
    probe = ("<script>addEventListener('load', () => { document.body.dataset.imagesLoaded ="
             " [...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script>")
    page.write_text(to_html((run_folder / "report.md").read_text()).replace("</body>", probe + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count("<table>") >= 3  # the summary, and one per sequence length of the evaluation
    assert "<td>test at 512</td>" in dom and "<strong>promoted</strong>" in dom
    assert 'data-images-loaded="2"' in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_report_and_curves_go_to_mlflow_under_the_pipeline_run(run_folder, tmp_path):
    import mlflow

    from components.core.tracking import Tracking

    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db", "report-test", "run-1")
    text = write_run_report(str(run_folder / "report.md"), str(run_folder / "evaluation"), REGISTERED, phases_of(run_folder), tracking=tracking)
    client = mlflow.MlflowClient(tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("report-test").experiment_id], "tags.`bertpipe.step` = 'report'")
    assert len(runs) == 1 and runs[0].data.tags.get("mlflow.parentRunId")
    folder = Path(mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, tracking_uri=tracking.tracking_uri, dst_path=str(tmp_path / "got")))
    assert (folder / "report.md").read_text() == text
    assert (folder / "phase-512" / "plots" / "loss_curve.png").read_bytes() == (run_folder / "phase-512" / "plots" / "loss_curve.png").read_bytes()
