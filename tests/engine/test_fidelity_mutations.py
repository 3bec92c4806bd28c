"""Known-answer checks that catch the mutations issue 13 §6 found passing: SNIP without its o_proj term,
and ablation compensated with the utility pass's means instead of the safety pass's."""

import torch

from ssah_engine.ablation import ablate
from ssah_engine.architectures import describe
from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.encoding import encode_pairs, make_batches
from ssah_engine.scoring import score_dataset, zscore


def direct_snip(model, batches):
    """Per layer, sum over batches of |W * dL/dW| over each head's q rows, o_proj columns and share of
    its KV group's k/v rows, and each neuron's gate row, up row and down_proj column (plain Llama layout)."""
    config = model.config
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    group = heads // kv_heads
    head_sums = torch.zeros(config.num_hidden_layers, heads, dtype=torch.float64)
    neuron_sums = torch.zeros(config.num_hidden_layers, config.intermediate_size, dtype=torch.float64)
    for batch in batches:
        model.zero_grad()
        labels = batch.input_ids.masked_fill(~batch.response_mask, -100)
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss.backward()
        for index, layer in enumerate(model.model.layers):
            attn, mlp = layer.self_attn, layer.mlp

            def sal(linear):
                return (linear.weight * linear.weight.grad).abs().double()

            q = sal(attn.q_proj).reshape(heads, head_dim, -1).sum((1, 2))
            o = sal(attn.o_proj).reshape(-1, heads, head_dim).sum((0, 2))
            kv = (sal(attn.k_proj) + sal(attn.v_proj)).reshape(kv_heads, -1).sum(1).repeat_interleave(group) / group
            head_sums[index] += q + o + kv
            neuron_sums[index] += sal(mlp.gate_proj).sum(1) + sal(mlp.up_proj).sum(1) + sal(mlp.down_proj).sum(0)
    model.zero_grad(set_to_none=True)
    return torch.cat(
        [
            torch.stack([zscore(r) for r in head_sums]).reshape(-1),
            torch.stack([zscore(r) for r in neuron_sums]).reshape(-1),
        ]
    )


def test_snip_counts_q_o_kv_gate_up_and_down(tiny_llama, safety_set):
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    encoded = encode_pairs(tokenizer, [(e.prompt, e.response) for e in safety_set.examples])
    batches = list(make_batches(encoded, 4, tokenizer.pad_token_id))
    result = score_dataset(model, describe(model), batches, method="snip")
    torch.testing.assert_close(result.scores, direct_snip(model, batches), rtol=1e-6, atol=1e-9)


def response_input_means(loaded, dataset):
    """Mean o_proj and down_proj input over every response token of ``dataset``, each pair run alone."""
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    sums = {}
    start = [0]

    def hook_for(key):
        def hook(_module, args):
            rows = args[0][0, start[0] :].double()
            total, count = sums.get(key, (0, 0))
            sums[key] = (total + rows.sum(0), count + rows.shape[0])

        return hook

    handles = []
    for layer in layout.layers:
        handles.append(layer.o.register_forward_pre_hook(hook_for(("o", layer.index))))
        handles.append(layer.down.register_forward_pre_hook(hook_for(("down", layer.index))))
    try:
        with torch.no_grad():
            for pair in encode_pairs(tokenizer, [(e.prompt, e.response) for e in dataset.examples]):
                start[0] = pair.response_start
                model(torch.tensor([pair.input_ids]))
    finally:
        for handle in handles:
            handle.remove()
    return {key: total / count for key, (total, count) in sums.items()}


def test_safety_compensation_adds_w_out_times_the_safety_pass_mean(tiny_llama, safety_set, utility_set):
    model = tiny_llama.model
    unit_map = run_audit(tiny_llama, safety_set, utility_set, AuditConfig(samples=12))
    safety_means = response_input_means(tiny_llama, safety_set)
    utility_means = response_input_means(tiny_llama, utility_set)
    space, layout = unit_map.space, describe(model)
    units = torch.zeros(space.size, dtype=torch.bool)
    units[[1, 6]] = True  # head 1 of layer 0, head 2 of layer 1
    units[space.total_heads + torch.tensor([3, 40, 48 + 5])] = True  # neurons 3, 40 of layer 0, 5 of layer 1
    removed_heads, removed_neurons = space.split(units)
    outputs = [
        (layer.o, removed_heads[layer.index].repeat_interleave(layout.head_dim), ("o", layer.index))
        for layer in layout.layers
    ] + [(layer.down, removed_neurons[layer.index], ("down", layer.index)) for layer in layout.layers]
    weights = {key: module.weight.detach().double().clone() for module, _, key in outputs}  # before zeroing
    with torch.no_grad(), ablate(model, unit_map, units, compensation="safety"):
        for module, removed, key in outputs:
            added = module(torch.zeros(1, module.in_features)).double()[0]  # only the added constant is left
            expected = weights[key][:, removed] @ safety_means[key][removed]
            wrong = weights[key][:, removed] @ utility_means[key][removed]
            torch.testing.assert_close(added, expected, rtol=1e-4, atol=1e-9)
            assert not torch.allclose(added, wrong, rtol=1e-2, atol=0), key
