//! `cargo xtask dummy`: random-weight models of bitnet.cpp's benchmark shapes
//! (its `utils/generate-dummy-bitnet-model.py` sizes), for benchmarks of sizes nobody can
//! download here. The graph is BitNet b1.58 2B-4T's (architecture `bitnet-b1.58`), or with
//! `--arch bitnet` the same tensors under bitnet.cpp 1.0's architecture name (1bitLLM's graph, SiLU),
//! which bitnet.cpp 1.0 runs too: the same file then benchmarks both engines. `emb-0.6B` and
//! `emb-270M` are the shapes of bitnet.cpp's ternary embedding models (architectures `qwen3` and
//! `gemma3`, with q/k norms and per-projection input norms).

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail};
use bitnet_format::{Array, GgufBuilder, TensorType, Value, ValueType};

/// (name, hidden, ff, layers, heads, kv heads, vocab).
const SIZES: &[(&str, u64, u64, u64, u64, u64, u64)] = &[
    ("125M", 768, 3072, 11, 12, 12, 32000),
    ("350M", 1024, 3072, 24, 16, 16, 32000),
    ("1B", 2048, 3584, 24, 32, 32, 32000),
    ("1.5B", 1536, 9216, 28, 32, 32, 32000),
    ("2.7B", 3072, 7680, 24, 32, 32, 32000),
    ("3.8B", 3840, 8192, 24, 32, 32, 32000),
    ("7B", 4096, 12032, 32, 32, 32, 32000),
    ("13B", 5120, 13824, 40, 40, 40, 32000),
    ("30B", 6656, 16384, 60, 52, 52, 32000),
    ("70B", 8192, 24576, 80, 64, 64, 32000),
    ("100B", 8192, 45568, 72, 64, 64, 32000),
    ("2B-4T", 2560, 6912, 30, 20, 5, 128256),
];

/// (name, architecture, hidden, ff, layers, heads, kv heads, head_dim, vocab).
type EmbeddingShape = (&'static str, &'static str, u64, u64, u64, u64, u64, u64, u64);

/// bitnet.cpp's ternary embedding models (microsoft/bitnet-embedding-0.6b and -270m).
const EMBEDDING_SIZES: &[EmbeddingShape] = &[
    ("emb-0.6B", "qwen3", 1024, 3072, 28, 16, 8, 128, 151936),
    ("emb-270M", "gemma3", 640, 2048, 18, 4, 1, 256, 262144),
];

/// Names accepted by `--size`.
pub fn size_names() -> Vec<&'static str> {
    SIZES.iter().map(|s| s.0).chain(EMBEDDING_SIZES.iter().map(|s| s.0)).collect()
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Architectures `--arch` takes.
pub const ARCHES: [&str; 2] = ["bitnet-b1.58", "bitnet"];

/// Writes a random model of `size` with ternary weights of `outtype` (i2_s or tq2_0).
pub fn write(size: &str, outtype: &str, out: &Path) -> Result<()> {
    write_arch(size, outtype, ARCHES[0], out)
}

/// [`write()`] under architecture name `arch` (one of [`ARCHES`]).
pub fn write_arch(size: &str, outtype: &str, arch: &str, out: &Path) -> Result<()> {
    if !ARCHES.contains(&arch) {
        bail!("unknown --arch {arch:?} (one of {})", ARCHES.join(", "));
    }
    let emb = EMBEDDING_SIZES.iter().find(|s| s.0.eq_ignore_ascii_case(size));
    let Some((hidden, ff, layers, heads, kv_heads, head_dim, vocab)) = SIZES
        .iter()
        .find(|s| s.0.eq_ignore_ascii_case(size))
        .map(|&(_, h, f, l, n, kv, v)| (h, f, l, n, kv, h / n, v))
        .or(emb.map(|&(_, _, h, f, l, n, kv, hd, v)| (h, f, l, n, kv, hd, v)))
    else {
        bail!("unknown size {size:?}; choose one of {}", size_names().join(", "));
    };
    // The embedding shapes have their own graphs (architecture qwen3 / gemma3).
    let arch = emb.map_or(arch, |e| e.1);
    let ty = match outtype {
        "i2_s" => TensorType::I2_S,
        "tq2_0" => TensorType::TQ2_0,
        "tq1_0" => TensorType::TQ1_0,
        // The unquantized baseline bitnet.cpp quotes its speed-ups against.
        "f16" => TensorType::F16,
        other => bail!("unknown --outtype {other:?} (i2_s, tq1_0, tq2_0, f16)"),
    };
    let mut b = GgufBuilder::new();
    let m = b.metadata_mut();
    m.insert("general.architecture", arch);
    m.insert("general.name", format!("dummy-{size}"));
    let file_type = match ty {
        TensorType::I2_S => 40u32,
        TensorType::F16 => 1,
        TensorType::TQ1_0 => 36,
        _ => 37,
    };
    m.insert("general.file_type", file_type);
    for (k, v) in [
        ("vocab_size", vocab),
        ("context_length", 4096),
        ("embedding_length", hidden),
        ("block_count", layers),
        ("feed_forward_length", ff),
        ("attention.head_count", heads),
        ("attention.head_count_kv", kv_heads),
        ("rope.dimension_count", head_dim),
    ] {
        m.insert(format!("{arch}.{k}"), v as u32);
    }
    m.insert(format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5f32);
    if emb.is_some() {
        m.insert(format!("{arch}.attention.key_length"), head_dim as u32);
        m.insert(format!("{arch}.attention.value_length"), head_dim as u32);
        // Last-token pooling of the EOS the tokenizer appends, as the released models.
        m.insert(format!("{arch}.pooling_type"), 3u32);
        m.insert("tokenizer.ggml.add_eos_token", true);
    }
    m.insert(format!("{arch}.rope.freq_base"), 500000.0f32);
    // A byte-level vocabulary (no merges) padded to the vocab size, so the tokenizer builds.
    let bytes = byte_level_alphabet();
    let mut tokens: Vec<String> = bytes.clone();
    tokens.extend(["<|begin_of_text|>", "<|end_of_text|>"].map(String::from));
    tokens.extend((tokens.len() as u64..vocab).map(|i| format!("[PAD{i}]")));
    let types: Vec<Value> = (0..vocab)
        .map(|i| {
            Value::I32(if i < 256 {
                1
            } else if i < 258 {
                3
            } else {
                5
            })
        })
        .collect();
    m.insert("tokenizer.ggml.model", "gpt2");
    m.insert("tokenizer.ggml.pre", "llama-bpe");
    m.insert("tokenizer.ggml.tokens", Array::strings(tokens));
    m.insert("tokenizer.ggml.token_type", Array::new(ValueType::I32, types).expect("all I32"));
    m.insert("tokenizer.ggml.merges", Array::strings(Vec::<String>::new()));
    m.insert("tokenizer.ggml.bos_token_id", 256u32);
    m.insert("tokenizer.ggml.eos_token_id", 257u32);

    let mut plan: Vec<(String, TensorType, Vec<u64>)> =
        vec![("token_embd.weight".into(), TensorType::F16, vec![hidden, vocab])];
    for l in 0..layers {
        let (q, kv) = (heads * head_dim, kv_heads * head_dim);
        let mut layer = vec![
            ("attn_norm", TensorType::F32, vec![hidden]),
            ("attn_q", ty, vec![hidden, q]),
            ("attn_k", ty, vec![hidden, kv]),
            ("attn_v", ty, vec![hidden, kv]),
            ("attn_output", ty, vec![q, hidden]),
            ("ffn_norm", TensorType::F32, vec![hidden]),
            ("ffn_gate", ty, vec![hidden, ff]),
            ("ffn_up", ty, vec![hidden, ff]),
            ("ffn_down", ty, vec![ff, hidden]),
        ];
        if emb.is_some() {
            // q/k head norms and each projection's input norm (bitnet-embedding's names).
            let f32v = |n| (n, TensorType::F32, vec![hidden]);
            layer.extend([
                ("attn_q_norm", TensorType::F32, vec![head_dim]),
                ("attn_k_norm", TensorType::F32, vec![head_dim]),
                f32v("attn_q_norm_in"),
                f32v("attn_k_norm_in"),
                f32v("attn_v_norm_in"),
                ("attn_output_norm_in", TensorType::F32, vec![q]),
                f32v("ffn_gate_norm_in"),
                f32v("ffn_up_norm_in"),
                ("ffn_down_norm_in", TensorType::F32, vec![ff]),
            ]);
            if arch == "gemma3" {
                layer.extend([f32v("post_attention_norm"), f32v("post_ffw_norm")]);
            }
        } else {
            layer.extend([
                ("attn_sub_norm", TensorType::F32, vec![hidden]),
                ("ffn_sub_norm", TensorType::F32, vec![ff]),
            ]);
        }
        for (n, t, shape) in layer {
            plan.push((format!("blk.{l}.{n}.weight"), t, shape));
        }
    }
    plan.push(("output_norm.weight".into(), TensorType::F32, vec![hidden]));
    for (name, t, shape) in &plan {
        b.add_tensor(name, *t, shape)?;
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = b.start(bitnet_format::buffered(file))?;
    let mut rng = Rng(0x5eed ^ hidden);
    for (name, t, shape) in &plan {
        let numel: u64 = shape.iter().product();
        let data: Vec<u8> = match t {
            TensorType::F32 => (0..numel).flat_map(|_| 1.0f32.to_le_bytes()).collect(),
            TensorType::F16 => (0..numel).flat_map(|_| half_bits(&mut rng).to_le_bytes()).collect(),
            TensorType::I2_S => {
                let mut d: Vec<u8> = (0..numel / 4).map(|_| random_codes(&mut rng)).collect();
                d.extend_from_slice(&(1.0f32 / (shape[0] as f32).sqrt()).to_le_bytes());
                d.resize((numel / 4 + 32) as usize, 0);
                d
            }
            _ => {
                // TQ blocks: 2-bit codes (TQ2_0) or base-3 bytes (TQ1_0), then an f16 scale.
                let size = t.byte_size(shape)? as usize;
                let block = if *t == TensorType::TQ2_0 { 66 } else { 54 };
                let d16 = half::f16::from_f32(1.0 / (shape[0] as f32).sqrt()).to_le_bytes();
                let mut d = vec![0u8; size];
                for blk in d.chunks_mut(block) {
                    for x in &mut blk[..block - 2] {
                        *x = if *t == TensorType::TQ2_0 { random_codes(&mut rng) } else { (rng.next() % 243) as u8 };
                    }
                    blk[block - 2..].copy_from_slice(&d16);
                }
                d
            }
        };
        w.write_tensor(name, &data)?;
    }
    w.finish()?;
    println!("wrote {} (dummy {size}, {outtype})", out.display());
    Ok(())
}

/// Four 2-bit codes, each 0, 1 or 2 (ternary −1, 0, +1).
fn random_codes(rng: &mut Rng) -> u8 {
    let r = rng.next();
    (0..4).fold(0u8, |acc, i| acc | ((((r >> (16 * i)) & 0xffff) % 3) as u8) << (2 * i))
}

/// A random f16 in roughly [-0.05, 0.05].
fn half_bits(rng: &mut Rng) -> half::f16 {
    half::f16::from_f32(((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1)
}

/// GPT-2's byte-to-unicode table: the 256 single-byte tokens of a byte-level BPE vocabulary.
fn byte_level_alphabet() -> Vec<String> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut pairs: Vec<(u32, u32)> = printable.into_iter().zip(chars).collect();
    pairs.sort();
    pairs.into_iter().map(|(_, c)| char::from_u32(c).expect("valid").to_string()).collect()
}
