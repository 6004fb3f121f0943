"""The Grafana dashboard's structure: uids, panel ids, layout, datasource references, variables, and that
every metric it queries is one RunTelemetry exports. (Grafana itself has no Debian/PyPI package; the
queries' results are checked against a real Prometheus in test_prometheus.py.)"""

from __future__ import annotations

import re

import pytest

from services.coordinator.telemetry import RunTelemetry

from . import dashboard

DASH = dashboard.load()
PANELS = [p for p in dashboard.all_panels(DASH)]
VISIBLE = [p for p in PANELS if p["type"] != "row"]
VARIABLES = {v["name"]: v for v in DASH["templating"]["list"]}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def exported_names() -> set[str]:
    """Every sample name the telemetry exports (with _total/_bucket/_sum/_count), labels filled in."""
    t = RunTelemetry("x", ["r"], process_metrics=False)
    t.observe_record({"iteration": 0, "reward/r": 1, "threshold/r": 1, "violation/r": 0, "multiplier/r": 1, "weight/r": 1,
                      "eval/reward/r": 1, "kl": 0, "kl_coef": 0.1, "eval/score": 0, "nm/best_score": 0, "nm/simplex_spread": 1,
                      "time/rollout": 1, "time/wall": 1, "tokens": 1, "tokens_per_second": 1})
    t.observe_request("GET", "/x", 200, 0.1)
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for f in text_string_to_metric_families(t.render().decode()) for s in f.samples}


def test_identity() -> None:
    assert DASH["uid"] == "crlhf-run" and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", DASH["uid"])
    assert DASH["title"] and DASH["schemaVersion"] >= 36
    assert "id" not in DASH or DASH["id"] is None  # provisioned dashboards are identified by uid


def test_panel_ids_are_unique_positive_integers() -> None:
    ids = [p["id"] for p in PANELS]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids))


def test_layout_is_on_the_grid_without_overlaps() -> None:
    cells: dict[tuple[int, int], int] = {}
    for p in PANELS:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]
    rows = [p for p in PANELS if p["type"] == "row"]
    assert all(r["gridPos"]["w"] == 24 and r["gridPos"]["h"] == 1 for r in rows)


def rows_in_order() -> list[tuple[str, list[dict]]]:
    """(row title, the panels below it up to the next row), top to bottom."""
    out: list[tuple[str, list[dict]]] = []
    for p in sorted(DASH["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if p["type"] == "row":
            out.append((p["title"], list(p.get("panels", []))))
        else:
            assert out, f"panel {p['title']!r} above the first row"
            out[-1][1].append(p)
    return out


def exprs(panels: list[dict]) -> str:
    return " ".join(t["expr"] for p in panels for t in p.get("targets", []))


def test_rows_come_in_the_documented_order() -> None:
    rows = rows_in_order()
    expected = [  # (words in the row title, metrics its panels must query)
        ("violation", ["crlhf_constraint_violation"]),
        ("threshold", ["crlhf_reward_value", "crlhf_constraint_threshold"]),
        ("multiplier", ["crlhf_constraint_multiplier", "crlhf_reward_weight"]),
        ("kl", ["crlhf_kl_divergence", "crlhf_kl_coefficient"]),
        ("throughput", ["crlhf_generated_tokens_total", "crlhf_phase_duration_seconds_bucket"]),
        ("nelder", ["crlhf_nelder_mead_best_score", "crlhf_nelder_mead_simplex_spread", "crlhf_eval_score"]),
    ]
    assert len(rows) >= len(expected)
    for (title, panels), (word, metrics) in zip(rows, expected, strict=False):
        assert word in title.lower(), (title, word)
        for metric in metrics:
            assert metric in exprs(panels), (title, metric)
    # The first row shows nothing but the violations per reward.
    first = rows[0][1]
    assert first and all("crlhf_constraint_violation" in exprs([p]) and "{{reward}}" in p["targets"][0]["legendFormat"] for p in first)


def test_every_panel_and_target_uses_the_templated_datasource() -> None:
    for p in VISIBLE:
        assert p["datasource"] == DATASOURCE, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE and t["expr"].strip(), p["title"]


def test_variables() -> None:
    ds = VARIABLES["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    run = VARIABLES["run"]
    assert run["type"] == "query" and run["datasource"] == DATASOURCE
    assert run["query"]["query"] == run["definition"] == "label_values(crlhf_reward_value, run)"
    assert run["refresh"] == 2 and not run["multi"] and not run.get("includeAll")  # one run at a time
    reward = VARIABLES["reward"]
    assert reward["datasource"] == DATASOURCE and reward["query"]["query"] == 'label_values(crlhf_reward_value{run="$run"}, reward)'
    assert reward["multi"] and reward["includeAll"] and reward["allValue"] == ".*"
    window = VARIABLES["window"]
    assert window["type"] == "custom" and window["current"]["value"] in window["query"].split(",")
    assert all(re.fullmatch(r"\d+[smhd]", w) for w in window["query"].split(","))


def test_every_variable_used_is_defined_and_every_query_selects_the_run() -> None:
    builtin = {"__rate_interval", "__interval", "__range"}
    for p in VISIBLE:
        texts = [p["title"], *(t["expr"] for t in p["targets"])]
        for text in texts:
            for m in dashboard.VARIABLE.finditer(text):
                name = m.group(1) or m.group(2)
                assert name in VARIABLES or name in builtin, (p["title"], name)
        for t in p["targets"]:
            for selector in re.findall(r"crlhf_\w+\{([^}]*)\}", t["expr"]):
                assert 'run="$run"' in selector, (p["title"], t["expr"])
    repeated = [p for p in VISIBLE if p.get("repeat")]
    assert all(p["repeat"] in VARIABLES and VARIABLES[p["repeat"]]["multi"] for p in repeated)


def test_queries_only_name_exported_metrics() -> None:
    names = exported_names()
    used = {m for t in dashboard.targets(DASH) for m in re.findall(r"\bcrlhf_\w+", t.expr)}
    assert used, "no crlhf metric queried"
    assert used <= names, sorted(used - names)
    # Histograms are read through their series, never as a bare name.
    assert "crlhf_phase_duration_seconds_bucket" in used and "crlhf_phase_duration_seconds" not in used


@pytest.mark.parametrize("target", dashboard.targets(DASH), ids=lambda t: t.name)
def test_rates_and_quantiles_use_the_window_variable(target: dashboard.Target) -> None:
    for match in re.finditer(r"\[([^\]]+)\]", target.expr):
        assert match.group(1) == "$window", target.expr
    if "histogram_quantile" in target.expr:
        assert re.search(r"sum by \(le(, \w+)*\)", target.expr), target.expr  # aggregate buckets by le
