#!/usr/bin/env bash
# The venv of brainrl's real-stack TRIBE test tier (pytest -m tribe_real): brainrl's own .venv plus what
# tribev2's code needs on top, in a thin overlay venv, and tribev2's source as a checkout at a pinned commit.
#
#   scripts/setup_tribe_tier.sh [OVERLAY_DIR]     # default .venv-tribe-tier; needs .venv (scripts/setup.sh --dev)
#   TRIBEV2_SRC=/path/to/checkout scripts/setup_tribe_tier.sh   # use an existing checkout (else cloned here)
#
# Then (the command is printed at the end):
#   BRAINRL_TRIBEV2_SRC=<checkout> <OVERLAY_DIR>/bin/python -m pytest -m tribe_real tests/brain/tribe/test_tribe_real_stack.py
#
# Why an overlay: tribev2 imports neuraltrain, which imports torchvision, and a torchvision wheel works only
# with the torch build it was made for. brainrl's .venv may hold a CPU-only torch for which PyPI has no
# torchvision, so the overlay installs tribev2's torch pins (torch<2.7, torchvision<0.22) and its PyPI
# packages (neuralset/neuraltrain 0.0.2, exca 0.5.25, x_transformers 1.27.20) and reads everything else
# (transformers, pytest, brainrl's dependencies) from brainrl's .venv through a .pth file. tribev2 itself is
# not installed (its numpy==2.2.6 pin would fight brainrl's numpy); the tests put the checkout on sys.path.
# tribev2 is CC-BY-NC: the checkout stays outside brainrl's repository.
set -euo pipefail
cd "$(dirname "$0")/.."

OVERLAY="${1:-.venv-tribe-tier}"
BASE="${BASE_VENV:-.venv}"
TRIBE_COMMIT="${TRIBE_COMMIT:-72399081ed3f1040c4d996cefb2864a4c46f5b8e}"  # tests/brain/tribe/real_stack.py
TRIBEV2_SRC="${TRIBEV2_SRC:-.tribev2-src}"

[[ -x "$BASE/bin/python" ]] || { echo "setup_tribe_tier: $BASE/bin/python missing: run scripts/setup.sh --dev first" >&2; exit 1; }
if [[ ! -f "$TRIBEV2_SRC/tribev2/demo_utils.py" ]]; then
  echo "setup_tribe_tier: cloning facebookresearch/tribev2 at $TRIBE_COMMIT into $TRIBEV2_SRC"
  git clone --quiet https://github.com/facebookresearch/tribev2 "$TRIBEV2_SRC"
  git -C "$TRIBEV2_SRC" checkout --quiet "$TRIBE_COMMIT"
fi
if [[ -d "$TRIBEV2_SRC/.git" ]]; then
  have="$(git -C "$TRIBEV2_SRC" rev-parse HEAD)"
  [[ "$have" == "$TRIBE_COMMIT" ]] || echo "setup_tribe_tier: warning: $TRIBEV2_SRC is at $have, the tier was written for $TRIBE_COMMIT" >&2
fi

PY_VERSION="$("$BASE/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
BASE_SITE="$(cd "$BASE" && pwd)/lib/python$PY_VERSION/site-packages"
[[ -x "$OVERLAY/bin/python" ]] || "$BASE/bin/python" -m venv "$OVERLAY"
SITE="$OVERLAY/lib/python$PY_VERSION/site-packages"
echo "$BASE_SITE" > "$SITE/zz-brainrl-base-venv.pth"  # after the overlay's own packages
"$OVERLAY/bin/python" -m pip install --quiet "torch>=2.5.1,<2.7" "torchvision>=0.20,<0.22"
"$OVERLAY/bin/python" -m pip install --quiet "neuralset==0.0.2" "neuraltrain==0.0.2" "exca==0.5.25" \
  "x_transformers==1.27.20" einops julius
SRC_ABS="$(cd "$TRIBEV2_SRC" && pwd)"
scratch="$(mktemp -d)"
DATAPATH="$scratch" SAVEPATH="$scratch" PYTHONPATH="$SRC_ABS" "$OVERLAY/bin/python" -c \
  "import tribev2.main, tribev2.demo_utils; import torch, neuralset, exca; print('setup_tribe_tier: ok: torch', torch.__version__)"
rm -rf "$scratch"
echo "setup_tribe_tier: run the tier with"
echo "  BRAINRL_TRIBEV2_SRC=$SRC_ABS $OVERLAY/bin/python -m pytest -m tribe_real tests/brain/tribe/test_tribe_real_stack.py"
