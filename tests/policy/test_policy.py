import json

import pytest
import torch

from brainrl.policy import (
    LoraConfig,
    SamplingConfig,
    attach_lora,
    chat_prompt,
    completion_mask,
    load_policy,
    neutralise_generation_config,
    resolve_policy,
    sample_completions,
    trainable_parameters,
)
from brainrl.policy.loading import torch_dtype
from brainrl.policy.tiny import tiny_policy


@pytest.fixture(scope="module")
def tiny():
    return tiny_policy(seed=0)


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9]])
    mask, finished = completion_mask(ids, [2])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert finished.tolist() == [True, False]


def test_sampling_config_validates_and_schedules():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0)
    cfg = SamplingConfig(temperature=1.0, temperature_end=0.6)
    assert cfg.temperature_at(0, 5) == 1.0 and cfg.temperature_at(4, 5) == pytest.approx(0.6)
    assert SamplingConfig().temperature_at(3, 5) == 1.0
    kwargs = SamplingConfig().generation_kwargs()
    assert kwargs["top_k"] == 0 and kwargs["top_p"] == 1.0 and kwargs["repetition_penalty"] == 1.0


def test_neutralise_drops_model_sampling_defaults(tiny):
    from transformers import GenerationConfig

    model, tok = tiny
    model.generation_config = GenerationConfig(top_p=0.8, top_k=20, repetition_penalty=1.05, temperature=0.7,
                                               do_sample=True, eos_token_id=tok.eos_token_id)
    dropped = neutralise_generation_config(model, tok)
    assert dropped["top_p"] == 0.8 and dropped["top_k"] == 20 and dropped["repetition_penalty"] == 1.05
    assert model.generation_config.top_k in (None, 50)  # back to library defaults; calls pass explicit values
    assert model.generation_config.top_p in (None, 1.0)


def test_chat_prompt_uses_template_and_system(tiny):
    _, tok = tiny
    text = chat_prompt(tok, "tell a story", "be brief")
    assert text.startswith("<|im_start|>system\nbe brief<|im_end|>") and text.endswith("<|im_start|>assistant\n")


def test_batched_sampling_groups_masks_and_reproducibility(tiny):
    model, tok = tiny
    neutralise_generation_config(model, tok)
    cfg = SamplingConfig(max_new_tokens=7)
    a = sample_completions(model, tok, ["tell a story", "explain the weather in the city"], cfg, num_completions=3, seed=11)
    b = sample_completions(model, tok, ["tell a story", "explain the weather in the city"], cfg, num_completions=3, seed=11)
    assert a.group.tolist() == [0, 0, 0, 1, 1, 1]
    assert a.prompts[3] == "explain the weather in the city"
    assert a.prompt_ids.shape[0] == 6 and a.completion_ids.shape[0] == 6 and a.completion_ids.shape[1] <= 7
    assert tok.pad_token_id in a.prompt_ids[0].tolist()  # the shorter prompt is left padded
    assert a.prompt_mask[0, 0] == 0 and a.prompt_mask[0, -1] == 1
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert a.settings["top_k"] == 0 and a.settings["max_new_tokens"] == 7 and a.settings["seed"] == 11
    assert (a.lengths <= 7).all() and (a.lengths >= 1).all()


def test_lora_starts_equal_to_base_and_disable_adapter(tiny):
    model, tok = tiny_policy(seed=2)
    ids = tok(["tell a story about a river"], return_tensors="pt")["input_ids"]
    before = model(input_ids=ids).logits
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    trainable, total = trainable_parameters(peft_model)
    assert 0 < trainable < total
    assert torch.allclose(peft_model(input_ids=ids).logits, before)  # B = 0 at init
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)
    assert not torch.allclose(peft_model(input_ids=ids).logits, before)
    with peft_model.disable_adapter():
        assert torch.allclose(peft_model(input_ids=ids).logits, before)


def test_load_policy_from_local_folder(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = load_policy(str(tmp_path / "m"), "float32", "cpu")
    assert loaded_tok.padding_side == "left" and loaded_tok.pad_token is not None
    assert loaded.brainrl_source["kind"] == "folder"
    ids = tok(["a river"], return_tensors="pt")["input_ids"]
    assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_bad_specs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_policy(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="GGUF policy file"):
        resolve_policy(str(tmp_path / "x.gguf"))
    with pytest.raises(FileNotFoundError, match="neither a local folder"):
        resolve_policy("not-a-model")
    with pytest.raises(ValueError, match="Unknown dtype"):
        torch_dtype("float8", "cpu")
    assert resolve_policy("Qwen/Qwen2.5-3B-Instruct").kind == "hub"


@pytest.mark.slow
def test_gguf_conversion_roundtrip(tmp_path):
    """The embedded SmolLM2 GGUF converts once (atomic, sha256 recorded) and reloads with identical logits."""
    from transformers import AutoModelForCausalLM

    from brainrl.policy.loading import SMOLLM2_GGUF_NAME, convert_gguf, smollm2_gguf_path

    gguf = smollm2_gguf_path()
    folder = convert_gguf(gguf, tmp_path)
    record = json.loads((folder / "brainrl_conversion.json").read_text())
    assert len(record["source_sha256"]) == 64 and folder.name.endswith(record["source_sha256"][:16])
    assert convert_gguf(gguf, tmp_path) == folder  # second call: cache hit
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders or locks left
    from_gguf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=SMOLLM2_GGUF_NAME, dtype=torch.float32)
    converted, tok = load_policy(str(gguf), "float32", "cpu", cache_dir=tmp_path)
    ids = tok(["The weather today"], return_tensors="pt")["input_ids"]
    assert torch.equal(from_gguf(input_ids=ids).logits, converted(input_ids=ids).logits)
    assert tok.chat_template


def test_loading_and_attaching_lora_print_no_bar_and_no_future_warning(tmp_path, capfd):
    import warnings

    from brainrl.policy import attach_lora, load_policy
    from brainrl.policy.lora import LoraConfig
    from brainrl.policy.tiny import tiny_policy

    model, tokenizer = tiny_policy(seed=0)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded, _ = load_policy(str(tmp_path / "tiny"), "float32", "cpu")
        attach_lora(loaded, LoraConfig(r=2, alpha=4))
    err = capfd.readouterr().err
    assert "Loading weights" not in err
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # restored for everything else
