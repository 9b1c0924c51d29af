"""Does an AWSFT update stay finite after each decoding engine? (H200 probe behind docs/bench/train_compiled_diag_2026-12-02.log)

Random-weight policy at a Qwen shape in bf16, LoRA r 32, G = 8, a length reward, three AWSFT steps; prints the
loss, the clipped gradient norm, whether the update was skipped, the on-policy drift of step 0 and the timings.

    python scripts/probe_compiled_update.py compiled qwen2.5-0.5b cuda 200

engine: auto | compiled | compiled-nographs | dynamic | static (scripts/bench_train.py --generation).
"""
import sys, tempfile, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import bench_train as b
from brainrl.policy import LoraConfig
from brainrl.rewards.base import Reward

class LengthReward(Reward):
    def __init__(self): super().__init__("length")
    def __call__(self, prompts=None, completions=(), **kw):
        return [float(len(str(c))) / 100 + 0.01 * i for i, c in enumerate(completions)]

variant, policy, device, tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model, tok = b.build_policy(policy, device, torch.bfloat16)
lora = LoraConfig(r=32, alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
with tempfile.TemporaryDirectory() as w:
    tr = b.brainrl_trainer(model, tok, LengthReward(), lora, 5e-5, tokens, 8, w, variant)
    for s in range(3):
        t0 = time.perf_counter()
        try:
            m = tr.train_step(s)
        except Exception as e:
            print(f"RESULT {variant} step {s}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True); raise SystemExit(1)
        print(f"RESULT {variant} step {s}: loss {m['loss']:.3g} grad {m['grad_norm']:.3g} skipped {m.get('update_skipped')} "
              f"drift {m.get('logprob_drift_max')} gen {m['generation_s']:.2f}s tokens {m.get('completion_tokens_mean', m.get('completions/mean_length'))} "
              f"step {time.perf_counter() - t0:.1f}s", flush=True)
