//! `--hf-repo`: models from the Hugging Face hub, through the standard cache that Python's
//! huggingface_hub uses (so files downloaded by either are shared).
//!
//! Offline use: files already in the cache are used without touching the network, and with
//! `HF_HUB_OFFLINE=1` the network is never tried (hf-hub itself does not honour that variable,
//! nor `HF_HUB_CACHE`; we do).

use std::path::PathBuf;

use anyhow::{Result, bail};
use hf_hub::Cache;

fn cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => Cache::new(dir.into()),
        None => Cache::from_env(),
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// GGUF files of the newest cached snapshot of `repo`.
fn cached_ggufs(cache: &Cache, repo: &str) -> Vec<String> {
    let dir = cache.path().join(format!("models--{}", repo.replace('/', "--"))).join("snapshots");
    let Ok(snapshots) = std::fs::read_dir(&dir) else { return vec![] };
    let newest = snapshots.filter_map(|e| e.ok()).max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    let Some(snapshot) = newest else { return vec![] };
    let mut files: Vec<String> = std::fs::read_dir(snapshot.path())
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".gguf"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The local path of `file` (or of the repo's only GGUF file) from `repo`, downloading it if needed.
pub fn resolve(repo: &str, file: Option<&str>) -> Result<PathBuf> {
    let cache = cache();
    let file = match file {
        Some(f) => f.to_owned(),
        None => {
            let cached = cached_ggufs(&cache, repo);
            match cached.as_slice() {
                [one] => one.clone(),
                [] => return download_only_gguf(&cache, repo),
                many => {
                    bail!("{repo} has several GGUF files in the cache ({}); choose one with --hf-file", many.join(", "))
                }
            }
        }
    };
    if let Some(path) = cache.model(repo.to_owned()).get(&file) {
        return Ok(path);
    }
    if offline() {
        bail!("{repo}/{file} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set", cache.path().display());
    }
    download(&cache, repo, &file)
}

#[cfg(feature = "hf-download")]
fn api(cache: &Cache) -> Result<hf_hub::api::sync::Api> {
    Ok(hf_hub::api::sync::ApiBuilder::from_cache(cache.clone()).with_progress(true).build()?)
}

#[cfg(feature = "hf-download")]
fn download(cache: &Cache, repo: &str, file: &str) -> Result<PathBuf> {
    api(cache)?.model(repo.to_owned()).get(file).map_err(|e| {
        anyhow::anyhow!(
            "cannot download {repo}/{file} from the Hugging Face hub ({e}); files already in the cache at {} work offline",
            cache.path().display()
        )
    })
}

#[cfg(feature = "hf-download")]
fn download_only_gguf(cache: &Cache, repo: &str) -> Result<PathBuf> {
    if offline() {
        bail!(
            "no GGUF file of {repo} is in the Hugging Face cache at {} and HF_HUB_OFFLINE is set",
            cache.path().display()
        );
    }
    let info = api(cache)?.model(repo.to_owned()).info().map_err(|e| {
        anyhow::anyhow!("cannot reach the Hugging Face hub to list {repo} ({e}); name a cached file with --hf-file")
    })?;
    let ggufs: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).filter(|n| n.ends_with(".gguf")).collect();
    match ggufs.as_slice() {
        [one] => download(cache, repo, one),
        [] => bail!("{repo} has no GGUF file"),
        many => bail!("{repo} has several GGUF files ({}); choose one with --hf-file", many.join(", ")),
    }
}

#[cfg(not(feature = "hf-download"))]
fn download(cache: &Cache, repo: &str, file: &str) -> Result<PathBuf> {
    bail!(
        "{repo}/{file} is not in the Hugging Face cache at {}, and this build cannot download (rebuild with the hf-download feature)",
        cache.path().display()
    )
}

#[cfg(not(feature = "hf-download"))]
fn download_only_gguf(cache: &Cache, repo: &str) -> Result<PathBuf> {
    bail!(
        "no GGUF file of {repo} is in the Hugging Face cache at {}, and this build cannot download",
        cache.path().display()
    )
}
