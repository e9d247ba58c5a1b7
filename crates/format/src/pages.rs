//! Mapping a model's weights with huge pages (Linux).
//!
//! Generating a token streams every weight once, so the mapping's page size shows in the speed:
//! with 4 KiB pages each 4 KiB of weights costs a TLB miss and a page walk, and the hardware
//! prefetchers stop at every page boundary. The kernel maps a file with 2 MiB pages when the page
//! cache holds it in 2 MiB folios, which is what reading it from disk gives on file systems with
//! large folios (ext4, XFS on recent kernels), but a file that was just written (by `convert`,
//! `cp`, a download) sits in the cache in small folios until it is evicted. Measured on a Zen 4
//! VM (docs/kernels.md, "Huge pages"): a 2B-4T I2_S token read 25 GB/s from a freshly written
//! file and 28.5 GB/s from the same file re-read from disk, every ternary matrix 19–27 GB/s
//! against 28–32.
//!
//! So [`map_weights`] checks one 4 MiB window of the file: mapped with 2 MiB pages already, or
//! after dropping that window from the cache and reading it back? In the second case the whole
//! file is dropped from the cache and read back (once: later loads find it in huge folios). Then
//! the mapping is populated, so the first token does not page the weights in one fault at a time,
//! and its 2 MiB pages are counted (`/proc/self/smaps`): a file cached partly in small folios
//! (read while free memory was fragmented, or partly written) is read back too when more than 5%
//! of it maps with 4 KiB pages, and the load message states what share still does (a 70B I2_S
//! file loaded after other large files on a 24 GiB VM mapped 6–17% in 4 KiB pages while the
//! window said 2 MiB).
//! `BITNET_HUGE_PAGES=0` maps the file as it is.

use std::fs::File;
use std::time::Duration;

/// How a mapped file's pages came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Pages {
    /// Mapped with 2 MiB pages; `reread` is the time it took to drop the file from the page cache
    /// and read it back, when that was needed. `small` is the part of the file's whole 2 MiB
    /// ranges that the kernel still mapped with 4 KiB pages, from 0 to 1: where free memory was
    /// too fragmented when the file was read, the page cache holds those parts in small folios
    /// (on a 24 GiB VM, 6–17% of a 70B file read right after other large files).
    Huge { reread: Option<Duration>, small: f64 },
    /// Mapped with 4 KiB pages, and why.
    Small(&'static str),
}

impl std::fmt::Display for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pages::Huge { reread, small } => {
                match reread {
                    None => write!(f, "weights in 2 MiB pages")?,
                    Some(t) => {
                        write!(f, "weights re-read from disk into 2 MiB pages in {:.2} s", t.as_secs_f64())?;
                        // Later loads find it so, unless memory was too fragmented this time.
                        if *small < SMALL_SHARE_SHOWN {
                            write!(f, " (once per file)")?;
                        }
                    }
                }
                if *small >= SMALL_SHARE_SHOWN {
                    write!(
                        f,
                        ", except {:.0}% in 4 KiB pages, which generation reads slower (free memory was too \
                         fragmented for 2 MiB pages when the file was read; as root, \
                         `echo 1 > /proc/sys/vm/compact_memory` before loading helps)",
                        small * 100.0
                    )?;
                }
                Ok(())
            }
            Pages::Small(why) => write!(f, "weights in 4 KiB pages ({why})"),
        }
    }
}

/// The share of a file in 4 KiB pages that the load message states (less is noise: a few
/// ranges a kernel had not mapped yet).
const SMALL_SHARE_SHOWN: f64 = 0.01;

/// The share of a file in 4 KiB pages above which it is dropped from the page cache and read
/// again (9 s for a 70B file here; a whole token in 4 KiB pages ran 10–15% slower, so 5% of it
/// costs under 1%).
const REREAD_SHARE: f64 = 0.05;

/// Bytes of a huge page (x86-64 and aarch64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// `BITNET_HUGE_PAGES=0`: keep 4 KiB pages for the weights (mapped and made at load).
fn huge_pages_off() -> bool {
    std::env::var("BITNET_HUGE_PAGES").is_ok_and(|v| v == "0")
}

/// A zeroed, writable buffer for weights made at load (matrices repacked into another type),
/// asking for 2 MiB pages like [`map_weights`] (a best-effort `MADV_HUGEPAGE` on a range that
/// starts on a 2 MiB boundary; a heap `Vec` of the same bytes gets 4 KiB pages where
/// transparent huge pages are `madvise`-only, as they usually are).
pub struct WeightBuffer {
    map: memmap2::MmapMut,
    start: usize,
    len: usize,
}

impl WeightBuffer {
    /// `len` zero bytes (pages are only allocated as they are written).
    pub fn zeroed(len: usize) -> std::io::Result<WeightBuffer> {
        // Mapped 2 MiB longer so that the buffer can start on a boundary: only whole, aligned
        // 2 MiB ranges become huge pages. The slack is never touched, so it costs no memory.
        let pad = if len >= HUGE_PAGE { HUGE_PAGE } else { 0 };
        let map = memmap2::MmapOptions::new().len(len + pad).map_anon()?;
        let start = if pad > 0 { (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE } else { 0 };
        if pad > 0 && !huge_pages_off() {
            // Best effort: without it the buffer works the same, in small pages.
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Ok(WeightBuffer { map, start, len })
    }
}

impl std::ops::Deref for WeightBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for WeightBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for WeightBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBuffer({} bytes)", self.len)
    }
}

/// Maps `file` read-only for streaming its weights, with 2 MiB pages where the system allows
/// (see the module docs), populated. Only an error mapping the file itself is an error.
pub fn map_weights(file: &File) -> std::io::Result<(memmap2::Mmap, Pages)> {
    #[cfg(target_os = "linux")]
    return linux::map_weights(file);
    #[cfg(not(target_os = "linux"))]
    return Ok((crate::reader::map_file(file)?, Pages::Small("not Linux")));
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::num::NonZeroU64;
    use std::time::Instant;

    use memmap2::{Advice, Mmap, MmapOptions};
    use rustix::fs::{Advice as FileAdvice, fadvise};

    use super::Pages;
    use crate::reader::map_file;

    const HUGE: u64 = super::HUGE_PAGE as u64;
    /// Smaller files are mapped as they are: few TLB misses, and a re-read would cost more.
    const MIN_BYTES: u64 = 64 << 20;

    pub(super) fn map_weights(file: &File) -> std::io::Result<(Mmap, Pages)> {
        let len = file.metadata()?.len();
        let small = |why| Ok((map_file(file)?, Pages::Small(why)));
        if super::huge_pages_off() {
            return small("BITNET_HUGE_PAGES=0");
        }
        if len < MIN_BYTES {
            return small("a small file");
        }
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if !thp.contains("[always]") && !thp.contains("[madvise]") {
            return small("transparent huge pages are off in /sys/kernel/mm/transparent_hugepage/enabled");
        }
        // Reading (and pinning in the cache) a file larger than the free memory would only evict
        // its own first part again.
        if mem_available().is_some_and(|m| len > m / 10 * 9) {
            return small("the file is larger than the available memory");
        }
        // The window: 4 MiB at a 2 MiB boundary of the file, in its middle (past the metadata).
        let offset = len / 2 / HUGE * HUGE;
        let window = NonZeroU64::new(2 * HUGE);
        if window_is_huge(file, offset, len)? {
            // The window alone can be wrong: a file read in part while memory was fragmented, or
            // written in part, maps the rest with 4 KiB pages.
            let map = populated(file)?;
            let small = small_share(&map);
            if small < super::REREAD_SHARE {
                return Ok((map, Pages::Huge { reread: None, small }));
            }
            // Dirty pages cannot be dropped: write them back first.
            let _ = file.sync_data();
        } else {
            // Dirty pages cannot be dropped: write them back first (a just-converted file).
            let _ = file.sync_data();
            let _ = fadvise(file, offset, window, FileAdvice::DontNeed);
            if !window_is_huge(file, offset, len)? {
                return Ok((populated(file)?, Pages::Small("the file system caches this file in small folios")));
            }
        }
        let start = Instant::now();
        let _ = fadvise(file, 0, None, FileAdvice::DontNeed);
        let map = populated(file)?;
        let reread = Some(start.elapsed());
        let small = small_share(&map);
        Ok((map, Pages::Huge { reread, small }))
    }

    /// The part of `map`'s whole, aligned 2 MiB ranges that is not mapped with 2 MiB pages (0 when
    /// smaps cannot tell).
    fn small_share(map: &Mmap) -> f64 {
        let (start, end) = (map.as_ptr() as usize, map.as_ptr() as usize + map.len());
        let whole = (end / super::HUGE_PAGE).saturating_sub(start.div_ceil(super::HUGE_PAGE)) * super::HUGE_PAGE;
        let huge = pmd_mapped_kib(start) << 10;
        if whole == 0 || huge == 0 {
            return 0.0;
        }
        1.0 - (huge as f64 / whole as f64).min(1.0)
    }

    /// The whole file mapped, advised for huge pages and read in (errors of the advice are
    /// ignored: an old kernel without `MADV_POPULATE_READ` pages in on first touch instead).
    fn populated(file: &File) -> std::io::Result<Mmap> {
        let map = map_file(file)?;
        let _ = map.advise(Advice::HugePage);
        let _ = map.advise(Advice::PopulateRead);
        Ok(map)
    }

    /// Whether the 4 MiB of `file` (`len` bytes) at `offset` (a 2 MiB boundary) map with a 2 MiB
    /// page once read.
    fn window_is_huge(file: &File, offset: u64, len: u64) -> std::io::Result<bool> {
        // The kernel places a mapping of 2 MiB or more of such a file at a 2 MiB-aligned address
        // (else nothing of it could map with 2 MiB pages, and the answer is rightly no).
        let len = (2 * HUGE).min(len - offset) as usize;
        // SAFETY: as `map_file`: read-only, private, never written through.
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file)? };
        let _ = map.advise(Advice::HugePage);
        let _ = map.advise(Advice::PopulateRead);
        Ok(pmd_mapped_kib(map.as_ptr() as usize) > 0)
    }

    /// `FilePmdMapped` of this process's mapping that starts at `start`, in KiB (0 if unknown).
    fn pmd_mapped_kib(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let mut inside = false;
        for line in smaps.lines() {
            // A mapping's first line: "7f0000000000-7f0000600000 r--p ..." (the others are
            // "Key: value").
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((from, to)) = first.split_once('-')
                && let (Ok(from), Ok(_)) = (usize::from_str_radix(from, 16), usize::from_str_radix(to, 16))
            {
                inside = from == start;
                continue;
            }
            if inside && let Some(v) = line.strip_prefix("FilePmdMapped:") {
                return v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            }
        }
        0
    }

    /// `MemAvailable` from /proc/meminfo, in bytes.
    fn mem_available() -> Option<u64> {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
        kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k << 10)
    }
}
