"""The append-only results file (lit_blind.results)."""

import pytest

from lit_blind.results import ResultsFile


def test_results_file_skips_done_rows_and_torn_lines(tmp_path):
    res = ResultsFile(tmp_path, key=("a", "b"))
    res.append({"a": 1, "b": 0.1, "v": 2.0})
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"a": 2, "b"')  # a run killed mid-write
    res2 = ResultsFile(tmp_path, key=("a", "b"))
    assert res2.done({"a": 1, "b": 0.1}) and not res2.done({"a": 2, "b": 0.1})
    res2.append({"a": 2, "b": 0.1, "v": 3.0})
    assert [r["a"] for r in ResultsFile(tmp_path, key=("a", "b")).rows()] == [1, 2]

    with pytest.raises(ValueError, match="non-finite"):
        res2.append({"a": 3, "b": 0.0, "v": float("nan")})
