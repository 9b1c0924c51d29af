"""LocalChatGenerator(prefix_cache=True) must give the same replies as the plain left-padded batch: a tiny
random Llama with the embedded SmolLM2 tokenizer (real chat template), greedy decoding."""

import pytest

pytestmark = pytest.mark.slow  # converts the embedded GGUF once (~25 s) on a fresh machine


def test_prefix_cache_matches_plain_batch():
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from brainrl.policy import resolve_policy
    from brainrl.sbi.simulation.generators import LocalChatGenerator
    from brainrl.sbi.simulation.prompts import few_shot_headline_messages
    from brainrl.sbi.simulation.prior import theta_for_index

    tokenizer = AutoTokenizer.from_pretrained(resolve_policy("smollm2").load_from)
    tokenizer.padding_side = "left"  # what LocalChatGenerator sets when it loads the model itself
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()
    topics = ["weather", "civic life", "hazards"]  # suffixes of different lengths: padding sits mid-sequence
    convs = [few_shot_headline_messages(theta_for_index(0, i), t) for i, t in enumerate(topics)]

    def replies(prefix_cache):
        gen = LocalChatGenerator(max_new_tokens=8, temperature=0.0, batch_size=3, model_object=model,
                                 tokenizer=tokenizer, prefix_cache=prefix_cache)
        gen._ensure_loaded()
        return gen.generate(convs, [0, 1, 2]), gen

    import warnings

    plain, _ = replies(False)
    with warnings.catch_warnings(record=True) as caught:  # brainrl's own code uses no deprecated cache name
        warnings.simplefilter("always")
        cached, gen = replies(True)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    assert cached == plain and all(plain)
    assert len(gen._prefix_kv) == 1 and gen.identity()["prefix_cache"] is True
