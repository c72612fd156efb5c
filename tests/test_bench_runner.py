"""The runner and the command: results.jsonl, resuming, refusing mixed runs, the report."""

import json
import sys

import pytest

from deeprlm.cli import main
from deeprlm.errors import InputError
from deeprlm.lm.scripted import ScriptedLM
from deeprlm.settings import Settings
from deeprlm_bench.report import p95, std, write_report
from deeprlm_bench.runner import RESULTS, RunConfig, read_results, run

FIELDS = {
    "task", "length", "index", "method", "score", "usage", "tokens_in", "tokens_out", "usd",
    "wall_s", "iterations", "sub_calls", "error",
}  # fmt: skip


def config(**changes):
    base = dict(
        tasks=("niah", "aggregate-labelled"),
        lengths=(2048, 4096),
        methods=("oracle",),
        n=2,
        seed=3,
    )
    return RunConfig(**{**base, **changes})


def test_one_line_per_example_with_every_field(tmp_path):
    results = run(config(), tmp_path)
    rows = read_results(tmp_path)
    assert len(rows) == len(results) == 2 * 2 * 2
    assert all(set(row) >= FIELDS for row in rows)
    assert all(row["score"] == 1.0 and row["error"] is None for row in rows)
    assert {(r["task"], r["length"], r["index"]) for r in rows} == {
        (t, n, i) for t in ("niah", "aggregate-labelled") for n in (2048, 4096) for i in (0, 1)
    }


def test_a_second_run_resumes_without_redoing_examples(tmp_path):
    run(config(), tmp_path)
    assert run(config(), tmp_path) == []
    grown = run(config(n=3, methods=("oracle",)), tmp_path)
    assert {(r.index) for r in grown} == {2}
    assert len(read_results(tmp_path)) == 12


def test_a_line_cut_short_by_an_interrupt_is_redone(tmp_path):
    run(config(tasks=("niah",), lengths=(2048,)), tmp_path)
    path = tmp_path / RESULTS
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    redone = run(config(tasks=("niah",), lengths=(2048,)), tmp_path)
    assert [r.index for r in redone] == [1]
    assert len(read_results(tmp_path)) == 2


def test_a_folder_of_another_model_or_seed_is_refused(tmp_path):
    run(config(tasks=("niah",), lengths=(2048,)), tmp_path)
    with pytest.raises(InputError, match="seed"):
        run(config(tasks=("niah",), lengths=(2048,), seed=4), tmp_path)
    with pytest.raises(InputError, match="limits"):
        run(config(tasks=("niah",), lengths=(2048,), settings=Settings(max_iterations=3)), tmp_path)


def test_base_scores_zero_without_calling_when_the_input_does_not_fit(tmp_path):
    model = ScriptedLM(["Answer: 1234567"], name="tiny")
    cfg = config(tasks=("niah",), lengths=(2048, 8192), n=1, methods=("base",), model="tiny",
                 window=4096)  # fmt: skip
    results = {r.length: r for r in run(cfg, tmp_path, models=(model, model))}
    assert len(model.calls) == 1  # the 2k example only
    assert results[8192].score == 0.0
    assert "does not fit" in results[8192].error
    assert results[2048].usage["tiny"]["calls"] == 1
    assert results[2048].tokens_in > 2048


def test_a_failing_method_is_a_result_with_its_error(tmp_path):
    def broken(messages):
        raise RuntimeError("provider down")

    model = ScriptedLM(broken, name="broken")
    cfg = config(tasks=("niah",), lengths=(2048,), n=1, methods=("base",), model="broken")
    (result,) = run(cfg, tmp_path, models=(model, model))
    assert result.score == 0.0
    assert "provider down" in result.error


def test_report_files_and_statistics(tmp_path):
    run(config(), tmp_path)
    cells = write_report(tmp_path).cells
    assert len(cells) == 4 and all(c["n"] == 2 and c["score"]["mean"] == 1.0 for c in cells)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"]["seed"] == 3 and len(summary["cells"]) == 4
    table = (tmp_path / "summary.md").read_text()
    assert "| niah | 2k | oracle | 2 | 1.000 ± 0.000 |" in table
    assert (tmp_path / "score_vs_length.png").read_bytes()[:4] == b"\x89PNG"


def test_std_and_p95_on_hand_worked_values():
    assert std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(2.138, abs=1e-3)
    assert std([3.0]) == 0.0
    # Ranks 0..19: the 95th percentile sits at rank 18.05.
    assert p95([float(v) for v in range(20)]) == pytest.approx(18.05)


def test_command_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["bench", "run", "--tasks", "niah", "--lengths", "2k", "--methods", "oracle",
                 "--n", "1", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    assert len(read_results(out)) == 1
    (out / "summary.md").unlink()
    assert main(["bench", "report", str(out)]) == 0
    assert "| niah | 2k | oracle | 1 |" in capsys.readouterr().out
    assert (out / "summary.md").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "niah,haystack"], "unknown task haystack"),
        (["--methods", "rag"], "unknown method rag"),
        (["--lengths", "8q"], "bad length '8q'"),
        (["--methods", "base", "--model", "gpt4"], "unknown model spec 'gpt4'"),
        (["--methods", "rlm", "--model", "local", "--sub-model", "x"], "unknown model spec 'x'"),
        (["--tasks", "codeqa", "--lengths", "1k"], "codeqa needs lengths of at least 2k"),
    ],
)
def test_bad_arguments_get_one_clear_line(tmp_path, capsys, argv, message):
    code = main(["bench", "run", "--out", str(tmp_path / "x"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "x").exists()


def test_report_of_a_missing_folder_is_an_input_error(tmp_path, capsys):
    assert main(["bench", "report", str(tmp_path / "nothing")]) == 2
    assert "no results folder" in capsys.readouterr().err


def test_example_command_prints_query_and_gold(capsys):
    assert main(["bench", "example", "niah", "--length", "2k"]) == 0
    out = capsys.readouterr().out
    assert "special magic number" in out and '"gold"' in out


def test_traces_are_kept_per_engine_run_when_asked(tmp_path):
    run(config(tasks=("niah",), lengths=(2048,), traces=True), tmp_path)
    traces = sorted(p.name for p in (tmp_path / "traces").iterdir())
    assert traces == ["niah_2k_0_oracle.jsonl", "niah_2k_1_oracle.jsonl"]
    first = json.loads((tmp_path / "traces" / traces[0]).read_text().splitlines()[0])
    assert first["type"] == "run_started"


@pytest.mark.parametrize("module", ["bm25s", "matplotlib"])
def test_a_run_without_the_bench_extra_stops_before_it_starts(
    tmp_path, capsys, monkeypatch, module
):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    argv = ["bench", "run", "--tasks", "niah", "--lengths", "2k", "--methods", "oracle",
            "--n", "1", "--out", str(tmp_path / "x"), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"needs the bench extra, missing {module}" in err
    assert "pip install 'deeprlm[bench]'" in err
    assert not (tmp_path / "x").exists()


def test_the_report_keeps_its_tables_without_matplotlib(tmp_path, capsys, monkeypatch):
    run(config(), tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = write_report(tmp_path)
    assert report.plot is None and len(report.cells) == 4
    assert "no score_vs_length.png: matplotlib is not installed" in report.notes[0]
    table = (tmp_path / "summary.md").read_text()
    assert "| niah | 2k | oracle | 2 | 1.000 ± 0.000 |" in table
    assert "Note: no score_vs_length.png" in table
    assert json.loads((tmp_path / "summary.json").read_text())["notes"] == list(report.notes)
    assert not (tmp_path / "score_vs_length.png").exists()
    assert main(["bench", "report", str(tmp_path)]) == 0
    assert "deeprlm: note: no score_vs_length.png" in capsys.readouterr().err
