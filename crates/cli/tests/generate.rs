//! `bitnet run`, `logits`, `perplexity` and `convert` end to end on the tiny fixture model.

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

const MODEL: &str = "models/tiny-bitnet-b1.58.gguf";

#[test]
fn run_streams_text_and_prints_timings() {
    // The golden greedy text with the exact (f32) KV cache; the default f16 cache rounds keys and
    // values, which moves this random model's near-tied logits (see the model crate's tests).
    let (ok, out, err) = bitnet(&[
        "run",
        "-m",
        &fixture(MODEL),
        "-p",
        "The function returns",
        "-n",
        "12",
        "--temp",
        "0",
        "--kv-type",
        "f32",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("The function returns"), "{out}");
    assert!(out.len() > "The function returns".len());
    for needle in ["load:", "prompt:", "generation:", "tokens/s"] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }
    insta::assert_snapshot!("greedy_tiny_bitnet", out);
}

#[test]
fn same_seed_same_text() {
    let args = ["run", "-m", &fixture(MODEL), "-p", "If the argument", "-n", "16", "--temp", "0.9", "--seed", "5"];
    let (_, a, _) = bitnet(&args);
    let (_, b, _) = bitnet(&args);
    assert_eq!(a, b);
}

#[test]
fn logits_json_for_exact_tokens() {
    let dir = common::scratch("gen");
    let out = common::file_in(&dir, "logits.json");
    let (ok, _, err) = bitnet(&["logits", "-m", &fixture(MODEL), "--tokens", "0,54,263", "--out", &out]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["tokens"], serde_json::json!([0, 54, 263]));
    assert_eq!(doc["logits"].as_array().unwrap().len(), 3);
    assert_eq!(doc["logits"][0].as_array().unwrap().len(), 384);
}

#[test]
fn perplexity_reports_a_number() {
    let (ok, out, err) =
        bitnet(&["perplexity", "-m", &fixture(MODEL), "-f", &fixture("models/sample.txt"), "--ctx", "16", "--json"]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ppl = doc["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
    assert!(doc["chunks"].as_u64().unwrap() > 1);
}

#[test]
fn convert_writes_a_loadable_model() {
    let dir = common::scratch("gen");
    let out = common::file_in(&dir, "converted.gguf");
    let (ok, _, err) =
        bitnet(&["convert", &fixture("models/tiny-bitnet-b1.58"), "-o", &out, "--embedding-type", "f16"]);
    assert!(ok, "{err}");
    let (ok, text, _) = bitnet(&["inspect", &out]);
    assert!(ok && text.contains("I2_S") && text.contains("bitnet-b1.58"));
    // Converting the same checkpoint twice gives the same bytes as the shipped fixture.
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(fixture(MODEL)).unwrap());
    // The default head type is Q8_0 (rows of 64 are whole Q8_0 blocks), and the result runs.
    let (ok, _, err) = bitnet(&["convert", &fixture("models/tiny-bitnet-b1.58"), "-o", &out]);
    assert!(ok, "{err}");
    let (ok, text, _) = bitnet(&["inspect", &out]);
    assert!(ok && text.contains("token_embd.weight") && text.contains("Q8_0"), "{text}");
    let (ok, _, err) = bitnet(&["run", "-m", &out, "-p", "The", "-n", "2", "--temp", "0"]);
    assert!(ok, "{err}");
    // bitnet.cpp's lookup-table layout, with its separate scale tensors.
    let (ok, _, err) = bitnet(&["convert", &fixture("models/tiny-bitnet-b1.58"), "-o", &out, "--outtype", "tl1"]);
    assert!(ok, "{err}");
    let (ok, text, _) = bitnet(&["inspect", &out]);
    assert!(ok && text.contains("TL1") && text.contains("blk.0.attn_q.weight_scale"), "{text}");
    let (ok, _, err) = bitnet(&["run", "-m", &out, "-p", "The", "-n", "2", "--temp", "0"]);
    assert!(ok, "{err}");
    // A GGUF re-encoded: TL1 back to I2_S generates what the shipped fixture does.
    let back = common::file_in(&dir, "converted-back.gguf");
    let (ok, _, err) = bitnet(&["convert", &out, "-o", &back, "--outtype", "i2_s", "--embedding-type", "f16"]);
    assert!(ok, "{err}");
    let (ok, text, _) = bitnet(&["inspect", &back]);
    assert!(ok && text.contains("I2_S") && !text.contains("TL1"), "{text}");
    let run = |m: &str| bitnet(&["run", "-m", m, "-p", "The", "-n", "8", "--temp", "0", "--kv-type", "f32"]).1;
    assert_eq!(run(&back), run(&fixture(MODEL)));
}

#[test]
fn bad_input_gives_one_clear_line() {
    let long_prompt = "word ".repeat(200);
    let dir = common::scratch("gen");
    let x = common::file_in(&dir, "x.gguf");
    for (args, needle) in [
        (vec!["run", "-m", "/no/such.gguf", "-p", "x"], "does not exist"),
        (vec!["run", "-m", &fixture("gguf/malformed/bad_magic.gguf"), "-p", "x"], "not a GGUF file"),
        (vec!["run", "-m", &fixture(MODEL), "-p", "x", "-t", "0"], "--threads must be at least 1"),
        (vec!["run", "-m", &fixture(MODEL), "-p", &long_prompt, "-c", "32"], "more than the context"),
        (vec!["convert", &fixture("gguf"), "-o", &x], "config.json"),
        (vec!["convert", &fixture(MODEL), "-o", &x], "--outtype"),
    ] {
        let (ok, _, err) = bitnet(&args);
        assert!(!ok, "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    }
}

/// A type that cannot hold a tensor's rows (TQ1_0 needs multiples of 256; this model has 64 and
/// 192) is replaced by I2_S for that tensor, as llama.cpp's converter does: convert says which
/// and why, inspect shows the types, and the model runs.
#[test]
fn convert_falls_back_per_tensor() {
    let dir = common::scratch("gen");
    let out = common::file_in(&dir, "fallback-tq1_0.gguf");
    let (ok, _, err) = bitnet(&["convert", &fixture(MODEL), "-o", &out, "--outtype", "tq1_0"]);
    assert!(ok, "{err}");
    assert!(err.contains("TQ1_0 cannot hold, written as I2_S (its rows of 64 are not a multiple of 256)"), "{err}");
    let (ok, info, err) = bitnet(&["inspect", &out]);
    assert!(ok && info.contains("I2_S"), "{err}");
    let (ok, text, err) = bitnet(&["run", "-m", &out, "-p", "hello", "-n", "4", "--temp", "0"]);
    assert!(ok && !text.is_empty(), "{err}");
}

fn chat(args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = common::bitnet_command()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chat_runs_turns_and_commands() {
    let model = fixture(MODEL);
    let (ok, out, err) = chat(
        &["chat", "-m", &model, "-n", "6", "--temp", "0", "-s", "Be brief."],
        "Hello there\nHow are you?\n/clear\nAgain\n/exit\n",
    );
    assert!(ok, "{err}");
    assert_eq!(out.matches("\n> ").count(), 5, "one prompt per line read: {out}");
    assert!(err.contains("conversation cleared"), "{err}");
    // EOF ends the program cleanly too.
    let (ok, _, err) = chat(&["chat", "-m", &model, "-n", "4"], "Hi\n");
    assert!(ok, "{err}");
}

#[test]
fn chat_slides_the_window_when_the_context_is_full() {
    let model = fixture(MODEL);
    let turns = "The function returns a new list.\n".repeat(6);
    let (ok, _, err) = chat(&["chat", "-m", &model, "-n", "4", "--temp", "0", "-c", "48"], &turns);
    assert!(ok, "{err}");
    assert!(err.contains("context full: dropped the oldest message"), "{err}");
    // A message too long on its own is reported and dropped; the session goes on.
    let long = format!("{}\nHi\n", "word ".repeat(100));
    let (ok, out, err) = chat(&["chat", "-m", &model, "-c", "48", "-n", "4", "--temp", "0"], &long);
    assert!(ok && err.contains("too long for the context") && err.contains("the message was dropped"), "{err}");
    assert_eq!(out.matches("\n> ").count(), 3, "the next message is answered: {out}");
}

/// A fake Hugging Face cache in the layout huggingface_hub writes:
/// `models--ORG--NAME/refs/main` holding a revision, `snapshots/REV/FILE`; the folder is removed
/// when the returned handle drops.
fn fake_hf_cache(files: &[&str]) -> (tempfile::TempDir, String) {
    let dir = common::scratch("hf-cache");
    let root = dir.path().to_owned();
    let repo = root.join("models--tester--tiny-bitnet");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    let snap = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    for f in files {
        std::fs::copy(fixture(MODEL), snap.join(f)).unwrap();
    }
    let root = root.to_string_lossy().into_owned();
    (dir, root)
}

fn bitnet_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = common::bitnet_command().args(args).envs(env.iter().copied()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hf_repo_works_offline_from_the_cache() {
    let (_dir, cache) = fake_hf_cache(&["model-i2_s.gguf"]);
    let env = [("HF_HUB_CACHE", cache.as_str()), ("HF_HUB_OFFLINE", "1")];
    let args = ["run", "--hf-repo", "tester/tiny-bitnet", "-p", "The function", "-n", "4", "--temp", "0"];
    let (ok, out, err) = bitnet_env(&args, &env);
    assert!(ok, "{err}");
    assert!(out.starts_with("The function"));
    let (ok, _, err) = bitnet_env(
        &["run", "--hf-repo", "tester/tiny-bitnet", "--hf-file", "model-i2_s.gguf", "-p", "x", "-n", "1"],
        &env,
    );
    assert!(ok, "{err}");
    // Missing files give a clear error naming the cache, without touching the network.
    let (ok, _, err) = bitnet_env(&["run", "--hf-repo", "tester/other", "-p", "x"], &env);
    assert!(!ok && err.contains("HF_HUB_OFFLINE") && err.contains(&cache), "{err}");
    let (ok, _, err) =
        bitnet_env(&["run", "--hf-repo", "tester/tiny-bitnet", "--hf-file", "nope.gguf", "-p", "x"], &env);
    assert!(!ok && err.contains("nope.gguf"), "{err}");
    // Several GGUF files: the user must choose.
    let (_dir2, cache2) = fake_hf_cache(&["a.gguf", "b.gguf"]);
    let (ok, _, err) = bitnet_env(
        &["run", "--hf-repo", "tester/tiny-bitnet", "-p", "x"],
        &[("HF_HUB_CACHE", cache2.as_str()), ("HF_HUB_OFFLINE", "1")],
    );
    assert!(!ok && err.contains("--hf-file") && err.contains("a.gguf, b.gguf"), "{err}");
}

#[test]
fn convert_takes_a_checkpoint_from_the_hf_cache_offline() {
    let dir = common::scratch("hf-cache-ckpt");
    let root = dir.path().join("cache");
    let repo = root.join("models--tester--tiny-ckpt");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "feedface").unwrap();
    let snap = repo.join("snapshots/feedface");
    std::fs::create_dir_all(&snap).unwrap();
    let src = fixture("models/tiny-bitnet-b1.58");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(std::path::Path::new(&src).join(f), snap.join(f)).unwrap();
    }
    let cache = root.to_string_lossy().into_owned();
    let env = [("HF_HUB_CACHE", cache.as_str()), ("HF_HUB_OFFLINE", "1")];
    let out = common::file_in(&dir, "from-hub.gguf");
    let (ok, _, err) = bitnet_env(&["convert", "--hf-repo", "tester/tiny-ckpt", "-o", &out], &env);
    assert!(ok, "{err}");
    let (ok, _, err) = bitnet_env(&["run", "-m", &out, "-p", "The", "-n", "2", "--temp", "0"], &[]);
    assert!(ok, "{err}");
    // A repo missing from the cache names what is missing, without touching the network.
    let (ok, _, err) = bitnet_env(&["convert", "--hf-repo", "tester/absent", "-o", &out], &env);
    assert!(!ok && err.contains("config.json") && err.contains("HF_HUB_OFFLINE"), "{err}");
}

/// Quantized KV caches through the CLI: the demo model (heads of 32) generates and scores text
/// with them; the tiny model's heads of 16 are refused with a message that says why.
#[test]
fn quantized_kv_caches() {
    let demo = fixture("models/bitnet-demo.gguf");
    for kv in ["q8_0", "q4_0"] {
        let (ok, out, err) = bitnet(&["run", "-m", &demo, "-p", "The compiler", "-n", "8", "--kv-type", kv]);
        assert!(ok && out.len() > "The compiler".len(), "{kv}: {err}");
        let text = fixture("models/sample.txt");
        let (ok, out, err) =
            bitnet(&["perplexity", "-m", &demo, "-f", &text, "--ctx", "64", "--kv-type", kv, "--json"]);
        assert!(ok, "{kv}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kv_type"], kv);
        assert!(v["perplexity"].as_f64().unwrap().is_finite());
        let (ok, _, err) = bitnet(&["run", "-m", &fixture(MODEL), "-p", "The", "-n", "2", "--kv-type", kv]);
        assert!(!ok && err.contains("blocks of 32") && err.contains("16"), "{kv}: {err}");
    }
}

#[test]
fn bench_profile_breaks_a_token_down() {
    let demo = fixture("models/bitnet-demo.gguf");
    let (ok, out, err) = bitnet(&["bench", "-m", &demo, "-p", "0", "-n", "4", "-t", "1", "-r", "1", "--profile"]);
    assert!(ok, "{err}");
    for part in ["attn q/k/v", "ffn gate/up", "ffn down", "head", "attention", "quantize", "rest", "forward pass"] {
        assert!(out.contains(&format!("| {part}")), "{part} missing:\n{out}");
    }
    let (ok, out, err) =
        bitnet(&["bench", "-m", &demo, "-p", "0", "-n", "4", "-t", "1", "-r", "1", "--profile", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let parts = v[0]["profile"].as_array().unwrap();
    let bytes: f64 = parts.iter().map(|p| p["weight_bytes_per_token"].as_f64().unwrap()).sum();
    // Every weight is read once per generated token: the parts' bytes add up to the matrices'
    // (all but the tied embedding's lookup), within the file's size.
    let size = std::fs::metadata(&demo).unwrap().len() as f64;
    assert!(bytes > 0.5 * size && bytes <= size, "{bytes} of {size}");
    let total = parts.iter().find(|p| p["part"] == "forward (total)").unwrap()["seconds_per_token"].as_f64().unwrap();
    let sum: f64 =
        parts.iter().filter(|p| p["part"] != "forward (total)").map(|p| p["seconds_per_token"].as_f64().unwrap()).sum();
    assert!(sum <= total * 1.01 && sum > 0.0, "{sum} vs {total}");
    // Without --profile there is no profile.
    let (ok, out, _) = bitnet(&["bench", "-m", &demo, "-p", "0", "-n", "2", "-t", "1", "-r", "1", "--json"]);
    assert!(ok && !out.contains("profile"));
}

#[test]
fn bench_parallel_decodes_sequences_together() {
    let demo = fixture("models/bitnet-demo.gguf");
    let args = ["bench", "-m", &demo, "-p", "0", "-n", "3", "-t", "1", "-r", "1", "--parallel", "1,4", "--json"];
    let (ok, out, err) = bitnet(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    // One row per batch size; the rate counts every sequence's tokens.
    assert_eq!(
        (rows[0]["test"].as_str(), rows[0]["parallel"].as_u64(), rows[0]["tokens"].as_u64()),
        (Some("tg3"), Some(1), Some(3))
    );
    assert_eq!(
        (rows[1]["test"].as_str(), rows[1]["parallel"].as_u64(), rows[1]["tokens"].as_u64()),
        (Some("tg3 x4"), Some(4), Some(12))
    );
    assert!(rows.iter().all(|r| r["tokens_per_second"].as_f64().unwrap() > 0.0));
    let (ok, _, err) = bitnet(&["bench", "-m", &demo, "-p", "0", "-n", "3", "-r", "1", "--parallel", "0"]);
    assert!(!ok && err.contains("--parallel must be at least 1"), "{err}");
}
