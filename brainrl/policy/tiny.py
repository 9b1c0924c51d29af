"""A tiny random-weight chat policy built locally (no hub): for tests, smoke runs and benchmarks."""

from __future__ import annotations

from typing import Sequence

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "the a story about language mind brain speech words sentence reader writer river city morning night "
    "quiet loud bright dark old new small large teacher student scientist poet child garden letter book "
    "explain describe tell write news report weather storm market music memory dream voice grammar sound"
).split()


def tiny_tokenizer(texts: Sequence[str] | None = None, vocab_size: int = 300):
    """A byte-level BPE tokenizer with ChatML special tokens and a chat template, trained in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        texts = [" ".join(_WORDS[(i * 7 + j) % len(_WORDS)] for j in range(12)) for i in range(200)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>", padding_side="left", chat_template=CHATML_TEMPLATE)


def tiny_llama(tokenizer, hidden: int = 32, layers: int = 2, seed: int = 0):
    """A 2-layer LlamaForCausalLM with random weights over ``tokenizer``'s vocabulary."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.bos_token_id)
    return model


def tiny_policy(seed: int = 0, hidden: int = 32, layers: int = 2):
    tokenizer = tiny_tokenizer()
    return tiny_llama(tokenizer, hidden=hidden, layers=layers, seed=seed), tokenizer
