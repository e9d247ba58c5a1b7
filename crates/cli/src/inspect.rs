//! `bitnet inspect`: header, metadata and tensor table of a GGUF file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use bitnet_format::{Dialect, GgufFile, ReadOptions, TensorType, Value};
use serde_json::{Value as Json, json};

/// Elements of an array shown before "... N more" without `--full`.
const ARRAY_PREVIEW: usize = 8;
/// Characters of a string shown without `--full` (chat templates run to kilobytes).
const STRING_PREVIEW: usize = 120;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  bitnet inspect model.gguf\n  bitnet inspect model.gguf --full\n  \
                        bitnet inspect model.gguf --json | jq '.tensors | length'")]
pub struct Args {
    /// The GGUF file.
    pub file: PathBuf,
    /// Show every array element and whole strings (by default long ones are abbreviated).
    #[arg(long)]
    pub full: bool,
    /// Print JSON instead of tables (arrays are abbreviated unless --full is also given).
    #[arg(long)]
    pub json: bool,
    /// Read type ids as this llama.cpp family instead of detecting it (ids 36-39 differ).
    #[arg(long, value_enum)]
    pub dialect: Option<DialectArg>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DialectArg {
    /// Upstream llama.cpp (39 = MXFP4).
    Upstream,
    /// bitnet.cpp's fork (36 = I2_S, 38 = TL1, 39 = TL2).
    Bitnet,
}

pub fn run(args: &Args) -> Result<()> {
    let dialect = args.dialect.map(|d| match d {
        DialectArg::Upstream => Dialect::Upstream,
        DialectArg::Bitnet => Dialect::BitnetFork,
    });
    let file = GgufFile::open_with(&args.file, ReadOptions { dialect })
        .with_context(|| format!("{} is not a valid GGUF file", args.file.display()))?;
    let out = if args.json { render_json(&file, args.full) } else { render_text(&file, args.full) };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    match stdout.write_all(out.as_bytes()).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

struct TypeTotal {
    count: usize,
    elements: u64,
    bytes: u64,
}

fn totals(file: &GgufFile) -> BTreeMap<TensorType, TypeTotal> {
    let mut totals = BTreeMap::new();
    for t in file.tensors() {
        let e = totals.entry(t.ty).or_insert(TypeTotal { count: 0, elements: 0, bytes: 0 });
        e.count += 1;
        e.elements += t.numel();
        e.bytes += t.size;
    }
    totals
}

fn dialect_label(d: Dialect) -> &'static str {
    match d {
        Dialect::Upstream => "upstream llama.cpp",
        Dialect::BitnetFork => "bitnet.cpp fork",
    }
}

fn preview(v: &Value, full: bool) -> String {
    match v {
        Value::String(s) if !full && s.chars().count() > STRING_PREVIEW => {
            let head: String = s.chars().take(STRING_PREVIEW).collect();
            format!("{head:?}... ({} chars)", s.chars().count())
        }
        Value::Array(a) if !full && a.len() > ARRAY_PREVIEW => {
            let head: Vec<String> = a.values()[..ARRAY_PREVIEW].iter().map(|x| preview(x, full)).collect();
            format!(
                "[{}, ... {} more] ({} × {})",
                head.join(", "),
                a.len() - ARRAY_PREVIEW,
                a.len(),
                a.element_type().name()
            )
        }
        Value::Array(a) => {
            let items: Vec<String> = a.values().iter().map(|x| preview(x, full)).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.2} {}", UNITS[u]) }
}

fn render_text(file: &GgufFile, full: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "GGUF version {}, {} bytes ({})",
        file.version(),
        file.bytes().len(),
        human_bytes(file.bytes().len() as u64)
    );
    let _ = writeln!(s, "alignment {}, data section at offset {}", file.alignment(), file.data_offset());
    let _ = writeln!(s, "type ids read as: {}", dialect_label(file.dialect()));
    let _ = writeln!(s, "\nmetadata ({} keys):", file.metadata().len());
    let width = file.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in file.metadata().iter() {
        let ty = match v {
            Value::Array(a) => format!("{}[{}]", a.element_type().name(), a.len()),
            other => other.value_type().name().to_owned(),
        };
        let _ = writeln!(s, "  {k:width$}  {ty:<14} {}", preview(v, full));
    }
    let _ = writeln!(s, "\ntensors ({}):", file.tensors().len());
    let name_w = file.tensors().iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(s, "  {:name_w$}  {:<7} {:<22} {:>12} {:>12}", "name", "type", "shape", "offset", "bytes");
    for t in file.tensors() {
        let shape = format!("{:?}", t.shape);
        let _ =
            writeln!(s, "  {:name_w$}  {:<7} {:<22} {:>12} {:>12}", t.name, t.ty.to_string(), shape, t.offset, t.size);
    }
    let _ = writeln!(s, "\ntotals by type:");
    let _ =
        writeln!(s, "  {:<7} {:>7} {:>15} {:>15} {:>12} {:>8}", "type", "tensors", "elements", "bytes", "", "bits/w");
    let (mut all_e, mut all_b) = (0u64, 0u64);
    for (ty, t) in totals(file) {
        let bpw = if t.elements > 0 { t.bytes as f64 * 8.0 / t.elements as f64 } else { 0.0 };
        let _ = writeln!(
            s,
            "  {:<7} {:>7} {:>15} {:>15} {:>12} {:>8.3}",
            ty.to_string(),
            t.count,
            t.elements,
            t.bytes,
            human_bytes(t.bytes),
            bpw
        );
        all_e += t.elements;
        all_b += t.bytes;
    }
    let _ = writeln!(
        s,
        "  {:<7} {:>7} {:>15} {:>15} {:>12}",
        "all",
        file.tensors().len(),
        all_e,
        all_b,
        human_bytes(all_b)
    );
    s
}

fn value_json(v: &Value, full: bool) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::F32(x) => json!(f64::from(*x)),
        Value::Bool(x) => json!(x),
        Value::String(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Array(a) => {
            let n = if full { a.len() } else { a.len().min(ARRAY_PREVIEW) };
            Json::Array(a.values()[..n].iter().map(|x| value_json(x, full)).collect())
        }
    }
}

fn render_json(file: &GgufFile, full: bool) -> String {
    let metadata: Vec<Json> = file
        .metadata()
        .iter()
        .map(|(k, v)| {
            let mut entry = json!({"key": k, "type": v.value_type().name(), "value": value_json(v, full)});
            if let Value::Array(a) = v {
                entry["element_type"] = json!(a.element_type().name());
                entry["len"] = json!(a.len());
                entry["truncated"] = json!(!full && a.len() > ARRAY_PREVIEW);
            }
            entry
        })
        .collect();
    let tensors: Vec<Json> = file
        .tensors()
        .iter()
        .map(|t| {
            json!({"name": t.name, "type": t.ty.name(), "type_id": t.ty.id(), "shape": t.shape,
                   "offset": t.offset, "file_offset": file.data_offset() + t.offset, "bytes": t.size})
        })
        .collect();
    let totals: Vec<Json> = totals(file)
        .into_iter()
        .map(|(ty, t)| json!({"type": ty.name(), "tensors": t.count, "elements": t.elements, "bytes": t.bytes}))
        .collect();
    let doc = json!({
        "version": file.version(),
        "file_bytes": file.bytes().len(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "dialect": match file.dialect() { Dialect::Upstream => "upstream", Dialect::BitnetFork => "bitnet" },
        "metadata": metadata,
        "tensors": tensors,
        "totals": totals,
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    s.push('\n');
    s
}
