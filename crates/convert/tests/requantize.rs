//! `requantize_embeddings` (`bitnet convert MODEL.gguf --embedding-type ...`): only the embedding
//! table and output head change; a type that cannot hold the rows is a clear error and writes
//! nothing.

use std::path::Path;

use bitnet_convert::{EmbeddingType, requantize_embeddings};
use bitnet_format::{GgufFile, TensorType};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
}

#[test]
fn re_encodes_only_the_head() {
    let input = fixture("bitnet-demo.gguf");
    let out = std::env::temp_dir().join(format!("requant-{}.gguf", std::process::id()));
    requantize_embeddings(&input, &out, EmbeddingType::Q8_0).unwrap();
    let (a, b) = (GgufFile::open(&input).unwrap(), GgufFile::open(&out).unwrap());
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        if x.name == "token_embd.weight" || x.name == "output.weight" {
            assert_eq!(y.ty, TensorType::Q8_0, "{}", y.name);
        } else {
            assert_eq!(a.tensor_data(x), b.tensor_data(y), "{} must be copied unchanged", x.name);
        }
    }
    assert_eq!(a.metadata().len(), b.metadata().len());
    std::fs::remove_file(&out).ok();
}

#[test]
fn rows_that_do_not_fit_the_blocks_are_refused() {
    // The tiny fixture's rows are 64 wide: Q6_K needs multiples of 256.
    let out = std::env::temp_dir().join(format!("requant-bad-{}.gguf", std::process::id()));
    let err = requantize_embeddings(&fixture("tiny-bitnet-b1.58.gguf"), &out, EmbeddingType::Q6K).unwrap_err();
    assert!(err.to_string().contains("Q6_K") && err.to_string().contains("64"), "{err}");
    assert!(!out.exists());
}
