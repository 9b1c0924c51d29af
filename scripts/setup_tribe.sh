#!/usr/bin/env bash
# Build the TRIBE v2 worker environment: its own venv with TRIBE's pins, which clash with brainrl's
# training stack (torch<2.7, numpy==2.2.6, x_transformers==1.27.20, neuralset/neuraltrain==0.0.2,
# exca>=0.5.20,<0.5.26 because neuralset 0.0.2 breaks on exca>=0.5.26). See docs/tribe.md.
#
#   scripts/setup_tribe.sh [VENV_DIR]            # default .venv-tribe
#   PYTHON=python3.12 TORCH_INDEX=https://download.pytorch.org/whl/cu124 scripts/setup_tribe.sh
#   WITH_SPACY=1 scripts/setup_tribe.sh          # + en_core_web_lg, needed by speech_path=reference
#   TRIBEV2_SRC=/path/to/tribev2 scripts/setup_tribe.sh   # install tribev2 from a local checkout (no GitHub)
#
# Then: TribeBrainModel(worker=True, python="<VENV_DIR>/bin/python"). The worker imports brainrl from
# this checkout through PYTHONPATH (set by the client), so brainrl itself is not installed here.
# Needs network (PyPI, GitHub, and later the Hugging Face hub with access to meta-llama/Llama-3.2-3B).
# Versions left open by tribev2 are pinned to the ones brainrl's real-stack tier ran with (docs/tribe.md).
set -euo pipefail

VENV="${1:-${TRIBE_VENV:-.venv-tribe}}"
PYTHON="${PYTHON:-python3.11}"
# facebookresearch/tribev2 commit read for docs/tribe.md (2026-03-30); override to move on deliberately.
TRIBE_REF="${TRIBE_REF:-7239908}"
TORCH_INDEX="${TORCH_INDEX:-}"
TRIBEV2_SRC="${TRIBEV2_SRC:-}"
if [[ -n "$TRIBEV2_SRC" ]]; then
  [[ -f "$TRIBEV2_SRC/tribev2/demo_utils.py" ]] || { echo "setup_tribe: $TRIBEV2_SRC is not a tribev2 checkout" >&2; exit 1; }
  TRIBEV2_REQ="$TRIBEV2_SRC"
else
  TRIBEV2_REQ="tribev2 @ git+https://github.com/facebookresearch/tribev2@${TRIBE_REF}"
fi

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup_tribe: $PYTHON not found; TRIBE v2 needs Python >= 3.11 (set PYTHON=...)" >&2
  exit 1
fi
"$PYTHON" - <<'PY' || { echo "setup_tribe: TRIBE v2 needs Python >= 3.11 (exca>=0.5.20 requires it)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

echo "setup_tribe: creating $VENV with $("$PYTHON" --version)"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --upgrade pip

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
cat >"$CONSTRAINTS" <<'PINS'
torch>=2.5.1,<2.7
torchvision>=0.20,<0.22
numpy==2.2.6
x_transformers==1.27.20
neuralset==0.0.2
neuraltrain==0.0.2
exca>=0.5.20,<0.5.26
transformers==5.24.0
huggingface_hub==2.4.0
pandas==3.1.1
PINS

TORCH_ARGS=()
if [[ -n "$TORCH_INDEX" ]]; then TORCH_ARGS=(--extra-index-url "$TORCH_INDEX"); fi
"${PIP[@]}" install "${TORCH_ARGS[@]}" -c "$CONSTRAINTS" "torch>=2.5.1,<2.7" "torchvision>=0.20,<0.22"
"${PIP[@]}" install "${TORCH_ARGS[@]}" -c "$CONSTRAINTS" \
  "numpy==2.2.6" "x_transformers==1.27.20" "neuralset==0.0.2" "neuraltrain==0.0.2" "exca>=0.5.20,<0.5.26" \
  "$TRIBEV2_REQ" \
  soundfile "pandas==3.1.1" "huggingface_hub==2.4.0" "transformers==5.24.0"

if [[ "${WITH_SPACY:-0}" == "1" ]]; then
  "$VENV/bin/python" -m spacy download en_core_web_lg
fi

# Fail now, not in the first training step: the pins must hold and the entry points must import.
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import sys

want = {"numpy": "2.2.6", "x_transformers": "1.27.20", "neuralset": "0.0.2", "neuraltrain": "0.0.2",
        "transformers": "5.24.0", "huggingface_hub": "2.4.0", "pandas": "3.1.1"}
bad = {k: md.version(k) for k, v in want.items() if md.version(k) != v}
torch_version = tuple(int(x) for x in md.version("torch").split("+")[0].split(".")[:2])
exca = tuple(int(x) for x in md.version("exca").split(".")[:3])
if bad or torch_version >= (2, 7) or not ((0, 5, 20) <= exca < (0, 5, 26)):
    sys.exit(f"setup_tribe: pins broken: {bad}, torch {md.version('torch')}, exca {md.version('exca')}")
import tribev2.demo_utils  # noqa: F401  (imports neuralset, exca, x_transformers)
import tribev2.main

assert hasattr(tribev2.main, "_free_extractor_model"), "tribev2.main changed; check brainrl/brain/tribe/engine.py"
print("setup_tribe: ok:", {k: md.version(k) for k in ["torch", "numpy", "exca", "neuralset", "tribev2"]})
PY
echo "setup_tribe: done. Use TribeBrainModel(worker=True, python=\"$(cd "$VENV" && pwd)/bin/python\")"
echo "setup_tribe: Llama-3.2-3B is gated: accept its licence on Hugging Face, then export HF_TOKEN=<token>"
echo "             or run '$VENV/bin/hf auth login' before the first predict (huggingface_hub 1.x+ has no huggingface-cli)."
