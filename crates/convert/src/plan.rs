//! The tensor plan: every GGUF tensor a conversion writes, its source and its shape.

use super::*;

/// One output tensor: GGUF name, source name, how to store it.
pub(crate) struct Plan {
    pub(crate) gguf: String,
    pub(crate) hf: String,
    pub(crate) kind: Kind,
    /// Expected PyTorch shape.
    pub(crate) shape: Vec<usize>,
    /// Permute rows for llama.cpp's RoPE with this many heads.
    pub(crate) permute: Option<usize>,
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Norm,
    Embedding,
    Ternary,
}

pub(crate) fn plan(c: &HfConfig, family: Family) -> Vec<Plan> {
    let bitnet = family.bitnet_graph();
    let (attn_sub, ffn_sub) = match family {
        Family::OneBitLlm => ("self_attn.inner_attn_ln", "mlp.ffn_layernorm"),
        _ => ("self_attn.attn_sub_norm", "mlp.ffn_sub_norm"),
    };
    let (h, ff, q, kv) =
        (c.hidden as usize, c.ff as usize, (c.heads * c.head_dim) as usize, (c.kv_heads * c.head_dim) as usize);
    let (heads, kv_heads, vocab) = (c.heads as usize, c.kv_heads as usize, c.vocab as usize);
    let plan = |gguf: String, hf: String, kind, shape, permute| Plan { gguf, hf, kind, shape, permute };
    let mut p = vec![plan(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        Kind::Embedding,
        vec![vocab, h],
        None,
    )];
    // llama.cpp's `llama` graph rotates adjacent pairs, so its converter permutes Q and K rows;
    // the bitnet graphs use NEOX RoPE on the checkpoint's own order.
    let (pq, pk) = if bitnet { (None, None) } else { (Some(heads), Some(kv_heads)) };
    for l in 0..c.layers {
        let mut add = |gguf: &str, hf: &str, kind: Kind, shape: Vec<usize>, permute: Option<usize>| {
            p.push(plan(
                format!("blk.{l}.{gguf}.weight"),
                format!("model.layers.{l}.{hf}.weight"),
                kind,
                shape,
                permute,
            ))
        };
        add("attn_norm", "input_layernorm", Kind::Norm, vec![h], None);
        add("attn_q", "self_attn.q_proj", Kind::Ternary, vec![q, h], pq);
        add("attn_k", "self_attn.k_proj", Kind::Ternary, vec![kv, h], pk);
        add("attn_v", "self_attn.v_proj", Kind::Ternary, vec![kv, h], None);
        add("attn_output", "self_attn.o_proj", Kind::Ternary, vec![h, q], None);
        if bitnet {
            add("attn_sub_norm", attn_sub, Kind::Norm, vec![h], None);
        }
        add("ffn_norm", "post_attention_layernorm", Kind::Norm, vec![h], None);
        add("ffn_gate", "mlp.gate_proj", Kind::Ternary, vec![ff, h], None);
        add("ffn_up", "mlp.up_proj", Kind::Ternary, vec![ff, h], None);
        add("ffn_down", "mlp.down_proj", Kind::Ternary, vec![h, ff], None);
        if bitnet {
            add("ffn_sub_norm", ffn_sub, Kind::Norm, vec![ff], None);
        }
    }
    p.push(plan("output_norm.weight".into(), "model.norm.weight".into(), Kind::Norm, vec![h], None));
    if !c.tied {
        p.push(plan("output.weight".into(), "lm_head.weight".into(), Kind::Embedding, vec![vocab, h], None));
    }
    p
}
