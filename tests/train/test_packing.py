"""Why plain packing trained a model to chance in scripts/bench_packing.py while neat packing learnt:
LLaMA-Factory's packed rows restart the position ids at every example, and plain packing keeps one
causal attention over the whole row, so an example's tokens see the examples before it at the same
positions as its own. Neat packing's block-diagonal mask (LLaMA-Factory's own helper) makes a packed
example compute exactly what it computes alone."""

from __future__ import annotations


def test_neat_packing_is_exact_and_plain_packing_mixes_examples():
    import torch
    from llamafactory.data.collator import prepare_4d_attention_mask
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg).eval()
    a, b = torch.randint(0, 100, (1, 7)), torch.randint(0, 100, (1, 5))
    row = torch.cat([a, b], 1)
    positions = torch.tensor([list(range(7)) + list(range(5))])  # as LLaMA-Factory packs them
    with torch.no_grad():
        alone = model(input_ids=b).logits
        neat = model(input_ids=row, position_ids=positions,
                     attention_mask=prepare_4d_attention_mask(torch.tensor([[1] * 7 + [2] * 5]), torch.float32)).logits
        plain = model(input_ids=row, position_ids=positions, attention_mask=torch.ones_like(row)).logits
    assert torch.allclose(neat[:, 7:], alone, atol=1e-5)
    assert (plain[:, 7:] - alone).abs().max() > 0.05  # the second example's outputs depend on the first
