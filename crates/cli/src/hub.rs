//! `--hf-repo`: models from the Hugging Face hub, through the standard cache that Python's
//! huggingface_hub uses (so files downloaded by either are shared).
//!
//! Offline use: files already in the cache are used without touching the network, and with
//! `HF_HUB_OFFLINE=1` the network is never tried (hf-hub itself does not honour that variable,
//! nor `HF_HUB_CACHE`; we do).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hf_hub::{Cache, Repo, RepoType};

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
    if let Some(f) = file {
        check_repo_path(f)?;
    }
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

/// A file of a repository is named by a relative path that stays inside it: no `..`, no root,
/// no drive prefix (the cache joins it onto the snapshot directory).
fn check_repo_path(file: &str) -> Result<()> {
    use std::path::Component;
    let path = std::path::Path::new(file);
    let inside = !file.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        bail!("--hf-file {file:?} must be a path inside the repository (no `..`, not absolute)");
    }
    Ok(())
}

#[cfg(feature = "hf-download")]
fn api(cache: &Cache) -> Result<hf_hub::api::sync::Api> {
    Ok(hf_hub::api::sync::ApiBuilder::from_cache(cache.clone()).with_progress(true).build()?)
}

#[cfg(feature = "hf-download")]
fn download(cache: &Cache, repo: &str, file: &str) -> Result<PathBuf> {
    download_from(cache, &Repo::model(repo.to_owned()), file).with_context(|| format!("{repo}/{file}"))
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

/// One file of a checkpoint repository: from the cache, else downloaded (unless offline).
/// `Ok(None)` when the file is optional and absent.
fn checkpoint_file(cache: &Cache, (id, repo): (&str, &Repo), file: &str, required: bool) -> Result<Option<PathBuf>> {
    if let Some(path) = cache.repo(repo.clone()).get(file) {
        return Ok(Some(path));
    }
    if offline() {
        if required {
            bail!(
                "{id}: {file} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set",
                cache.path().display()
            );
        }
        return Ok(None);
    }
    match download_from(cache, repo, file).with_context(|| format!("{id}: {file}")) {
        Ok(path) => Ok(Some(path)),
        Err(e) if required => Err(e),
        Err(_) => Ok(None),
    }
}

#[cfg(feature = "hf-download")]
fn download_from(cache: &Cache, repo: &Repo, file: &str) -> Result<PathBuf> {
    api(cache)?.repo(repo.clone()).get(file).map_err(|e| {
        anyhow::anyhow!(
            "cannot download {file} from the Hugging Face hub ({e}); files already in the cache at {} work offline",
            cache.path().display()
        )
    })
}

#[cfg(not(feature = "hf-download"))]
fn download_from(cache: &Cache, _repo: &Repo, file: &str) -> Result<PathBuf> {
    bail!("{file} is not in the Hugging Face cache at {}, and this build cannot download", cache.path().display())
}

/// The local snapshot directory of a Hugging Face checkpoint (`config.json`, the safetensors
/// file or shards, tokenizer files), fetching what the cache lacks.
pub fn resolve_checkpoint(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let cache = cache();
    let repo = Repo::with_revision(repo_id.to_owned(), RepoType::Model, revision.unwrap_or("main").to_owned());
    let repo = (repo_id, &repo);
    let config = checkpoint_file(&cache, repo, "config.json", true)?.expect("required");
    for optional in ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"] {
        checkpoint_file(&cache, repo, optional, false)?;
    }
    // sentence-transformers' pooling (embedding models): modules.json names the Pooling
    // module's folder, whose config.json says mean / CLS / last token.
    if let Some(modules) = checkpoint_file(&cache, repo, "modules.json", false)? {
        let text = std::fs::read_to_string(&modules).with_context(|| format!("reading {}", modules.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text).context("parsing modules.json")?;
        if let Some(dir) = bitnet_convert::pooling_module(&json).filter(|d| !d.is_empty()) {
            checkpoint_file(&cache, repo, &format!("{dir}/config.json"), false)?;
        }
    }
    match checkpoint_file(&cache, repo, "model.safetensors.index.json", false)? {
        Some(index) => {
            let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).context("parsing model.safetensors.index.json")?;
            let mut shards: Vec<&str> = json["weight_map"]
                .as_object()
                .context("model.safetensors.index.json has no weight_map")?
                .values()
                .filter_map(|v| v.as_str())
                .collect();
            shards.sort_unstable();
            shards.dedup();
            for shard in shards {
                checkpoint_file(&cache, repo, shard, true)?;
            }
        }
        None => {
            checkpoint_file(&cache, repo, "model.safetensors", true)?;
        }
    }
    Ok(config.parent().context("the cache path has a directory")?.to_owned())
}
