//! Every hostile input a user can give the `bitnet` binary: exit status 1 (2 for usage errors)
//! with a message naming what is wrong, never a panic, and no file left behind.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn bitnet_with(args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut child = common::bitnet_command()
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Written from a thread: the child may stop reading (and the pipe break) early.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = child.wait_with_output().unwrap();
    let o = Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"), "a panic: {}", o.stderr);
    o
}

fn bitnet(args: &[&str]) -> Out {
    bitnet_with(args, None)
}

/// Runs `args`, expecting exit status `code` and `needle` in the error output.
fn fails(args: &[&str], code: i32, needle: &str) -> Out {
    let o = bitnet(args);
    assert_eq!(o.code, Some(code), "{args:?}: {}", o.stderr);
    assert!(o.stderr.contains(needle), "{args:?}: expected {needle:?} in: {}", o.stderr);
    o
}

fn fixture(rel: &str) -> String {
    format!("{}/../../fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn no_temp_files(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

const TINY: &str = "models/tiny-bitnet-b1.58.gguf";
const CKPT: &str = "models/tiny-bitnet-b1.58";

#[test]
fn convert_never_replaces_what_is_not_a_regular_file() {
    let scratch = common::scratch("robust-convert");
    let dir = scratch.path();
    let ckpt = fixture(CKPT);
    let d = dir.join("existing-dir");
    std::fs::create_dir(&d).unwrap();
    fails(&["convert", &ckpt, "-o", d.to_str().unwrap()], 1, "is a directory, not a regular file");
    assert!(d.is_dir());
    if Path::new("/dev/full").exists() {
        fails(&["convert", &ckpt, "-o", "/dev/full"], 1, "is a device");
        assert!(!std::fs::metadata("/dev/full").unwrap().is_file(), "/dev/full was replaced");
    }
    #[cfg(unix)]
    {
        let link = dir.join("dangling.gguf");
        std::os::unix::fs::symlink(dir.join("missing"), &link).unwrap();
        fails(&["convert", &ckpt, "-o", link.to_str().unwrap()], 1, "symbolic link to a file that does not exist");
        std::fs::write(dir.join("real.gguf"), b"x").unwrap();
        let link = dir.join("link.gguf");
        std::os::unix::fs::symlink(dir.join("real.gguf"), &link).unwrap();
        let o = bitnet(&["convert", &ckpt, "-o", link.to_str().unwrap()]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        assert!(o.stderr.contains("through the symbolic link"), "{}", o.stderr);
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }
    no_temp_files(dir);
    // A text file is neither a checkpoint nor a GGUF file.
    fails(
        &["convert", &fixture("models/sample.txt"), "-o", dir.join("x.gguf").to_str().unwrap()],
        1,
        "neither a checkpoint directory nor a GGUF file",
    );
    assert!(!dir.join("x.gguf").exists());
}

#[test]
fn messages_are_clear() {
    // The cause once, not twice.
    let o = fails(&["inspect", "/nonexistent/model.gguf"], 1, "No such file or directory");
    assert_eq!(o.stderr.matches("os error 2").count(), 1, "{}", o.stderr);
    // A directory as a model.
    fails(&["run", "-m", &fixture("models"), "-p", "x"], 1, "is a directory");
    // Paths leaving a Hugging Face repository.
    for bad in ["../x.gguf", "/etc/passwd", "a/../../b.gguf"] {
        fails(&["run", "--hf-repo", "someone/model", "--hf-file", bad, "-p", "x"], 1, "must be a path inside");
    }
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let mut child = common::bitnet_command()
        .args(["run", "-m", &fixture(TINY), "-p", "The function", "-n", "100", "--temp", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("Broken pipe") && !err.contains("error"), "{err}");
}

#[test]
fn limits_on_requests() {
    let m = fixture(TINY);
    // Context sizes that overflow or cannot fit memory.
    for ctx in ["288230376151711744", "1000000000000"] {
        fails(&["run", "-m", &m, "-p", "x", "-n", "1", "-c", ctx], 1, "KV cache");
    }
    let o = bitnet(&["run", "-m", &m, "-p", "x", "-n", "1", "-c", "1000000"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("above the 128 tokens the model was trained with"), "{}", o.stderr);
    // Threads: far above the CPUs is a warning and a cap, not minutes of spinning or a panic.
    let o = bitnet(&["run", "-m", &m, "-p", "x", "-n", "1", "-t", "1000000"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("more than the") && o.stderr.contains("CPUs"), "{}", o.stderr);
    // bench depth + tokens overflowing.
    fails(&["bench", "-m", &m, "-p", "0", "-n", "1", "-d", &u64::MAX.to_string(), "-r", "1"], 1, "overflows");
    // Sampling flags outside their meaning are usage errors naming the flag.
    for (flag, value) in [
        ("--temp", "NaN"),
        ("--temp", "-1"),
        ("--temp", "inf"),
        ("--top-p", "2"),
        ("--top-p", "0"),
        ("--min-p", "2"),
        ("--repeat-penalty", "0"),
    ] {
        fails(&["run", "-m", &m, "-p", "x", flag, value], 2, flag);
    }
}

#[test]
fn unbounded_inputs_are_capped() {
    if Path::new("/dev/zero").exists() {
        fails(&["perplexity", "-m", &fixture(TINY), "-f", "/dev/zero"], 1, "larger than 256 MiB");
    }
    let m = fixture(TINY);
    // One long line with no line break (as from /dev/zero) ends chat with an error, not an abort.
    let endless = vec![b'a'; 70 << 20];
    let o = bitnet_with(&["chat", "-m", &m, "-n", "2"], Some(&endless));
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("line longer than"), "{}", o.stderr);
}

#[test]
fn chat_keeps_the_session_after_a_bad_message() {
    let m = fixture(TINY);
    let mut input = b"\xff\xfe not UTF-8\n".to_vec();
    input.extend_from_slice(format!("{}\n", "word ".repeat(300)).as_bytes());
    input.extend_from_slice(&vec![b'b'; (1 << 20) + 10]);
    input.extend_from_slice(b"\nHello\n");
    let o = bitnet_with(&["chat", "-m", &m, "-n", "3", "--temp", "0", "-c", "64"], Some(&input));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("not valid UTF-8"), "{}", o.stderr);
    assert!(o.stderr.contains("too long for the context"), "{}", o.stderr);
    assert!(o.stderr.contains("longer than 1 MiB"), "{}", o.stderr);
    assert_eq!(o.stdout.matches("\n> ").count(), 5, "the last message is still answered: {}", o.stdout);
}

#[test]
fn chat_templates_that_render_nothing_or_never_end() {
    let scratch = common::scratch("robust-templates");
    let dir = scratch.path();
    let m = fixture(TINY);
    let empty = dir.join("empty.jinja");
    std::fs::write(&empty, "").unwrap();
    fails(&["chat", "-m", &m, "--chat-template", empty.to_str().unwrap()], 1, "renders the conversation as nothing");
    let nested = dir.join("nested.jinja");
    std::fs::write(&nested, "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}")
        .unwrap();
    fails(&["chat", "-m", &m, "--chat-template", nested.to_str().unwrap()], 1, "chat template too expensive");
}

#[test]
fn llama_cpp_vocabularies_stream_without_panicking() {
    for q in ["tq1_0", "tq2_0"] {
        let m = fixture(&format!("models/tiny-bitnet-1bitllm-256-llamacpp-{q}.gguf"));
        let o = bitnet(&["run", "-m", &m, "-p", "Hello", "-n", "16", "--temp", "0"]);
        assert_eq!(o.code, Some(0), "{q}: {}", o.stderr);
        assert!(o.stdout.starts_with("Hello"), "{}", o.stdout);
    }
}

#[test]
fn an_unknown_kernel_set_lists_what_this_cpu_offers() {
    let out = common::bitnet_command()
        .args(["run", "-m", &fixture(TINY), "-p", "x", "-n", "1"])
        .env("BITNET_KERNEL", "sse9")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\"sse9\" is unknown") && err.contains("this CPU offers") && err.contains("scalar"), "{err}");
    // A set this CPU runs is used whole and named in the timings.
    let out = common::bitnet_command()
        .args(["run", "-m", &fixture(TINY), "-p", "x", "-n", "1"])
        .env("BITNET_KERNEL", "scalar")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel scalar"));
}

#[test]
fn hostile_hyperparameters_in_a_model_or_a_checkpoint() {
    use bitnet_format::{GgufFile, Value, rewrite_metadata};
    let scratch = common::scratch("robust-hyper");
    let dir = scratch.path();
    // A GGUF whose block_count claims 2^31 layers, or fewer than its tensors.
    let src = GgufFile::open(fixture(TINY)).unwrap();
    for (tag, count, needle) in [("huge", 1u64 << 31, "out of range"), ("one", 1, "tensors for 2 blocks")] {
        let mut m = src.metadata().clone();
        m.insert("bitnet-b1.58.block_count", Value::U64(count));
        let path = dir.join(format!("{tag}.gguf"));
        std::fs::write(&path, rewrite_metadata(&src, m, Vec::new()).unwrap()).unwrap();
        fails(&["run", "-m", path.to_str().unwrap(), "-p", "x", "-n", "1"], 1, needle);
    }
    // A checkpoint whose config.json claims 10^4 layers: refused at once, nothing written.
    let ckpt = dir.join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    for f in std::fs::read_dir(fixture(CKPT)).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, ckpt.join(f.file_name().unwrap())).unwrap();
    }
    let config = ckpt.join("config.json");
    let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    j["num_hidden_layers"] = 10_000.into();
    std::fs::write(&config, j.to_string()).unwrap();
    let out = dir.join("out.gguf");
    fails(&["convert", ckpt.to_str().unwrap(), "-o", out.to_str().unwrap()], 1, "num_hidden_layers = 10000");
    assert!(!out.exists());
    no_temp_files(dir);
}
