"""harness.results: run-record schema, collect -> tables, published numbers (results/reported)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import harness.results as hr
from harness.results import (
    REPORTED_COLUMNS, RUN_COLUMNS, load_reported, read_runs, validate_record, validate_reported,
)
from harness.results.collect import KEPT_COLUMNS, SUMMARY_COLUMNS, collect, main, summarize

REPO = Path(__file__).resolve().parents[1]

# (method, structured) x (target) x (seed) -> (top1, base_top1, macs_reduction)
ACC = {
    ("l1-uniform", 0.3, 0): (92.0, 93.0, 0.31), ("l1-uniform", 0.3, 1): (92.5, 93.4, 0.30),
    ("l1-uniform", 0.5, 0): (90.0, 93.0, 0.51), ("l1-uniform", 0.5, 1): (91.0, 93.4, 0.50),
    ("random", 0.3, 0): (91.0, 93.0, 0.30), ("random", 0.3, 1): (90.0, 93.4, 0.29),
    ("random", 0.5, 0): (88.0, 93.0, 0.50), ("random", 0.5, 1): (87.0, 93.4, 0.52),
}
STRUCTURED = {"l1-uniform": True, "random": False}


def record(method: str, target: float, seed_: int, **over: object) -> dict:
    top1, base, red = ACC[(method, target, seed_)]
    rec = {
        "dataset": "cifar10", "arch": "resnet56", "method": method, "structured": STRUCTURED[method],
        "budget_metric": "macs", "budget_target": target, "seed": seed_,
        "base_top1": base, "base_top5": 99.5, "top1": top1, "top5": 99.0,
        "base_macs": 1000, "base_params": 100, "macs": int(1000 * (1 - red)), "params": 60,
        "macs_reduction": red, "params_reduction": 0.4, "achieved_reduction": red,
        "finetune_epochs": 2, "search_wall_s": 1.5, "finetune_wall_s": 10.0,
        "git_commit": "abc123", "python_version": "3.12.1", "torch_version": "2.10",
        "torchvision_version": "0.29.1", "torch_pruning_version": "1.6.1", "timm_version": "1.0.0",
        "device": "cpu",
    }
    rec.update(over)
    return rec


def plan(method: str, target: float, seed: int) -> dict:
    keep_a = [0, 1, 2, 3] if method == "l1-uniform" else [0, 2]
    keep_b = list(range(int(8 * (1 - target))))
    return {
        "format": "prunebench-plan/1", "method": method, "dataset": "cifar10", "arch": "resnet56", "seed": seed,
        "budget": {"metric": "macs", "target": target, "tolerance": 0.01},
        "groups": [
            {"id": "layer1.0.conv1", "size": 4, "members": ["layer1.0.conv1", "layer1.0.bn1"], "residual": False,
             "keep": keep_a},
            {"id": "layer2.0.conv1", "size": 8, "members": ["layer2.0.conv1"], "residual": False, "keep": keep_b},
        ],
        "achieved": {"macs_reduction": target}, "meta": {"search_wall_s": 1.0, "options": {}},
    }


def write_runs(root: Path) -> tuple[list[Path], list[Path]]:
    metrics, plans = [], []
    for method, target, seed in ACC:
        d = root / "runs" / "cifar10" / "resnet56" / method / f"macs-{target}" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(record(method, target, seed)))
        (d / "plan.json").write_text(json.dumps(plan(method, target, seed)))
        metrics.append(d / "metrics.json")
        plans.append(d / "plan.json")
    return metrics, plans


def write_reported(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame([
        ["cifar10", "resnet56", "amc", "92.80", "91.90", "0.5", "", "Distiller AMC README", "2.00x"],
        ["cifar10", "vgg16", "l1-li2017", "93.25", "93.40", "0.342", "0.640", "Li et al. Table 1", "VGG-A"],
    ], columns=list(REPORTED_COLUMNS))
    rows.to_csv(folder / "test.csv", index=False)
    return folder


@pytest.fixture()
def collected(tmp_path: Path) -> Path:
    metrics, plans = write_runs(tmp_path)
    out = tmp_path / "tables"
    collect(metrics, plans, out, write_reported(tmp_path / "reported"))
    return out


def test_runs_csv_rows_and_columns(collected: Path) -> None:
    runs = read_runs(collected / "runs.csv")
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert len(runs) == 8
    assert runs["torch_version"].tolist() == ["2.10"] * 8  # not parsed as the float 2.1
    keys = list(zip(runs["method"], runs["budget_target"], runs["seed"]))
    assert keys == sorted(keys)
    assert runs["structured"].dtype == bool
    assert set(runs.loc[runs["method"] == "random", "structured"]) == {False}
    header = (collected / "runs.csv").read_text().splitlines()[0]
    assert header == ",".join(RUN_COLUMNS)


def test_summary_mean_std_n_by_hand(collected: Path) -> None:
    s = pd.read_csv(collected / "summary.csv")
    assert list(s.columns) == list(SUMMARY_COLUMNS)
    assert len(s) == 4  # 2 methods x 2 budgets
    row = s[(s["method"] == "l1-uniform") & (s["budget_target"] == 0.5)].iloc[0]
    assert row["n"] == 2 and str(row["seeds"]) == "0;1"
    assert row["top1_mean"] == pytest.approx(90.5)
    assert row["top1_std"] == pytest.approx(math.sqrt(0.5))  # ddof=1 of (90, 91)
    assert row["base_top1_mean"] == pytest.approx(93.2)
    assert row["delta_top1_mean"] == pytest.approx(((90 - 93.0) + (91 - 93.4)) / 2)
    assert row["delta_top1_std"] == pytest.approx(abs((90 - 93.0) - (91 - 93.4)) / math.sqrt(2))
    assert row["macs_reduction_mean"] == pytest.approx(0.505)
    assert row["macs_reduction_std"] == pytest.approx(0.01 / math.sqrt(2))
    assert row["params_reduction_std"] == pytest.approx(0.0)
    assert bool(row["structured"]) is True
    r2 = s[(s["method"] == "random") & (s["budget_target"] == 0.3)].iloc[0]
    assert r2["top1_mean"] == pytest.approx(90.5) and r2["top1_std"] == pytest.approx(math.sqrt(0.5))
    assert bool(r2["structured"]) is False


def test_summary_single_seed_std_is_blank(tmp_path: Path) -> None:
    runs = pd.DataFrame([validate_record(record("random", 0.5, 0))])
    s = summarize(runs)
    assert s.loc[0, "n"] == 1 and math.isnan(s.loc[0, "top1_std"])
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps(record("random", 0.5, 0)))
    collect([metrics], [], tmp_path / "t", None)
    line = (tmp_path / "t" / "summary.csv").read_text().splitlines()[1].split(",")
    header = (tmp_path / "t" / "summary.csv").read_text().splitlines()[0].split(",")
    assert line[header.index("top1_std")] == ""
    assert line[header.index("top1_mean")] == "88.0"


def test_markdown_has_ours_and_matching_reported_rows(collected: Path) -> None:
    md = (collected / "cifar10_resnet56.md").read_text()
    assert "# cifar10 / resnet56" in md
    assert "l1-uniform" in md and "90.50 ± 0.71" in md
    assert "amc (reported)" in md and "Distiller AMC README" in md and "**reported**" in md
    assert "91.90" in md and "-0.90" in md and "50.0" in md
    assert "l1-li2017" not in md  # vgg16 row belongs to another table
    assert "random (unstructured †)" in md and "† unstructured" in md
    assert "l1-uniform (unstructured" not in md
    assert not (collected / "cifar10_vgg16.md").exists()  # no runs of ours there
    rep = pd.read_csv(collected / "reported.csv")
    assert len(rep) == 2


def test_kept_channels_csv(collected: Path) -> None:
    k = pd.read_csv(collected / "kept_channels.csv")
    assert list(k.columns) == list(KEPT_COLUMNS)
    assert len(k) == 16  # 8 plans x 2 groups
    r = k[(k["method"] == "random") & (k["budget_target"] == 0.5) & (k["seed"] == 1)]
    assert r["group_index"].tolist() == [0, 1]
    assert r["group_id"].tolist() == ["layer1.0.conv1", "layer2.0.conv1"]
    assert r["size"].tolist() == [4, 8]
    assert r["kept"].tolist() == [2, 4]
    assert r["kept_fraction"].tolist() == pytest.approx([0.5, 0.5])
    r = k[(k["method"] == "l1-uniform") & (k["budget_target"] == 0.3) & (k["seed"] == 0)]
    assert r["kept"].tolist() == [4, 5] and r["kept_fraction"].tolist() == pytest.approx([1.0, 5 / 8])


def test_missing_column_raises_naming_it(tmp_path: Path) -> None:
    rec = record("random", 0.5, 0)
    del rec["achieved_reduction"]
    with pytest.raises(ValueError, match="achieved_reduction"):
        validate_record(rec)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"achieved_reduction") as exc:
        collect([path], [], tmp_path / "out", None)
    assert str(path) in str(exc.value)
    assert not (tmp_path / "out" / "runs.csv").exists()  # nothing half-written


def test_unknown_column_and_bad_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra_field"):
        validate_record(record("random", 0.5, 0, extra_field=1))
    with pytest.raises(ValueError, match="top1"):
        validate_record(record("random", 0.5, 0, top1="high"))
    with pytest.raises(ValueError, match="budget_metric"):
        validate_record(record("random", 0.5, 0, budget_metric="flops"))
    with pytest.raises(ValueError, match="seed"):
        validate_record(record("random", 0.5, 0, seed=None))


def test_types_are_coerced() -> None:
    rec = validate_record(record("random", 0.5, 0, structured="false", seed="1", top1="88.5", macs=750.0,
                                 timm_version=None, search_wall_s=None))
    assert rec["structured"] is False and rec["seed"] == 1 and rec["top1"] == 88.5 and rec["macs"] == 750
    assert rec["timm_version"] == "" and math.isnan(rec["search_wall_s"])
    assert list(rec) == list(RUN_COLUMNS)


def test_duplicate_run_raises(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        p.write_text(json.dumps(record("random", 0.5, 0)))
    with pytest.raises(ValueError, match="duplicate run"):
        collect([a, b], [], tmp_path / "out", None)


def test_bad_plan_raises(tmp_path: Path) -> None:
    p = plan("random", 0.5, 0)
    p["groups"][0]["keep"] = [0, 1, 2, 3, 4, 5]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(p))
    with pytest.raises(ValueError, match="keeps 6 of 4"):
        collect([], [path], tmp_path / "out", None)


def test_cli_with_listfiles(tmp_path: Path) -> None:
    metrics, plans = write_runs(tmp_path)
    mlist = tmp_path / "metrics.txt"
    mlist.write_text("\n".join(str(p) for p in metrics) + "\n\n")
    out = tmp_path / "tables"
    rc = main(["--metrics", f"@{mlist}", "--plans", *map(str, plans), "--out", str(out),
               "--reported", str(write_reported(tmp_path / "reported"))])
    assert rc == 0
    assert len(pd.read_csv(out / "runs.csv")) == 8
    assert len(pd.read_csv(out / "kept_channels.csv")) == 16
    assert (out / "cifar10_resnet56.md").exists()
    assert not list(out.glob(".*.tmp"))


def test_cli_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--metrics", str(tmp_path / "missing.json"), "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("collect: error:") and "\n" not in err


def test_package_collect_is_callable(tmp_path: Path) -> None:
    metrics, plans = write_runs(tmp_path)
    written = hr.collect(metrics[:2], plans[:2], tmp_path / "t")
    assert {p.name for p in written} >= {"runs.csv", "summary.csv", "kept_channels.csv", "reported.csv"}


# ---- results/reported/*.csv ------------------------------------------------------------------------------

def test_reported_csvs_load_and_validate() -> None:
    df = load_reported(REPO / "results" / "reported")
    assert list(df.columns) == list(REPORTED_COLUMNS)
    files = {p.name for p in (REPO / "results" / "reported").glob("*.csv")}
    assert {"li2017_l1.csv", "amc.csv", "depgraph.csv", "gnn_rl.csv"} <= files
    assert (df["source"].str.strip() != "").all()
    assert df["top1"].between(0, 100).all()
    assert df["base_top1"].dropna().between(0, 100).all()
    assert df["macs_reduction"].dropna().between(0, 1, inclusive="left").all()
    assert df["params_reduction"].dropna().between(0, 1, inclusive="left").all()
    assert set(df["dataset"]) <= {"cifar10", "cifar100", "imagenet"}
    assert set(df["arch"]) <= {"resnet56", "resnet110", "vgg16", "mobilenetv2", "torchvision.resnet50",
                               "torchvision.resnet34", "torchvision.mobilenet_v2"}


def test_reported_spot_values() -> None:
    df = load_reported(REPO / "results" / "reported")
    amc = df[(df["method"] == "amc") & (df["arch"] == "resnet56")].iloc[0]
    assert (amc["base_top1"], amc["top1"], amc["macs_reduction"]) == (92.80, 91.90, 0.5)
    li = df[(df["method"] == "l1-li2017") & (df["arch"] == "vgg16")].iloc[0]
    assert (li["base_top1"], li["top1"], li["macs_reduction"], li["params_reduction"]) == (93.25, 93.40, 0.342, 0.64)
    nosl = df[df["method"] == "depgraph-nosl"].iloc[0]
    assert nosl["macs_reduction"] == pytest.approx(1 - 1 / 2.11, abs=1e-4)
    gnn = df[(df["method"] == "gnn-rl") & (df["arch"] == "resnet56")].iloc[0]
    assert gnn["top1"] == 93.49 and math.isnan(gnn["base_top1"])
    assert len(df[df["method"] == "l1-li2017"]) == 8


@pytest.mark.parametrize("column, value, match", [
    ("macs_reduction", "50", "fraction"),
    ("top1", "", "top1"),
    ("top1", "abc", "not a number"),
    ("source", " ", "source"),
    ("base_top1", "120", "percentage"),
])
def test_reported_validation_rejects(column: str, value: str, match: str) -> None:
    row = {"dataset": "cifar10", "arch": "resnet56", "method": "x", "base_top1": "93", "top1": "92",
           "macs_reduction": "0.5", "params_reduction": "", "source": "s", "note": ""}
    row[column] = value
    with pytest.raises(ValueError, match=match):
        validate_reported(pd.DataFrame([row]))


def test_reported_rejects_unknown_and_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("dataset,arch,method,top1,source,note,base_top1,macs_reduction\n")
    with pytest.raises(ValueError, match="params_reduction"):
        load_reported(tmp_path)
    (tmp_path / "a.csv").write_text(",".join(REPORTED_COLUMNS) + ",extra\n")
    with pytest.raises(ValueError, match="extra"):
        load_reported(tmp_path)


def test_interval_and_paired_difference_by_hand() -> None:
    """Issue 14: the t interval and the paired difference to l1-uniform on a table with known values."""
    from scipy import stats

    from harness.results.markdown import fmt_paired
    from harness.results.stats import mean_interval, paired_difference

    ci = mean_interval([1.0, 2.0, 3.0])  # mean 2, std 1, t(0.975, 2) = 4.3027
    assert (ci.mean, ci.std, ci.n) == (2.0, 1.0, 3)
    assert ci.low == pytest.approx(2 - 4.302653 / math.sqrt(3)) and ci.high == pytest.approx(2 + 4.302653 / math.sqrt(3))
    assert math.isnan(mean_interval([5.0]).low) and math.isnan(mean_interval([5.0]).std)
    # paired: only the common seeds count, and the difference is per seed (not of the means)
    d = paired_difference({0: 91.0, 1: 92.0, 2: 95.0, 7: 10.0}, {0: 90.0, 1: 90.0, 2: 92.0})
    assert (d.mean, d.n) == (2.0, 3)
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (d.low, d.high) == (pytest.approx(2 - half), pytest.approx(2 + half)) and not d.excludes_zero
    tight = paired_difference({0: 91.0, 1: 92.0, 2: 93.0}, {0: 90.0, 1: 90.9, 2: 92.1})  # +1.0, +1.1, +0.9
    assert tight.excludes_zero and tight.low > 0
    assert fmt_paired(d.mean, d.low, d.high, d.n).endswith("n.s.")
    assert fmt_paired(tight.mean, tight.low, tight.high, tight.n).startswith("**+1.00 [")

    rows = []
    for method, tops in (("l1-uniform", (90.0, 90.9, 92.1)), ("graph-rl", (91.0, 92.0, 93.0)),
                         ("random", (89.0, 91.0, 95.0))):
        for seed, top1 in enumerate(tops):
            rec = record("l1-uniform", 0.5, 0, seed=seed, top1=top1)
            rows.append(validate_record({**rec, "method": method}))
    s = summarize(pd.DataFrame(rows)).set_index("method")
    assert s.loc["graph-rl", "top1_vs_reference_mean"] == pytest.approx(1.0)
    assert s.loc["graph-rl", "top1_vs_reference_low"] > 0 and s.loc["graph-rl", "top1_vs_reference_n"] == 3
    assert s.loc["random", "top1_vs_reference_low"] < 0 < s.loc["random", "top1_vs_reference_high"]
    assert math.isnan(s.loc["l1-uniform", "top1_vs_reference_mean"])  # the reference itself
    expected = mean_interval([91.0, 92.0, 93.0])
    assert (s.loc["graph-rl", "top1_ci_low"], s.loc["graph-rl", "top1_ci_high"]) == (
        pytest.approx(expected.low), pytest.approx(expected.high))
    from harness.results.markdown import render_table

    page = render_table("cifar10", "resnet56", s.reset_index(), None)
    line = {m: next(x for x in page.splitlines() if f"| {m} |" in x) for m in ("graph-rl", "random", "l1-uniform")}
    assert "**+1.00 [" in line["graph-rl"] and "n.s." in line["random"] and "n.s." not in line["graph-rl"]
    assert "Top-1 vs l1-uniform (paired)" in page


def test_opening_plan_and_search_cost_are_columns_and_marked_in_the_table(tmp_path: Path) -> None:
    """Issue 14: a search that returned its opening plan (another method's) is a column of runs.csv and is
    marked in the table, never bold against that method; the search cost is its own table."""
    from harness.results.markdown import render_table

    paths = []
    for seed, (top1, opening) in enumerate([(92.0, True), (93.0, False), (94.0, True)]):
        for method, t, extra in (("l1-uniform", 90.0 + seed * 0.1, {}),
                                 ("graph-rl", top1, {"best_is_opening": opening, "search_evaluations": 24,
                                                     "search_images_scored": 24 * 1500, "search_device": "cpu"})):
            rec = {**record("l1-uniform", 0.5, 0), "method": method, "seed": seed, "top1": t, **extra}
            paths.append(tmp_path / f"{method}-{seed}.json")
            paths[-1].write_text(json.dumps(rec))
    collect(paths, [], tmp_path / "t", None)
    runs = read_runs(tmp_path / "t" / "runs.csv")
    assert runs["best_is_opening"].dtype == "boolean"
    g = runs[runs["method"] == "graph-rl"].sort_values("seed")
    assert g["best_is_opening"].tolist() == [True, False, True]
    assert runs.loc[runs["method"] == "l1-uniform", "best_is_opening"].isna().all()  # cannot: blank, not False
    assert g["search_images_scored"].tolist() == [36000] * 3 and set(g["search_device"]) == {"cpu"}
    s = pd.read_csv(tmp_path / "t" / "summary.csv").set_index("method")
    assert s.loc["graph-rl", "best_is_opening_n"] == 2 and math.isnan(s.loc["l1-uniform", "best_is_opening_n"])
    page = (tmp_path / "t" / "cifar10_resnet56.md").read_text()
    row = next(x for x in page.splitlines() if x.startswith("| ours | graph-rl"))
    assert "‡ (opening plan in 2 of 3 seeds)" in row and "**" not in row  # +3 points, but not a win
    assert s.loc["graph-rl", "top1_vs_reference_low"] > 0  # the interval alone would have called it one
    assert "**Search cost**" in page and "| graph-rl | macs 0.50 | 24 | 0.04 ± 0.00 |" in page


def test_provenance_survives_a_source_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: without .git (a source archive) a run records the package version, not "unknown"."""
    import harness.cli.common as common

    monkeypatch.setattr(common, "REPO_ROOT", tmp_path)  # no .git here
    (tmp_path / "pyproject.toml").write_text('[project]\\nname = "prunebench"\\nversion = "9.9.9"\\n')
    version = common.git_commit()
    assert version.startswith("prunebench ") and version != "unknown"


def test_latency_reduction_is_a_table_column(tmp_path: Path) -> None:
    """Issue 14: the measured latency reduction (against the base timed in the same job) is in the tables."""
    paths = []
    for seed, (lat, base) in enumerate([(1.5, 3.0), (2.0, 4.0)]):
        rec = {**record("l1-uniform", 0.5, 0), "seed": seed, "latency_ms": lat, "base_latency_ms": base,
               "latency_large_ms": 10 * lat, "base_latency_large_ms": 10 * base, "latency_device": "cpu-x",
               "latency_threads": 1, "latency_batch_size": 1, "latency_large_batch": 64}
        paths.append(tmp_path / f"{seed}.json")
        paths[-1].write_text(json.dumps(rec))
    collect(paths, [], tmp_path / "t", None)
    s = pd.read_csv(tmp_path / "t" / "summary.csv").iloc[0]
    assert s["latency_reduction_mean"] == pytest.approx(0.5) and s["latency_device"] == "cpu-x"
    row = next(x for x in (tmp_path / "t" / "cifar10_resnet56.md").read_text().splitlines() if x.startswith("| ours"))
    assert row.split(" | ")[-2] == "50.0 ± 0.0"
