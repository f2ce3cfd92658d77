"""``rnnfc report``: a self-contained page whose numbers agree with an independent oracle,
a clear message without matplotlib, and a page that really renders in a browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from rnnfc_cli import api
from rnnfc_cli.cli import main


@pytest.fixture(scope="module")
def page(trained_model, tiny_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    code = main(
        ["report", str(trained_model), "--data", str(tiny_data["test_long"]), "-o", str(path), "-q"]
    )
    assert code == 0
    return path.read_text()


def test_the_page_is_self_contained_and_has_every_section(page, trained_model):
    for heading in (
        "Learning curves",
        "Test scores",
        "Most confidently wrong",
        "Validation scores",
        "Model card",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert page.count("<svg") >= 4  # curves, two heat maps, wrong examples or none
    assert not re.search(r"<(img|script|link)\b[^>]*(src|href)=", page)
    params = api.describe(trained_model)["summary"]["params"]
    assert f"{params:,}" in page


def test_test_numbers_agree_with_scikit_learn(page, trained_model, tiny_data):
    scored = api.score(trained_model, str(tiny_data["test_long"]))
    predicted = scored.proba.argmax(axis=1)
    wrong = int((predicted != scored.true).sum())
    if wrong:
        assert f"{wrong} of {len(scored.true)} test sequences are misclassified" in page
    else:
        assert "Every test sequence is classified correctly" in page
    expected = confusion_matrix(scored.true, predicted, labels=range(len(scored.classes)))
    np.testing.assert_array_equal(scored.report.confusion, expected)
    section = page[page.index("<h2>Test scores</h2>") : page.index("Most confidently wrong")]
    cells = re.findall(r">(\d+)</text>", section)  # the counts written on the heat map
    assert sorted(map(int, cells)) == sorted(expected.ravel().tolist())


def test_report_to_stdout_and_without_test_data(trained_model, capsys):
    assert main(["report", str(trained_model), "-o", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<!doctype html>") and "Test scores" not in out


def test_missing_matplotlib_is_one_clear_line(trained_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    code = main(["report", str(trained_model), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'rnnfc[report]'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_the_page_renders_in_headless_chromium(page, tmp_path):
    from matplotlib.image import imread

    html = tmp_path / "report.html"
    html.write_text(page)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = imread(shot)[..., :3]
    ink = (pixels < 0.9).any(axis=-1)
    assert ink.mean() > 0.03, "the page rendered (nearly) blank"
    blue = (pixels[..., 2] > 0.5) & (pixels[..., 0] < 0.3)  # heat maps and curves drew
    assert blue.sum() > 500
