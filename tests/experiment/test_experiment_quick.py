"""End to end: ``medfed-experiment --quick`` on the real data files with the tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from training.experiment.cli import main
from training.experiment.report import SCHEMA

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SITES = ("CN", "EN", "IN")


def _check_scores(block: dict) -> None:
    for site in SITES:
        acc = block["accuracy"][site]
        lo, hi = acc["ci95"]
        assert 0.0 <= lo <= acc["value"] <= hi <= 100.0
    for key in ("macro", "min", "hmean"):
        lo, hi = block[key]["ci95"]
        assert 0.0 <= lo <= block[key]["value"] <= hi <= 100.0
    values = [block["accuracy"][s]["value"] for s in SITES]
    assert block["macro"]["value"] == pytest.approx(sum(values) / 3, abs=1e-3)
    assert block["min"]["value"] == pytest.approx(min(values), abs=1e-3)


def test_quick_run_writes_complete_well_formed_results(quick_run: Path) -> None:
    data = json.loads((quick_run / "results.json").read_text())
    assert data["schema"] == SCHEMA
    assert data["status"] == "complete"
    for key in ("config", "machine", "timing", "data", "leakage_check", "evaluations", "accuracy_table",
                "fairness_table", "comparisons", "rounds", "deviations", "best_single"):  # fmt: skip
        assert key in data, key
    labels = [row["label"] for row in data["accuracy_table"]]
    assert labels[0] == "Base model"
    assert {f"LoRA (site {s} only)" for s in SITES} <= set(labels)
    assert any(lbl.startswith("FedAvg round") for lbl in labels)
    assert any(lbl.startswith("Exact round") for lbl in labels)
    for row in data["evaluations"]:
        _check_scores(row)
        for site in SITES:  # every test question got exactly one predicted letter
            assert sum(row["predicted_letters"][site].values()) == data["data"][site]["test"]
    rounds = data["config"]["rounds"]
    for method in ("fedavg", "exact"):
        recs = data["rounds"][method]
        assert [r["round"] for r in recs] == list(range(1, rounds + 1))
        assert all(len(r["global_sha256"]) == 64 for r in recs)
        assert set(recs[0]["local"]) == set(SITES)
    # Round 1 starts both federated methods from the same local updates; aggregation differs.
    assert data["rounds"]["fedavg"][0]["local"] == data["rounds"]["exact"][0]["local"]
    assert data["rounds"]["fedavg"][0]["global_sha256"] != data["rounds"]["exact"][0]["global_sha256"]
    assert set(data["comparisons"]) == {"fedavg_minus_best_single", "exact_minus_best_single"}
    assert len(data["deviations"]) >= 5
    for site in SITES:
        assert data["data"][site]["test"] == data["config"]["eval_size"]
    assert data["timing"]["wall_s"] > 0


def test_quick_run_markdown_has_the_study_tables(quick_run: Path) -> None:
    md = (quick_run / "results.md").read_text()
    assert "PARTIAL" not in md
    for heading in ("Accuracy per test set", "Macro-Acc, Min-Acc, H-mean", "Per-round metrics", "Deviations"):
        assert heading in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert any(ln.startswith("| Base model | ") and ln.count("[") == 3 for ln in rows)
    assert sum(ln.startswith("| LoRA (site ") and ln.count("[") == 3 for ln in rows) == 3
    assert any(ln.startswith("| Best single-site LoRA (") for ln in rows)
    assert any(ln.startswith("| fedavg | 2 | ") for ln in rows)
    assert "Most-predicted answer letter" in md and any(ln.startswith("| (test answers) | ") for ln in rows)


def test_quick_run_writes_png_and_config(quick_run: Path) -> None:
    png = (quick_run / "results.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    cfg = json.loads((quick_run / "config.json").read_text())
    assert cfg["config"]["model"] == "tiny" and cfg["config"]["quick"] is True
    assert "--quick" in cfg["command"]
    assert json.loads((quick_run / "rounds.json").read_text()).keys() == {"fedavg", "exact"}
    assert not (quick_run / "adapters").exists()


def test_bad_option_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--out", str(tmp_path / "x"), "--methods", "fedprox"]) == 2
    err = capsys.readouterr().err
    assert "fedprox" in err and "Traceback" not in err


def test_ray_options_without_ray_backend_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--quick", "--out", str(tmp_path / "x"), "--ray-address", "head:6379"]) == 2
    assert "need --backend ray" in capsys.readouterr().err
    assert main(["--quick", "--out", str(tmp_path / "y"), "--backend", "ray", "--ray-workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--ray-workers 0" in err and "Traceback" not in err


def test_ray_backend_without_ray_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    assert main(["--quick", "--out", str(tmp_path / "x"), "--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'medfed[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_dp_run_trains_every_site_with_dp_sgd_and_compares_with_the_non_dp_run(
    quick_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dp-epsilon (issue 20): same seeds, a different global adapter; dp_compare tabulates both."""
    from training.experiment.dp_compare import main as compare

    out = tmp_path / "dp"
    args = ["--quick", "--out", str(out), "--no-progress", "--threads", "1", "--methods", "fedavg"]
    assert main([*args, "--metrics", "accuracy,nll", "--dp-epsilon", "3"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["dp_epsilon"] == 3.0
    assert any("DP-SGD at every site" in d for d in doc["deviations"])
    plain = json.loads((quick_run / "results.json").read_text())
    ours = [r["global_sha256"] for r in doc["rounds"]["fedavg"]]
    theirs = [r["global_sha256"] for r in plain["rounds"]["fedavg"]]
    assert len(ours) == len(theirs) and not set(ours) & set(theirs)
    capsys.readouterr()
    assert compare([str(quick_run), str(out), "--plot", str(tmp_path / "dp.png")]) == 0
    table = capsys.readouterr().out
    assert "| no DP |" in table and "| epsilon 3 |" in table and (tmp_path / "dp.png").stat().st_size > 0
    assert main(["--quick", "--out", str(tmp_path / "x"), "--dp-epsilon", "0"]) == 2
