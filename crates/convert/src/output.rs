//! Writing the output: never over something that is not a regular file, never half-written.

use super::*;

/// Where the output really goes: `out` itself when it does not exist or is a regular file, the
/// file a symlink points to when that is a regular file (the link is kept). Anything else (a
/// directory, a device such as /dev/full, a FIFO, a dangling link) is refused before any work is
/// done: renaming over it would replace it with a regular file.
pub fn output_target(out: &Path) -> Result<PathBuf> {
    let refuse = |message: String| ConvertError::Output { path: out.to_owned(), message };
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out.to_owned()),
        Err(source) => return Err(ConvertError::Io { path: out.to_owned(), source }),
    };
    let (target, meta) = if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(out).map_err(|_| {
            refuse("is a symbolic link to a file that does not exist; refusing to replace the link".into())
        })?;
        let meta = std::fs::metadata(&target).map_err(|source| ConvertError::Io { path: target.clone(), source })?;
        (target, meta)
    } else {
        (out.to_owned(), meta)
    };
    let kind = file_kind(&meta.file_type());
    if kind != "regular file" {
        let through =
            if target != out { format!(" (through the symbolic link to {})", target.display()) } else { String::new() };
        return Err(refuse(format!("is a {kind}{through}, not a regular file; refusing to replace it")));
    }
    Ok(target)
}

/// A file type in words, for error messages.
pub(crate) fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_block_device() || t.is_char_device() {
            return "device";
        }
        if t.is_fifo() {
            return "named pipe";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Writes a GGUF through a temporary file beside the output (fsync, then rename), so the output is
/// either the complete new file or untouched, and the temporary file is removed on every error
/// path (the rename's included). The output is checked by [`output_target`] before and again
/// right before the rename. Returns the bytes written and the path written (a symlink's target).
pub(crate) fn write_atomically(
    out: &Path,
    b: GgufBuilder,
    body: impl FnOnce(&mut bitnet_format::GgufWriter<BufWriter<File>>) -> Result<()>,
) -> Result<(u64, PathBuf)> {
    let target = output_target(out)?;
    let mut tmp_name = target.file_name().unwrap_or(target.as_os_str()).to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = target.with_file_name(tmp_name);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ConvertError::Io { path, source }
    };
    let result = (|| -> Result<u64> {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = b.start(bitnet_format::buffered(file))?;
        body(&mut w)?;
        let file =
            w.finish()?.into_inner().map_err(|e| ConvertError::Io { path: tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io(&tmp))?;
        let bytes = file.metadata().map_err(io(&tmp))?.len();
        if output_target(out)? != target {
            return Err(ConvertError::Output { path: out.to_owned(), message: "changed while converting".into() });
        }
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        Ok(bytes)
    })();
    match result {
        Ok(bytes) => Ok((bytes, target)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
