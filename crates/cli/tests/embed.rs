//! `bitnet convert` + `bitnet embed` end to end on the tiny embedding checkpoints: the vectors
//! printed match transformers' (fixtures/models/tiny-*-embedding/reference.json).

mod common;

fn bitnet(args: &[&str]) -> (bool, String, String) {
    let out = common::bitnet_command().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(rel: &str) -> String {
    format!("{}/../../fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Converts fixture checkpoint `name` into a temporary folder (removed when the returned handle
/// drops); returns the handle and the file's path.
fn convert(name: &str) -> (tempfile::TempDir, String) {
    let dir = common::scratch("embed");
    let out = common::file_in(&dir, &format!("{name}.gguf"));
    let (ok, _, err) = bitnet(&["convert", &fixture(&format!("models/{name}")), "-o", &out]);
    assert!(ok, "{err}");
    (dir, out)
}

fn reference(name: &str) -> serde_json::Value {
    let path = fixture(&format!("models/{name}/reference.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn embed_prints_transformers_vectors() {
    for (name, pooling) in [("tiny-qwen3-embedding", "last"), ("tiny-gemma3-embedding", "mean")] {
        let (_dir, model) = convert(name);
        let r = reference(name);
        let texts: Vec<&str> = r["texts"].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap()).collect();
        let mut args = vec!["embed", "-m", &model, "--json", "-t", "2"];
        for t in &texts {
            args.extend(["-p", t]);
        }
        let (ok, out, err) = bitnet(&args);
        assert!(ok, "{err}");
        assert!(err.contains(&format!("pooling {pooling} (declared by the model)")), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), texts.len());
        for (line, t) in lines.iter().zip(r["texts"].as_array().unwrap()) {
            let ours: Vec<f64> = serde_json::from_str(line).unwrap();
            let theirs: Vec<f64> = serde_json::from_value(t["embedding"].clone()).unwrap();
            let max = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
            assert!(max < 0.02, "{name}: {max}");
        }
        // The summary: one line per text and the similarity matrix (1 on its diagonal).
        let (ok, out, err) = bitnet(&["embed", "-m", &model, "-p", texts[0], "-p", texts[1]]);
        assert!(ok, "{err}");
        assert!(out.contains("cosine similarity:") && out.contains("1.000"), "{out}");
    }
}

#[test]
fn embed_refuses_clearly() {
    let (dir, model) = convert("tiny-qwen3-embedding");
    let long = "word ".repeat(700);
    let (ok, _, err) = bitnet(&["embed", "-m", &model, "-p", &long]);
    assert!(!ok);
    assert!(err.contains("longer than the context of 512 tokens") && err.contains("--truncate"), "{err}");
    let (ok, out, err) = bitnet(&["embed", "-m", &model, "-p", &long, "--truncate", "--json"]);
    assert!(ok && out.lines().count() == 1, "{err}");
    assert!(err.contains("truncated"), "{err}");
    // A generative model declares no pooling: say how to choose one.
    let demo = fixture("models/bitnet-demo.gguf");
    let (ok, _, err) = bitnet(&["embed", "-m", &demo, "-p", "hi"]);
    assert!(!ok && err.contains("--pooling"), "{err}");
    let (ok, out, _) = bitnet(&["embed", "-m", &demo, "-p", "hi", "--pooling", "mean", "--json"]);
    assert!(ok && out.lines().count() == 1);
    let empty = common::file_in(&dir, "empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let (ok, _, err) = bitnet(&["embed", "-m", &model, "-f", &empty]);
    assert!(!ok && err.contains("has no text"), "{err}");
}
