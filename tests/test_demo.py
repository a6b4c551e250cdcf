import json

from lit_blind.cli import main
from lit_blind.results import ResultsFile


def test_demo_writes_outputs_and_shows_theorem1(tmp_path, capsys):
    args = ["--size", "32", "--prior", "gaussian", "--iterations", "2", "--inner", "2", "--em-size", "48"]
    assert main(["demo", "--out", str(tmp_path), *args]) == 0
    for name in ("comparison.png", "deblurred_large.png", "kernel_small.png", "summary.json", "comparison_em.png"):
        assert (tmp_path / "deblur" / name).is_file()
    em = json.loads((tmp_path / "deblur" / "em_summary.json").read_text())
    assert em["blurry_psnr"] > 10 and em["psnr"] > 10 and 0 <= em["kernel_error"] and em["score_evals"] > 0
    deblur = json.loads((tmp_path / "deblur" / "summary.json").read_text())
    assert {"large", "small"} <= deblur.keys() and deblur["large"]["kernel_error"] >= 0
    tmp_path = tmp_path / "theorem1"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(s["strictly_decreasing"] for s in summary["families"].values())
    assert (tmp_path / "figures" / "blur_likelihood.png").stat().st_size > 0
    rows = ResultsFile(tmp_path, key=("family", "theta")).rows()
    assert len(rows) == 44
    assert "Theorem 1" in capsys.readouterr().out
    # a rerun into the same directory appends nothing
    main(["demo", "--out", str(tmp_path.parent), "--size", "32", "--skip-deblur"])
    assert len(ResultsFile(tmp_path, key=("family", "theta")).rows()) == 44
