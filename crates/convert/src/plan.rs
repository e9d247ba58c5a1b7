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
    /// A Gemma norm, which multiplies by `1 + w`: written as `1 + w` so that every loader
    /// multiplies by the stored weight (as llama.cpp's and bitnet.cpp's converters do).
    GemmaNorm,
    Embedding,
    Ternary,
}

/// The per-projection input norms of bitnet-embedding checkpoints (`use_rms_norm`): GGUF name
/// (bitnet.cpp's converter's) and projection.
const NORMS_IN: [(&str, &str); 7] = [
    ("attn_q_norm_in", "self_attn.q_proj"),
    ("attn_k_norm_in", "self_attn.k_proj"),
    ("attn_v_norm_in", "self_attn.v_proj"),
    ("attn_output_norm_in", "self_attn.o_proj"),
    ("ffn_gate_norm_in", "mlp.gate_proj"),
    ("ffn_up_norm_in", "mlp.up_proj"),
    ("ffn_down_norm_in", "mlp.down_proj"),
];

/// Whether the checkpoint's projections have their own input RMSNorm (transformers'
/// `BitNetQuantConfig(use_rms_norm=True)`).
pub(crate) fn has_norms_in(c: &HfConfig) -> bool {
    c.quant.as_ref().is_some_and(|q| q["use_rms_norm"].as_bool() == Some(true))
}

/// The plan of a ternary Qwen3 or Gemma 3 checkpoint, tensors named as bitnet.cpp's
/// convert-bitnet-embedding-to-gguf.py names them. `prefix` is `"model."` for `*ForCausalLM`
/// checkpoints, empty for the base models the embedding checkpoints are; `norm_in(l, proj)` gives
/// the checkpoint's name of a projection's input norm (`.norm.weight` in the released
/// checkpoints, `.rms_norm.weight` in transformers' own).
fn plan_qwen_gemma(c: &HfConfig, family: Family, prefix: &str, norm_in: &dyn Fn(u64, &str) -> String) -> Vec<Plan> {
    let (h, ff, q, kv, hd) = (
        c.hidden as usize,
        c.ff as usize,
        (c.heads * c.head_dim) as usize,
        (c.kv_heads * c.head_dim) as usize,
        c.head_dim as usize,
    );
    let gemma = family == Family::Gemma3;
    let own = if gemma { Kind::GemmaNorm } else { Kind::Norm };
    let plan = |gguf: String, hf: String, kind, shape| Plan { gguf, hf, kind, shape, permute: None };
    let mut p = vec![plan(
        "token_embd.weight".into(),
        format!("{prefix}embed_tokens.weight"),
        Kind::Embedding,
        vec![c.vocab as usize, h],
    )];
    for l in 0..c.layers {
        let mut add = |gguf: &str, hf: &str, kind: Kind, shape: Vec<usize>| {
            p.push(plan(format!("blk.{l}.{gguf}.weight"), format!("{prefix}layers.{l}.{hf}.weight"), kind, shape))
        };
        add("attn_norm", "input_layernorm", own, vec![h]);
        add("attn_q", "self_attn.q_proj", Kind::Ternary, vec![q, h]);
        add("attn_k", "self_attn.k_proj", Kind::Ternary, vec![kv, h]);
        add("attn_v", "self_attn.v_proj", Kind::Ternary, vec![kv, h]);
        add("attn_output", "self_attn.o_proj", Kind::Ternary, vec![h, q]);
        add("attn_q_norm", "self_attn.q_norm", own, vec![hd]);
        add("attn_k_norm", "self_attn.k_norm", own, vec![hd]);
        if gemma {
            add("post_attention_norm", "post_attention_layernorm", own, vec![h]);
            add("ffn_norm", "pre_feedforward_layernorm", own, vec![h]);
        } else {
            add("ffn_norm", "post_attention_layernorm", own, vec![h]);
        }
        add("ffn_gate", "mlp.gate_proj", Kind::Ternary, vec![ff, h]);
        add("ffn_up", "mlp.up_proj", Kind::Ternary, vec![ff, h]);
        add("ffn_down", "mlp.down_proj", Kind::Ternary, vec![h, ff]);
        if gemma {
            add("post_ffw_norm", "post_feedforward_layernorm", own, vec![h]);
        }
        if has_norms_in(c) {
            for (gguf, proj) in NORMS_IN {
                let cols = match proj {
                    "self_attn.o_proj" => q,
                    "mlp.down_proj" => ff,
                    _ => h,
                };
                p.push(plan(format!("blk.{l}.{gguf}.weight"), norm_in(l, proj), Kind::Norm, vec![cols]));
            }
        }
    }
    p.push(plan("output_norm.weight".into(), format!("{prefix}norm.weight"), own, vec![h]));
    if !c.tied {
        p.push(plan("output.weight".into(), "lm_head.weight".into(), Kind::Embedding, vec![c.vocab as usize, h]));
    }
    p
}

/// The tensor plan of a checkpoint of `family` whose tensors are named as `ckpt` has them.
pub(crate) fn plan_for(c: &HfConfig, family: Family, ckpt: &Checkpoint) -> Vec<Plan> {
    match family {
        Family::Qwen3 | Family::Gemma3 => {
            let prefix = if ckpt.index.contains_key("model.embed_tokens.weight") { "model." } else { "" };
            let norm_in = |l: u64, proj: &str| {
                let released = format!("{prefix}layers.{l}.{proj}.norm.weight");
                let transformers = format!("{prefix}layers.{l}.{proj}.rms_norm.weight");
                if ckpt.index.contains_key(&transformers) { transformers } else { released }
            };
            plan_qwen_gemma(c, family, prefix, &norm_in)
        }
        _ => plan(c, family),
    }
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
