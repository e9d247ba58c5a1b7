//! Model loading with hostile metadata: a tiny valid model (the fixture) whose metadata the input
//! edits (set any of its keys, or a few optional ones, to a value of any type, or remove it), then
//! load, build the tokenizer, make a KV cache and run two tokens. Every step gives Ok or an error:
//! no panic, no abort, no unbounded allocation.
//!
//! Input: a sequence of 11-byte edits `[op, key, type, value: 8 bytes]`.
#![no_main]

use bitnet_format::{Array, Gguf, Metadata, Value, ValueType, rewrite_metadata};
use bitnet_model::{KvType, LoadOptions, Model, Tokenizer};
use libfuzzer_sys::fuzz_target;

static MODEL: &[u8] = include_bytes!("../../../../fixtures/models/tiny-bitnet-b1.58.gguf");

/// Keys the fixture lacks but the loader reads.
const EXTRA: &[&str] = &[
    "bitnet-b1.58.attention.head_count_kv",
    "bitnet-b1.58.attention.key_length",
    "bitnet-b1.58.vocab_size",
    "bitnet-b1.58.rope.dimension_count",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
    "tokenizer.chat_template",
    "bitnet.i2s.layout",
];

fn value(ty: u8, v: [u8; 8], old: Option<&Value>) -> Value {
    let u = u64::from_le_bytes(v);
    match ty % 12 {
        0 => Value::U8(v[0]),
        1 => Value::U32(u as u32),
        2 => Value::U64(u),
        3 => Value::I32(u as i32),
        4 => Value::I64(u as i64),
        5 => Value::F32(f32::from_bits(u as u32)),
        6 => Value::F64(f64::from_bits(u)),
        7 => Value::Bool(v[0] & 1 == 1),
        8 => Value::String(String::from_utf8_lossy(&v).into_owned()),
        // Small integers, where the interesting boundaries are.
        9 => Value::U32(u32::from(v[0])),
        // An array: the old one cut to a length, or strings.
        10 => match old.and_then(Value::as_array) {
            Some(a) => {
                let keep = (u as usize) % (a.len() + 1);
                Value::Array(Array::new(a.element_type(), a.values()[..keep].to_vec()).unwrap())
            }
            None => Value::Array(Array::strings((0..v[0] % 8).map(|i| format!("<{i}>")))),
        },
        _ => Value::Array(Array::new(ValueType::U32, vec![Value::U32(u as u32); (v[1] % 4) as usize]).unwrap()),
    }
}

fuzz_target!(|data: &[u8]| {
    let src = Gguf::parse(MODEL).unwrap();
    let keys: Vec<String> = src.metadata().iter().map(|(k, _)| k.to_owned()).chain(EXTRA.iter().map(|k| k.to_string())).collect();
    let mut m: Metadata = src.metadata().clone();
    for e in data.chunks_exact(11) {
        let key = &keys[e[1] as usize % keys.len()];
        if e[0] % 4 == 0 {
            m.remove(key);
        } else {
            let v = value(e[2], e[3..11].try_into().unwrap(), m.get(key));
            m.insert(key.clone(), v);
        }
    }
    let Ok(bytes) = rewrite_metadata(&src, m, Vec::new()) else { return };
    let path = std::env::temp_dir().join(format!("bitnet-fuzz-model-{}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let Ok(model) = Model::load(&path, LoadOptions { threads: 1, ..Default::default() }) else { return };
    let tok = Tokenizer::from_metadata(model.metadata());
    if let Ok(tok) = &tok {
        let _ = tok.encode("Hello <s> wörld", true).and_then(|ids| tok.decode(&ids, false));
    }
    let ctx = model.config.context_length.min(8);
    let Ok(mut cache) = model.new_cache_of(ctx, KvType::F16) else { return };
    let vocab = model.config.vocab_size as u32;
    let _ = model.forward(&[0, 1 % vocab], &mut cache, false);
});
