"""Every command shown in README.md runs as written.

The README's code blocks are parsed; each shell command is classified (fast, slow, gpu, serve, or exempt
with a stated reason) and run with bash from a scratch folder that holds the repository's recipes/,
rewards/ and scripts/ and its .venv, so outputs (maps/, runs/, *.png) never land in the checkout. Quick-tour
commands run in README order in one folder (later lines use earlier outputs). The only change to a command
is the serve port (a free one instead of 8765, so parallel test runs on one machine cannot collide).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: commands not run here, and why (each must still match a README line, so stale entries fail)
EXEMPT = {
    r"^bash scripts/setup\.sh": "installs from PyPI into .venv (network); `.ci/run` runs it on a clean clone",
    r"-m pytest": "the test suite itself (CI runs it; running it from a test would recurse)",
}
GPU = r"single_gpu\.yaml|multi_gpu\.yaml"
SLOW = (r"^(\.venv/bin/)?brainrl (demo|train|evaluate|compare|simulate|sbi|validate|distill)\b|-m brainrl\.train|"
        r"^accelerate launch|^torchrun")
SERVE = r"^brainrl serve\b"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def commands() -> list[list[str]]:
    """Shell commands per bash block (``a && b`` split into its parts)."""
    blocks = []
    for block in code_blocks("bash"):
        lines = [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        blocks.append([part.strip() for line in lines for part in line.split(" && ")])
    return blocks


def kind(command: str) -> str:
    if any(re.search(pattern, command) for pattern in EXEMPT):
        return "exempt"
    if re.search(GPU, command):
        return "gpu"
    if re.search(SERVE, command):
        return "serve"
    if re.search(SLOW, command):
        return "slow"
    return "fast"


QUICK_TOUR = next(block for block in commands() if any(c.startswith("brainrl predict") for c in block))


def test_readme_commands_are_all_accounted_for():
    every = [c for block in commands() for c in block]
    kinds = {c: kind(c) for c in every}
    assert {"fast", "slow", "serve", "exempt"} <= set(kinds.values())
    for pattern in EXEMPT:  # an exemption that no longer matches anything is stale
        assert any(re.search(pattern, c) for c in every), pattern
    for command in every:
        code = re.split(r"\s+#\s", command)[0]  # the command, without its trailing comment
        assert "..." not in code and " DIR" not in code, f"placeholder in a README command: {command}"
    fast = [c for c in QUICK_TOUR if kinds[c] == "fast"]
    assert any(c.startswith("brainrl predict") for c in fast) and any(c.startswith("brainrl plot") for c in fast)


def make_workspace(folder: Path) -> Path:
    """A scratch folder that looks like the checkout to a user: recipes/, rewards/, scripts/, .venv."""
    for name in ("recipes", "scripts"):
        (folder / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "rewards", folder / "rewards")  # README blocks add reward files here
    (folder / ".venv").symlink_to(Path(sys.executable).parents[1])
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("readme"))


def shell_env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_shell(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=shell_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, f"`{command}` printed a traceback:\n{proc.stderr[-3000:]}"
    return proc


def test_quick_tour_fast_commands_run_as_written(workspace):
    for command in QUICK_TOUR:
        if kind(command) == "fast":
            run_shell(command, workspace, timeout=600)
    assert (workspace / "maps" / "00000.npy").exists() and (workspace / "maps" / "predictions.json").exists()
    assert (workspace / "map.png").stat().st_size > 10_000 and (workspace / "broca.png").stat().st_size > 10_000


def test_quick_tour_serve_command_scores_text(workspace):
    (command,) = [c for c in QUICK_TOUR if kind(c) == "serve"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = re.sub(r"--port \d+", f"--port {port}", command.split("#")[0])
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=workspace, env=shell_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    json.loads(response.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()[-3000:]
                assert time.time() < deadline, "the server did not come up"
                time.sleep(0.5)
        request = urllib.request.Request(url + "/predict", data=json.dumps({"texts": ["The cat sat on the mat."]}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            reply = json.loads(response.read())
        assert response.status == 200 and len(reply["items"]) == 1 and "data_npy_b64" in reply["items"][0], reply
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in proc.stderr.read()


def test_python_blocks_run(workspace):
    first, reward_file = code_blocks("python")[:2]
    proc = subprocess.run([sys.executable, "-c", first], cwd=workspace, env=shell_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shape_line, rewards_line = proc.stdout.strip().splitlines()[-2:]
    assert re.fullmatch(r"\(\d+, 20484\) synthetic", shape_line)
    assert re.fullmatch(r"\[-?\d+\.\d+, None\]", rewards_line)
    # the reward-file block is a file the recipe block names: write it, then load and call the recipe's rewards
    name = re.match(r"# (rewards/\w+\.py)", reward_file).group(1)
    (workspace / name).write_text(reward_file)
    (recipe_block,) = [b for b in code_blocks("yaml") if name in b]
    script = ("import yaml, sys\nfrom brainrl.train import load_recipe\nfrom brainrl.train.preflight import preflight\n"
              "rewards = yaml.safe_load(sys.argv[1])['rewards']\n"
              "recipe = load_recipe('recipes/offline_broca.yaml', ['rewards=' + repr(rewards), 'output_dir=runs/x'])\n"
              "funcs, weights = preflight(recipe)\nprint([f.__name__ for f in funcs], weights)\n")
    proc = subprocess.run([sys.executable, "-c", script, recipe_block], cwd=workspace, env=shell_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "['ifg_vs_auditory'] [1.0]" in proc.stdout
    run_shell(f'brainrl reward --reward-file {name} "Some text."', workspace, timeout=600)


@pytest.mark.slow
def test_quick_tour_training_and_sbi_commands_run_as_written(workspace):
    """train -> evaluate -> compare, and simulate -> sbi fit -> sbi diagnose -> validate, in README order."""
    for command in QUICK_TOUR:
        if kind(command) == "slow":
            run_shell(command, workspace, timeout=3600)
    assert (workspace / "runs" / "offline_broca" / "report" / "report.html").exists()
    assert (workspace / "runs" / "sbi_quick" / "validate" / "validation.json").exists()


#: distil a student, benchmark it, train on it: each command needs the one before, so one folder, in order
SURROGATE = next(block for block in commands() if any(c.startswith("brainrl distill") for c in block))
SLOW_ELSEWHERE = [c for block in commands() if block not in (QUICK_TOUR, SURROGATE) for c in block
                  if kind(c) == "slow"]


@pytest.mark.slow
def test_surrogate_commands_run_in_order(tmp_path):
    workspace = make_workspace(tmp_path)
    for command in SURROGATE:
        run_shell(command, workspace, timeout=3600)
    assert (workspace / "runs" / "surrogate_broca" / "card.json").exists()
    assert (workspace / "runs" / "offline_broca_surrogate" / "audit.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", SLOW_ELSEWHERE)
def test_other_slow_readme_commands_run_as_written(command, tmp_path):
    """Each in a fresh folder (they train into the same run folder)."""
    run_shell(command, make_workspace(tmp_path), timeout=3600)


@pytest.mark.gpu
@pytest.mark.online
@pytest.mark.parametrize("command", [c for block in commands() for c in block if kind(c) == "gpu"])
def test_gpu_readme_commands_run_as_written(command, tmp_path):
    run_shell(command, make_workspace(tmp_path), timeout=3600)
