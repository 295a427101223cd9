"""Mistake: grouped-query attention repeats K/V by the number of KV heads instead of the
number of query heads per KV head (n_rep = n_kv instead of n_heads // n_kv).

The two are equal for a model with, say, 4 query heads over 2 KV heads, so the mistake passes
there; with 6 query heads over 2 KV heads the heads do not line up.
"""


def decoder_block(x, weights, layer, config):
    import torch
    import torch.nn.functional as F
    cfg = config_dict(config)
    n_heads, n_kv, head_dim = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    prefix = f"model.layers.{layer}."
    batch, seq, _ = x.shape

    def project(inp, name, heads):
        out = F.linear(inp, weights[prefix + name + ".weight"], weights.get(prefix + name + ".bias"))
        return out.view(batch, seq, heads, head_dim).transpose(1, 2)   # (batch, heads, seq, head_dim)

    a = rms_norm(x, weights[prefix + "input_layernorm.weight"], cfg["rms_norm_eps"])
    q = project(a, "self_attn.q_proj", n_heads)
    k = project(a, "self_attn.k_proj", n_kv)
    v = project(a, "self_attn.v_proj", n_kv)
    cos, sin = rope_cos_sin(torch.arange(seq), head_dim, cfg["rope_theta"])
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = repeat_kv(k, n_kv), repeat_kv(v, n_kv)
    y = scaled_dot_product_attention(q, k, v, causal_mask(seq))        # (batch, n_heads, seq, head_dim)
    y = y.transpose(1, 2).reshape(batch, seq, n_heads * head_dim)
    h = x + F.linear(y, weights[prefix + "self_attn.o_proj.weight"], weights.get(prefix + "self_attn.o_proj.bias"))

    m = rms_norm(h, weights[prefix + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
    return h + swiglu_mlp(
        m,
        weights[prefix + "mlp.gate_proj.weight"],
        weights[prefix + "mlp.up_proj.weight"],
        weights[prefix + "mlp.down_proj.weight"],
    )
