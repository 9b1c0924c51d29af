"""From synthetic brain maps to statistics, figures, summary.json and a report that renders in Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from brainrl.cortex.rois import get_roi
from brainrl.report import ModelOutputs, ReportConfig, StatsConfig, build_comparison, write_report
from brainrl.report.figures import surface_figures
from report_helpers import PROMPTS, synthetic_maps, texts_with_words

FAST = StatsConfig(n_boot=400, n_perm=400, seed=0)
ROIS = ["broca", "wernicke", "auditory", "v1", "motor", "global", "left_hemisphere", "right_hemisphere"]


class Failed:
    """Mirrors brainrl.brain.Failed (falsy, with a reason): the report must list it, never use a 0."""

    def __init__(self, reason):
        self.reason = reason

    def __bool__(self):
        return False


def outputs(label, n, seed, **effects):
    rng = np.random.default_rng(seed)
    words = rng.integers(20, 60, n)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    return ModelOutputs(label, texts_with_words(words), prompts, synthetic_maps(n, seed, words=words, **effects))


@pytest.fixture(scope="module")
def planted():
    """Broca +0.05 on every vertex and frame, plus a whole-cortex shift of +0.01."""
    base = outputs("base", 32, 1)
    tuned = outputs("tuned", 32, 2, roi="broca", roi_shift=0.05, global_shift=0.01)
    return build_comparison(base, tuned, ReportConfig(target="broca", rois=ROIS, stats=FAST, n_examples=2))


def test_planted_map_effect_recovered(planted):
    stats = planted.stats
    broca = stats.row("broca")
    assert broca.diff.covers(0.06) and broca.diff.low > 0
    share = get_roi("broca").n_vertices / get_roi("global").n_vertices
    assert stats.row("global").diff.covers(0.01 + 0.05 * share)
    assert stats.selectivity.diff.covers(0.05 * (1 - share)) and stats.selectivity.diff.low > 0
    assert stats.row("v1").diff.covers(0.01)
    assert stats.row("left_hemisphere").diff.estimate > stats.row("right_hemisphere").diff.estimate  # Broca is left
    assert planted.roi_names[:2] == ["broca", "wernicke"]
    assert planted.base.mean_maps.shape == (32, 20484)


def test_failed_items_are_listed_not_zeroed():
    base = outputs("base", 12, 3)
    tuned = outputs("tuned", 12, 4)
    tuned.maps[0] = Failed("speech synthesis failed: test")
    tuned.maps[1] = None
    result = build_comparison(base, tuned, ReportConfig(rois=ROIS, stats=FAST))
    assert result.tuned.n == 10 and result.base.n == 12
    assert [f["reason"] for f in result.tuned.failures] == ["speech synthesis failed: test", "no prediction"]
    assert result.stats.n_tuned == 10


def test_mismatched_prompts_and_bad_maps_fail_clearly():
    base = outputs("base", 8, 5)
    tuned = outputs("tuned", 8, 6)
    tuned.prompts = ["something else"] * 8
    with pytest.raises(ValueError, match="same prompts"):
        build_comparison(base, tuned, ReportConfig(rois=ROIS, stats=FAST))
    with pytest.raises(ValueError, match="one entry per completion"):
        ModelOutputs("x", ["a"], ["p", "q"], [np.zeros((2, 20484))])
    bad = outputs("tuned", 8, 6)
    bad.maps = [np.zeros((3, 100))] * 8  # wrong shape: every item fails, with the reason
    with pytest.raises(ValueError, match="20484"):
        build_comparison(outputs("base", 8, 5), bad, ReportConfig(rois=ROIS, stats=FAST))


def _check_png(path: Path, min_size=(200, 150)):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[1] >= min_size[0] and image.shape[0] >= min_size[1]
    assert image[..., :3].std() > 0.02  # not a blank canvas
    return image


@pytest.fixture(scope="module")
def written(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    planted.tuned.texts[0] = "<script>alert('x')</script> & <b>bold</b>"
    metrics = [{"step": s, "reward_mean": 0.01 * s, "reward_std": 0.002, "kl_per_token": 0.001 * s, "loss": 1 / s}
               for s in range(1, 21)]
    card = {"name": "demo", "recipe": {"policy": {"model": "smollm2"}, "note": "<not a tag>"}}
    paths = write_report(planted, out, run_card=card, metrics=metrics, settings={"seed": 7}, surfaces=False)
    return out, paths


def test_figures_and_files_written(written):
    out, paths = written
    for name in ("roi_differences", "timecourses", "length", "training"):
        _check_png(paths[f"figure:{name}"])
    summary = json.loads(paths["summary"].read_text())
    assert summary["headline"]["target"] == "broca"
    assert summary["headline"]["selective_gain"] is True
    assert summary["statistics"]["rois"][0]["name"] == "broca"
    assert any("not only a global shift" in s for s in summary["verdict"])
    assert summary["settings"] == {"seed": 7}
    assert set(summary["figures"]) == {"roi_differences", "timecourses", "length", "training"}
    arrays = np.load(paths["roi_values"])
    assert arrays["base"].shape == (32, len(ROIS))


def test_html_is_self_contained_and_escaped(written):
    _, paths = written
    html = paths["report"].read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "&lt;not a tag&gt;" in html  # the run card is escaped too
    assert "<script" not in html.lower()  # the report runs no code
    for attribute in re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", html):
        assert attribute.startswith("data:image/png;base64,"), attribute
    assert "@import" not in html and "url(" not in html
    assert html.count("<img") == 4
    assert re.search(r"<tr class='target[^']*'><td>broca</td>", html)


def test_surface_figure_renders(planted, tmp_path):
    drawn = surface_figures(planted, tmp_path, names=["surface_diff"])
    assert not drawn.errors
    _check_png(drawn.paths["surface_diff"], min_size=(500, 400))


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var marker = document.createElement('div');
  marker.id = 'render-check';
  marker.textContent = 'IMAGES ' + ok + '/' + imgs.length + ' WIDTH ' + document.body.scrollWidth;
  document.body.appendChild(marker);
});
</script>"""


def _chromium(binary, profile, *args, timeout=90):
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_report_renders_in_headless_chromium(written, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (install the Debian package: apt-get install -y chromium)")
    _, paths = written
    # a copy with a probe script: the report itself stays script-free
    probe = tmp_path / "probe.html"
    probe.write_text(paths["report"].read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = _chromium(binary, tmp_path / "profile-dom", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    match = re.search(r"IMAGES (\d+)/(\d+) WIDTH (\d+)", dom.stdout)
    assert match, f"probe marker missing; chromium said: {dom.stderr[-500:]}"
    ok, total, width = map(int, match.groups())
    assert total == 4 and ok == total
    shot = tmp_path / "shot.png"
    result = _chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,2000",
                       paths["report"].as_uri())
    assert shot.exists(), result.stderr[-500:]
    image = _check_png(shot, min_size=(1200, 2000))
    # non-trivial: plenty of non-white pixels (text, tables, figures), not a blank or error page
    assert (image[..., :3].mean(axis=2) < 0.9).mean() > 0.03


def test_verdict_counts_the_same_rois_in_rank_and_fdr_lines():
    base = outputs("base", 24, 5)
    tuned = outputs("tuned", 24, 6)  # no planted effect
    comparison = build_comparison(base, tuned, ReportConfig(target="broca", rois=None, stats=FAST))
    from brainrl.report.summary import verdict

    lines = verdict(comparison.stats)
    rank = next(line for line in lines if "ranks" in line)
    fdr = next(line for line in lines if "FDR" in line)
    regional = int(re.search(r"ranks \d+ of (\d+) regional ROIs", rank).group(1))
    tested, regional_tested, whole = map(int, re.search(r"over (\d+) ROIs: (\d+) regional, (\d+) whole-cortex", fdr).groups())
    assert regional == regional_tested and tested == regional_tested + whole
    up, down, flat = map(int, re.search(r"(\d+) rose, (\d+) fell and (\d+) showed no established change", fdr).groups())
    assert up + down + flat == tested


TABLE_PROBE = """<script>
window.addEventListener('load', function () {
  var t = document.getElementById('roi-table');
  var m = document.createElement('div'); m.id = 'table-check';
  m.textContent = 'TABLE ' + t.scrollWidth + ' BOX ' + t.parentElement.clientWidth;
  document.body.appendChild(m);
});
</script>"""


def test_roi_table_of_every_preset_fits_a_1400_px_window(tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (install the Debian package: apt-get install -y chromium)")
    comparison = build_comparison(outputs("base", 16, 1), outputs("tuned", 16, 2, roi="broca", roi_shift=0.05),
                                  ReportConfig(target="broca", rois=None, stats=FAST))
    paths = write_report(comparison, tmp_path / "report", surfaces=False)
    probe = tmp_path / "probe.html"
    probe.write_text(paths["report"].read_text().replace("</body>", TABLE_PROBE + "</body>"))
    dom = _chromium(binary, tmp_path / "profile", "--window-size=1400,2000", "--virtual-time-budget=5000",
                    "--dump-dom", probe.as_uri())
    table, box = map(int, re.search(r"TABLE (\d+) BOX (\d+)", dom.stdout).groups())
    assert table <= box, f"the ROI table is {table} px wide in a {box} px box: columns cut off"
