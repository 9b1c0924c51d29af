"""The local generator's sampling is a pure function of (conversation, request seed): batch size and the
other requests in a forward batch do not change a reply. Tiny random Llama (no hub), real ``generate``."""

import pytest

torch = pytest.importorskip("torch")


def _generator(batch_size, prefix_cache=False, temperature=1.0):
    from brainrl.policy.tiny import tiny_policy
    from brainrl.sbi.simulation.generators import LocalChatGenerator

    model, tokenizer = tiny_policy(seed=0)
    gen = LocalChatGenerator(max_new_tokens=10, temperature=temperature, top_p=0.9, batch_size=batch_size,
                             model_object=model.eval(), tokenizer=tokenizer, prefix_cache=prefix_cache)
    gen._ensure_loaded()
    return gen


CONVS = [[{"role": "system", "content": "write news"}, {"role": "user", "content": text}]
         for text in ("the storm", "a quiet market report about the city", "music", "old river bridge news")]
SEEDS = [11, 12, 13, 14]


def test_replies_do_not_depend_on_batch_size_or_batch_neighbours():
    one = _generator(batch_size=1).generate(CONVS, SEEDS)
    four = _generator(batch_size=4).generate(CONVS, SEEDS)
    assert one == four and len(set(one)) > 1  # sampled, not one constant reply
    # a request keeps its reply when its neighbours change, and the global torch seed plays no part
    torch.manual_seed(123)
    shuffled = _generator(batch_size=3).generate([CONVS[2], CONVS[0], CONVS[3]], [SEEDS[2], SEEDS[0], SEEDS[3]])
    assert shuffled == [one[2], one[0], one[3]]
    # and another seed gives another draw for at least one request
    assert _generator(batch_size=4).generate(CONVS, [s + 100 for s in SEEDS]) != one


def test_prefix_cache_keeps_per_request_sampling():
    plain = _generator(batch_size=4).generate(CONVS, SEEDS)
    assert _generator(batch_size=2, prefix_cache=True).generate(CONVS, SEEDS) == plain


def test_sampler_applies_temperature_and_nucleus():
    from brainrl.sbi.simulation.generators import PerRequestSampler

    scores = torch.log(torch.tensor([[0.6, 0.3, 0.08, 0.02]] * 2))
    drawn = [int(PerRequestSampler([s, s], 1.0, top_p=0.85)(None, scores)[0].argmax()) for s in range(300)]
    # top-p 0.85 keeps the two most likely tokens (0.6 + 0.3 >= 0.85), renormalised 2:1
    assert set(drawn) == {0, 1} and abs(drawn.count(0) / 300 - 2 / 3) < 0.1
    out = PerRequestSampler([1, 2], 1.0)(None, scores)
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1]
    with pytest.raises(ValueError, match="temperature > 0"):
        PerRequestSampler([1], 0.0)
    with pytest.raises(ValueError, match="seeded requests"):
        PerRequestSampler([1], 1.0)(None, scores)


def test_identity_names_a_non_default_dtype():
    """bf16 and fp32 sample different texts, so a campaign grown in another dtype must not pass as the same."""
    from brainrl.sbi.simulation.generators import LocalChatGenerator

    assert "dtype" not in LocalChatGenerator().identity()  # "auto": campaigns written before the field keep theirs
    assert LocalChatGenerator(dtype="bfloat16").identity()["dtype"] == "bfloat16"
    assert LocalChatGenerator(dtype="bfloat16").identity() != LocalChatGenerator(dtype="float32").identity()


def test_smollm2_campaign_recipe_writes_in_bf16_and_says_so():
    """recipes/campaign_offline.yaml writes in bf16 (1.5x on AVX512-BF16 CPUs, scripts/bench_sbi.py
    --generator-dtypes); its campaigns carry the dtype in their generator identity (nothing is loaded here)."""
    from pathlib import Path

    from brainrl.sbi.simulation.campaign import load_campaign_config

    recipe = load_campaign_config(Path(__file__).resolve().parents[3] / "recipes" / "campaign_offline.yaml")
    generator = recipe.generator.build()
    assert generator._model is None  # built lazily: the model loads on the first request
    assert generator.identity()["dtype"] == "bfloat16" and generator.identity()["model"] == "smollm2"
