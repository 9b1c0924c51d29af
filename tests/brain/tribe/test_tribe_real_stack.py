"""brainrl's TRIBE backend against the real stack: tribev2's source (a checkout in $BRAINRL_TRIBEV2_SRC at
real_stack.TRIBEV2_COMMIT), neuralset/neuraltrain 0.0.2 and exca 0.5.25 from PyPI, tribev2's own configs and
FmriEncoder, tiny random feature models (real_stack.py). Marked ``tribe_real``; run before every change to
the backend, in the venv scripts/setup_tribe_tier.sh builds:

    BRAINRL_TRIBEV2_SRC=... .venv-tribe-tier/bin/python -m pytest -m tribe_real tests/brain/tribe/test_tribe_real_stack.py

Tolerances: one-pass vs TRIBE's per-word text features, and the same stimulus in another batch, process or
server, agree to 1e-4 absolute on maps of magnitude ~2 (float32 rounding; measured 3e-7 to 5e-7). bf16 is
compared with float32 by per-map correlation (> 0.99) and relative error (< 5%), the check
``brainrl tribe parity`` makes with real weights; bf16 against bf16 in another process or batch within 2% of
the map's largest value (bf16's resolution).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from brainrl.brain import BrainMap

import real_stack

pytestmark = pytest.mark.tribe_real

TEXTS = [
    "Hello world, this is a test of London in 1969.",
    "I said it was fine. Was it? The NASA team did not think so.",
    "Rivers carve valleys slowly, grain by grain; then the mountains bow.",
]
ATOL = 1e-4
#: the same bf16 setting in another process or batch: bf16 keeps 8 significant bits, so maps of magnitude ~2
#: move by multiples of 2**-6 = 0.016 when a matmul's order changes; allowed: 2% of the map's largest value
BF16_RTOL = 0.02


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    src = real_stack.tribev2_source()
    if src is None:
        pytest.skip(f"set {real_stack.SRC_ENV} to a checkout of facebookresearch/tribev2 at {real_stack.TRIBEV2_COMMIT[:7]} "
                    "(scripts/setup_tribe_tier.sh)")
    root = tmp_path_factory.mktemp("tribe-real")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(src))
        mp.setenv("DATAPATH", str(root / "data"))  # tribev2.grids.defaults reads both at import
        mp.setenv("SAVEPATH", str(root / "save"))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
        try:
            import tribev2.main  # noqa: F401
        except Exception as error:  # noqa: BLE001
            pytest.skip(f"tribev2 does not import here ({type(error).__name__}: {error}); use the venv of "
                        "scripts/setup_tribe_tier.sh")
        hub = root / "hub"
        real_stack.build_feature_models(hub, TEXTS * 4)
        checkpoints = {v: real_stack.build_checkpoint(v, root / "ckpt" / v, root / "scratch") for v in real_stack.VARIANTS}
        from brainrl.stimulus import get_speech_engine

        stimuli = get_speech_engine("espeak", out_dir=str(root / "speech")).synthesize(TEXTS)
        mp.chdir(hub)  # the feature models load from ./meta-llama/..., ./Qwen/..., ./facebook/...
        yield {"root": root, "src": src, "hub": hub, "checkpoints": checkpoints, "stimuli": stimuli, "runs": {}}


def _engine(stack, variant, dtype="float32", text_features="one-pass", device="cpu", **kwargs):
    from brainrl.brain.tribe.config import TribeConfig
    from brainrl.brain.tribe.engine import TribeEngine

    extra = {"allow_bf16": True} if dtype == "bfloat16" else {}
    folder = stack["root"] / "cache" / f"{variant}-{dtype}-{text_features}-{time.time_ns()}"  # fresh each time
    return TribeEngine(TribeConfig(checkpoint_dir=str(stack["checkpoints"][variant]), device=device, dtype=dtype,
                                   text_features=text_features, cache_folder=str(folder), **extra, **kwargs))


def _predict(stack, variant, dtype="float32", text_features="one-pass"):
    """Maps of the three stimuli (computed once per setting in this module)."""
    key = (variant, dtype, text_features)
    if key not in stack["runs"]:
        engine = _engine(stack, variant, dtype, text_features)
        stack["runs"][key] = (engine, engine.predict(stack["stimuli"]))
    return stack["runs"][key]


def _check_shapes(stimuli, maps):
    for stimulus, brain_map in zip(stimuli, maps):
        assert not isinstance(brain_map, str), brain_map
        # one TR per started second of audio (TRIBE keeps the 1 s segments that overlap an event)
        assert brain_map.shape == (math.ceil(stimulus.duration), real_stack.N_VERTICES), (brain_map.shape, stimulus.duration)
        assert brain_map.dtype == np.float32 and np.isfinite(brain_map).all()


@pytest.mark.parametrize("variant", real_stack.VARIANTS)
def test_one_pass_equals_tribes_per_word_features(stack, variant):
    """Findings 2 and 3 of the audit: with and without cache_n_layers, one-pass = TRIBE's own text path."""
    engine, fast = _predict(stack, variant, "float32", "one-pass")
    _, reference = _predict(stack, variant, "float32", "reference")
    _check_shapes(stack["stimuli"], fast)
    _check_shapes(stack["stimuli"], reference)
    stats = engine.text_stats.as_dict()
    assert stats["forwards"] == 1 and stats["fallback_words"] == 0 and stats["words"] == sum(len(s.words) for s in stack["stimuli"])
    assert stats["self_check"]["max_abs_diff"] < 1e-5
    for a, b in zip(fast, reference):
        assert float(np.abs(a - b).max()) < ATOL
    # the maps depend on the text: stimuli differ from each other
    assert float(np.abs(fast[0][:2] - fast[1][:2]).max()) > 1e-3


@pytest.mark.parametrize("variant", ["base", "mini"])
@pytest.mark.parametrize("text_features", ["one-pass", "reference"])
def test_bf16_runs_and_tracks_float32(stack, variant, text_features):
    """Finding 1: bf16 predicted nothing (.numpy() on bf16). Now every item comes back, close to float32."""
    engine, bf16 = _predict(stack, variant, "bfloat16", text_features)
    _, fp32 = _predict(stack, variant, "float32", text_features)
    _check_shapes(stack["stimuli"], bf16)
    text_model = engine._model.data.text_feature.model
    assert next(text_model.parameters()).dtype.__str__() == "torch.bfloat16"  # bf16 weights, not only autocast
    for a, b in zip(bf16, fp32):
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        rel = float(np.abs(a - b).max() / np.abs(b).max())
        assert r > 0.99 and rel < 0.05, (r, rel)


@pytest.mark.parametrize("kept", [("fusion",), ("audio", "text")])
def test_float32_parts_stay_float32_under_bf16(stack, kept):
    """``float32_parts``: the named parts keep float32 weights (and the fusion model its float32 forward), the
    others run in bf16; the maps track float32 at least as closely as all-bf16 does on these texts."""
    import torch

    engine = _engine(stack, "base", "bfloat16", float32_parts=kept).load()
    maps = engine.predict(stack["stimuli"])
    _, fp32 = _predict(stack, "base", "float32")
    _, bf16 = _predict(stack, "base", "bfloat16")
    _check_shapes(stack["stimuli"], maps)
    data = engine._model.data
    weights = {"text": data.text_feature.model, "audio": data.audio_feature.model, "fusion": engine._model._model}
    for part, module in weights.items():
        expected = torch.float32 if part in kept else torch.bfloat16
        if part == "fusion":  # autocast, not bf16 weights: TRIBE's checkpoint stays float32
            assert next(module.parameters()).dtype == torch.float32
            assert hasattr(module.forward, "__wrapped__") == (part not in kept)  # torch.autocast's decorator
        else:
            assert next(module.parameters()).dtype == expected, part
    rel = lambda a, b: float(np.abs(a - b).max() / np.abs(b).max())  # noqa: E731
    for ours, full, ref in zip(maps, bf16, fp32):
        assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99
        assert rel(ours, ref) < 0.05
    # the maps differ from all-bf16's: the kept parts really ran in float32
    assert max(float(np.abs(a - b).max()) for a, b in zip(maps, bf16)) > 1e-4


def test_batching_does_not_mix_stimuli(stack):
    """Segment alignment: each stimulus alone gives the rows it got inside the batch, in time order."""
    _, batch = _predict(stack, "base")
    engine = _engine(stack, "base")
    for stimulus, expected in zip(stack["stimuli"], batch):
        (alone,) = engine.predict([stimulus])
        assert alone.shape == expected.shape and float(np.abs(alone - expected).max()) < ATOL
    (reordered,) = [engine.predict(stack["stimuli"][::-1])]
    for a, b in zip(reordered[::-1], batch):
        assert float(np.abs(a - b).max()) < ATOL


def test_worker_equals_in_process(stack):
    from brainrl.brain.tribe import TribeBrainModel

    _, expected = _predict(stack, "base")
    for dtype in ("float32", "bfloat16"):
        extra = {"allow_bf16": True} if dtype == "bfloat16" else {}
        model = TribeBrainModel(worker=True, python=sys.executable, checkpoint_dir=str(stack["checkpoints"]["base"]),
                                device="cpu", dtype=dtype, cache_folder=str(stack["root"] / f"worker-{dtype}"),
                                worker_pythonpath=[str(stack["src"])], load_timeout=600, predict_timeout=600, **extra)
        try:
            maps = model.predict(stack["stimuli"])
            assert model.identity()["dtype"] == dtype
        finally:
            model.close()
        assert all(isinstance(m, BrainMap) for m in maps), maps
        if dtype == "float32":
            for m, e in zip(maps, expected):
                assert float(np.abs(m.data - e).max()) < ATOL
        else:
            _, bf16 = _predict(stack, "base", "bfloat16")
            for m, e in zip(maps, bf16):  # bf16 rounds by up to 2**-7 of a value: 0.016 at ~2
                assert m.data.shape == e.shape and float(np.abs(m.data - e).max()) < BF16_RTOL * float(np.abs(e).max())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_brainrl_serve_equals_in_process(stack):
    from brainrl.brain.remote import RemoteBrainModel

    _, expected = _predict(stack, "base")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[3]), str(stack["src"])]))
    server = subprocess.Popen(
        [sys.executable, "-m", "brainrl", "serve", "--model", "tribe", "--port", str(port),
         "--model-arg", f"checkpoint_dir={stack['checkpoints']['base']}", "--model-arg", "device=cpu",
         "--model-arg", f"cache_folder={stack['root'] / 'serve-cache'}"],
        cwd=stack["hub"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        remote = RemoteBrainModel(f"http://127.0.0.1:{port}", timeout=600, retries=60, backoff_s=2.0, max_backoff_s=5.0)
        maps = remote.predict(stack["stimuli"])
        assert all(isinstance(m, BrainMap) for m in maps), maps
        for m, e in zip(maps, expected):
            assert float(np.abs(m.data - e).max()) < ATOL
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_feature_cache_size_key_and_cap(stack):
    """Finding 4: TRIBE's on-disk cache has the documented size per word, and the cap empties it; with
    cache_max_gb=0 the features stay in RAM (same maps, nothing written but the WAV copies)."""
    engine, cached_maps = _predict(stack, "base")
    n_words = sum(len(s.words) for s in stack["stimuli"])
    text_bytes = sum(f.stat().st_size for f in engine.tribe_cache.rglob("*") if f.is_file() and "Text" in str(f)
                     and f.suffix == ".data")
    # (cache_n_layers=20 layers) x (d=32) x float32 per word: for Llama-3.2-3B, 20 x 3072 x 4 B = 246 KB
    assert text_bytes == n_words * 20 * real_stack.HIDDEN * 4, (text_bytes, n_words)
    capped = _engine(stack, "base", cache_max_gb=0)  # features in RAM only: no feature file, no sqlite claims
    first = capped.predict(stack["stimuli"])
    assert capped.cache_clears == 1 and capped.cache_bytes() == 0
    for name in ("text_feature", "audio_feature"):  # exca infras with no folder: RAM only, no inflight.db
        assert getattr(capped._model.data, name).infra.folder is None
        assert getattr(engine._model.data, name).infra.folder is not None
    assert any(f.name == "inflight.db" for f in engine.tribe_cache.rglob("*"))
    for a, b in zip(first, cached_maps):  # the same maps as through the on-disk cache
        assert float(np.abs(a - b).max()) < ATOL
    second = capped.predict(stack["stimuli"])  # exca's RAM copy was dropped too: recomputed, same maps
    for a, b in zip(first, second):
        assert float(np.abs(a - b).max()) < ATOL
    assert capped.cache_clears == 2


@pytest.mark.gpu
def test_cuda_n(stack):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    _, expected = _predict(stack, "base")
    engine = _engine(stack, "base", device="cuda:1")
    maps = engine.predict(stack["stimuli"])
    assert next(engine._model._model.parameters()).device == torch.device("cuda:1")
    assert next(engine._model.data.text_feature.model.parameters()).device == torch.device("cuda:1")
    for a, b in zip(maps, expected):
        assert float(np.abs(a - b).max()) < 1e-3


def test_brainrl_tribe_parity_on_the_random_weight_model(stack, tmp_path):
    """The command a user with real weights runs, end to end on tribev2's own code (JSON + plot)."""
    import json

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS + ["Quiet rivers carve valleys, grain by grain.", "She laughed, and the room went still."]))
    out = tmp_path / "parity"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[3]), str(stack["src"])]))
    done = subprocess.run(
        [sys.executable, "-m", "brainrl", "tribe", "parity", "--texts", str(texts), "--batch-size", "5", "--out", str(out),
         "--model-arg", f"checkpoint_dir={stack['checkpoints']['base']}", "--model-arg", "device=cpu",
         "--model-arg", f"cache_folder={tmp_path / 'cache'}"],
        cwd=stack["hub"], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "parity.json").read_text())
    assert (out / "parity.png").stat().st_size > 10_000
    one_pass, bf16 = report["comparisons"]["one-pass"], report["comparisons"]["bf16"]
    assert one_pass["n_compared"] == bf16["n_compared"] == 5
    assert one_pass["per_tr_vertex_r"]["min"] > 0.99999 and one_pass["max_abs_diff_relative"]["max"] < 1e-4
    assert bf16["per_tr_vertex_r"]["median"] > 0.99 and bf16["max_abs_diff_relative"]["max"] > 1e-4
    (out / "parity.json").replace(stack["root"] / "parity.json")  # kept for docs/tribe.md's numbers
    print(json.dumps({k: {kk: v[kk] for kk in ("per_tr_vertex_r", "max_abs_diff_relative", "roi_reward_r",
                                              "rank_r_within_batch_mean")} for k, v in report["comparisons"].items()}))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batched_audio_equals_tribes_per_clip_audio(stack, dtype):
    """Issue 16: w2v-bert batched across clips (torch filter bank, masked padding) = TRIBE's per-clip path."""
    extra = {"allow_bf16": True} if dtype == "bfloat16" else {}
    from brainrl.brain.tribe.config import TribeConfig
    from brainrl.brain.tribe.engine import TribeEngine

    maps = {}
    for mode in ("batched", "reference"):
        engine = TribeEngine(TribeConfig(checkpoint_dir=str(stack["checkpoints"]["base"]), device="cpu", dtype=dtype,
                                         audio_features=mode, audio_batch_size=3,
                                         cache_folder=str(stack["root"] / f"audio-{mode}-{dtype}-{time.time_ns()}"), **extra))
        maps[mode] = engine.predict(stack["stimuli"])
        if mode == "batched":
            stats = engine.audio_stats.as_dict()
            assert (stats["forwards"], stats["clips"], stats["fallback_clips"], stats["fallback_reason"]) == (1, 3, 0, None)
    _check_shapes(stack["stimuli"], maps["batched"])
    for a, b in zip(maps["batched"], maps["reference"]):
        tolerance = ATOL if dtype == "float32" else BF16_RTOL * float(np.abs(b).max())
        assert float(np.abs(a - b).max()) < tolerance


_API = r"""
import inspect, json
import tribev2.demo_utils as demo, tribev2.main as main
from neuralset.extractors.text import HuggingFaceText

def params(f):
    return [(p.name, repr(p.default)) for p in inspect.signature(f).parameters.values()]

attribute = HuggingFaceText.__dict__.get("_get_data")
print(json.dumps({
    "from_pretrained": params(demo.TribeModel.from_pretrained),
    "predict": params(demo.TribeModel.predict),
    "get_audio_and_text_events": params(demo.get_audio_and_text_events),
    "free_extractor_model": callable(getattr(main, "_free_extractor_model", None)),
    "get_data_is_mapinfra_property": isinstance(attribute, property) and callable(getattr(attribute.fget, "method", None)),
    "text_extractor_methods": [n for n in ("_layer_subselection", "_aggregate_tokens", "_aggregate_layers", "prepare",
                                           "_get_timed_arrays", "tokenizer", "model") if hasattr(HuggingFaceText, n)],
}))
"""


def test_test_doubles_match_the_real_api(stack):
    """The doubles in tests/doubles stand in for this stack in the default tier: same signatures (names and
    defaults), same MapInfra structure, same extractor methods."""
    import json

    doubles = Path(__file__).resolve().parents[2] / "doubles"
    out = {}
    for name, path in (("real", str(stack["src"])), ("double", str(doubles))):
        env = dict(os.environ, PYTHONPATH=path)
        done = subprocess.run([sys.executable, "-c", _API], env=env, capture_output=True, text=True, timeout=600,
                              cwd=stack["hub"])
        assert done.returncode == 0, done.stderr[-2000:]
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["double"] == out["real"], {k: (out["double"][k], out["real"][k]) for k in out["real"]
                                          if out["double"][k] != out["real"][k]}


# -- predict_path="direct": TRIBE's input tensors without its events DataFrame (issue 16) ---------------------
def _direct_stimuli(stack):
    """The three stimuli, a long one (several 6 s windows) and that one with words only in its first 3 s (its
    later windows have audio but no Word: TRIBE's zeros for a missing modality), in one batch."""
    import dataclasses

    if "direct_stimuli" not in stack:
        from brainrl.stimulus import get_speech_engine

        (long,) = get_speech_engine("espeak", out_dir=str(stack["root"] / "speech")).synthesize([" ".join(TEXTS)])
        early = [w for w in long.words if w.start < 3.0]
        assert 0 < len(early) < len(long.words) and long.duration > 12
        cut = dataclasses.replace(long, text=long.text + " ", words=early)
        stack["direct_stimuli"] = [*stack["stimuli"], long, cut]
    return stack["direct_stimuli"]


def _short_window_checkpoint(stack):
    """tribev2's base config with 6 TR windows (stride 6), so the stimuli above span 1 to 3 windows."""
    if "short" not in stack["checkpoints"]:
        stack["checkpoints"]["short"] = real_stack.build_checkpoint(
            "base", stack["root"] / "ckpt" / "short", stack["root"] / "scratch-short", overrides={"data.duration_trs": 6})
    return stack["checkpoints"]["short"]


@pytest.mark.parametrize("variant,dtype,text_features", [
    ("base", "float32", "one-pass"), ("base-nocache", "float32", "one-pass"), ("mini", "float32", "one-pass"),
    ("short", "float32", "one-pass"), ("base", "bfloat16", "one-pass"), ("short", "bfloat16", "one-pass"),
    ("base", "float32", "reference")])
def test_direct_path_equals_tribes_predict(stack, variant, dtype, text_features):
    """predict_path="direct" gives TRIBE's own predict's maps: stimuli of different lengths in one batch, windows
    with a missing modality, with and without cache_n_layers, Llama (group means) and Qwen (mean), fp32 and bf16,
    one-pass text and batched audio features (layer groups averaged on the device) and TRIBE's per-word text
    and per-clip audio ones."""
    stimuli = _direct_stimuli(stack)
    if variant == "short":
        _short_window_checkpoint(stack)
    audio = {"audio_features": "reference"} if text_features == "reference" else {}
    maps = {}
    for path in ("tribe", "direct"):
        engine = _engine(stack, variant, dtype, text_features, predict_path=path, **audio)
        maps[path] = engine.predict(stimuli)
        if path == "direct":
            stats = engine.direct_stats.as_dict()
            assert stats["calls"] == 1 and stats["forwards"] == 1
            windows = sum(math.ceil(s.duration / (6 if variant == "short" else 100)) for s in stimuli)
            assert stats["windows"] == windows, (stats, windows)
    _check_shapes(stimuli, maps["tribe"])
    _check_shapes(stimuli, maps["direct"])
    for tribe, direct in zip(maps["tribe"], maps["direct"]):
        tolerance = ATOL if dtype == "float32" else BF16_RTOL * float(np.abs(tribe).max())
        assert float(np.abs(tribe - direct).max()) < tolerance
    # the truncated stimulus differs from the full one only where its words are missing
    assert float(np.abs(maps["direct"][3] - maps["direct"][4]).max()) > 1e-3


def test_direct_path_keeps_failures_per_item(stack, tmp_path):
    """A stimulus without audio and one whose audio is unreadable come back as reasons; the others as maps equal
    to TRIBE's predict (the direct batch fails on the unreadable file, then items are retried one by one)."""
    import dataclasses

    good = stack["stimuli"]
    bad_file = tmp_path / "not-audio.wav"
    bad_file.write_text("this is not a wav file")
    unreadable = dataclasses.replace(good[0], text=good[0].text + " (unreadable)", audio_path=bad_file)
    no_audio = dataclasses.replace(good[1], text=good[1].text + " (no audio)", audio_path=None, waveform=None)
    batch = [good[0], unreadable, good[1], no_audio, good[2]]
    out = {path: _engine(stack, "base", predict_path=path).predict(batch) for path in ("tribe", "direct")}
    for path, maps in out.items():
        assert isinstance(maps[1], str) and maps[1].startswith("TRIBE predict failed"), (path, maps[1])
        assert isinstance(maps[3], str) and maps[3].startswith("invalid stimulus"), (path, maps[3])
    for index in (0, 2, 4):
        assert float(np.abs(out["tribe"][index] - out["direct"][index]).max()) < ATOL
