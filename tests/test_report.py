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
        "Surest right answers",
        "Validation scores",
        "Model card",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert "integrated gradients" in page
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


def _heatmap_cells(svg: str) -> tuple[str, dict[tuple[str, str], int]]:
    """The heat map as drawn: the y axis's title, and each written count keyed by the
    (y-axis label, x-axis label) whose row and column it stands in."""
    texts = [
        (match["attrs"], match["text"])
        for match in re.finditer(r"<text(?P<attrs>[^>]*)>(?P<text>[^<]*)</text>", svg)
    ]

    def position(attrs: str) -> tuple[float, float]:
        found = re.search(r'x="([-\d.]+)" y="([-\d.]+)"', attrs) or re.search(
            r"translate\(([-\d.]+) ([-\d.]+)\)", attrs
        )
        return float(found[1]), float(found[2])

    vertical = [(position(a), t) for a, t in texts if "rotate(-90" in a]
    x_ticks = [(position(a)[0], t) for a, t in texts if "rotate(-45)" in a]
    y_axis_title = min(vertical)[1]  # the colour bar's label is the other, on the right
    left = min(position(a)[0] for a, _ in texts if "rotate(-0" in a)
    y_ticks = [(position(a)[1], t) for a, t in texts if "rotate(-0" in a and position(a)[0] == left]
    cells = {}
    for attrs, text in texts:
        x, y = position(attrs)
        if text.isdigit() and "font-size: 9px" in attrs:
            row = min(y_ticks, key=lambda tick: abs(tick[0] - y))[1]
            column = min(x_ticks, key=lambda tick: abs(tick[0] - x))[1]
            cells[row, column] = int(text)
    return y_axis_title, cells


def test_the_heat_map_has_true_labels_in_rows_and_predictions_in_columns():
    from rnnfc_cli import report

    confusion = [[5, 1, 0], [2, 7, 3], [0, 4, 9]]  # not symmetric: a transpose shows
    svg = report.confusion_heatmap(report._pyplot(), confusion, ["a", "b", "c"], "title")
    title, cells = _heatmap_cells(svg)
    assert title == "true"
    names = ["a", "b", "c"]
    assert cells == {(names[i], names[j]): confusion[i][j] for i in range(3) for j in range(3)}


def test_the_pages_test_heat_map_puts_each_count_where_it_belongs(page, trained_model, tiny_data):
    scored = api.score(trained_model, str(tiny_data["test_long"]))
    expected = confusion_matrix(
        scored.true, scored.proba.argmax(axis=1), labels=range(len(scored.classes))
    )
    section = page[page.index("<h2>Test scores</h2>") : page.index("Most confidently wrong")]
    title, cells = _heatmap_cells(section)
    names = [str(c) for c in scored.classes]
    assert title == "true"
    assert cells == {
        (names[i], names[j]): int(expected[i, j])
        for i in range(len(names))
        for j in range(len(names))
    }


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
