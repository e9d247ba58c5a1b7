//! `map_weights`: whatever pages the system gives, the map holds the file's bytes, and a small
//! file is mapped as it is.

use bitnet_format::{Pages, map_weights};

fn scratch(name: &str, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let path = std::env::temp_dir().join(format!("bitnet-format-pages-{}-{name}", std::process::id()));
    let bytes: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect();
    // In 4 KiB writes, as a downloader or a converter writing piece by piece would: the page cache
    // then holds the file in small folios.
    let mut f = std::fs::File::create(&path).unwrap();
    for piece in bytes.chunks(4096) {
        std::io::Write::write_all(&mut f, piece).unwrap();
    }
    (path, bytes)
}

#[test]
fn a_large_file_maps_whole_with_a_stated_page_size() {
    // Past the 64 MiB below which files are mapped as they are, and not a multiple of 2 MiB.
    let (path, bytes) = scratch("large", (72 << 20) + 4093);
    let file = std::fs::File::open(&path).unwrap();
    let (map, pages) = map_weights(&file).unwrap();
    assert!(map[..] == bytes[..], "the map differs from the file");
    // Just written, so the page cache holds it in small folios: on Linux with transparent huge
    // pages and a file system with large folios it is re-read into 2 MiB pages; anywhere else a
    // reason is given.
    match &pages {
        Pages::Huge { .. } => {}
        Pages::Small(why) => assert!(!why.is_empty()),
    }
    eprintln!("{pages}");
    // A second load finds it as the first left it, without another re-read.
    let (again, pages2) = map_weights(&file).unwrap();
    assert!(again[..] == bytes[..]);
    if let Pages::Huge { .. } = pages {
        assert!(matches!(pages2, Pages::Huge { reread: None, .. }), "{pages2}");
    }
    drop((map, again));
    std::fs::remove_file(&path).unwrap();
}

/// A file the page cache holds partly in small folios (here all but the 4 MiB window
/// `map_weights` checks, where writes leave small folios, as on the kernels measured) is read
/// again whole, and the load states any share still in 4 KiB pages.
#[cfg(target_os = "linux")]
#[test]
fn a_file_partly_in_small_folios_states_its_share() {
    let (path, bytes) = scratch("mixed", 72 << 20);
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    let window = (bytes.len() as u64 / 2) / (2 << 20) * (2 << 20);
    let _ = rustix::fs::fadvise(&file, window, std::num::NonZeroU64::new(4 << 20), rustix::fs::Advice::DontNeed);
    let (map, pages) = map_weights(&file).unwrap();
    assert!(map[..] == bytes[..], "the map differs from the file");
    eprintln!("{pages}");
    if let Pages::Huge { reread, small } = &pages {
        assert!((0.0..=1.0).contains(small), "{small}");
        // Re-read unless it was whole in 2 MiB pages (or nearly) from the start.
        assert!(reread.is_some() || *small < 0.05, "{pages}");
        assert_eq!(pages.to_string().contains("4 KiB pages"), *small >= 0.01, "{pages}");
    }
    drop(map);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_load_message_states_a_share_in_small_pages() {
    let all = Pages::Huge { reread: None, small: 0.0 };
    assert_eq!(all.to_string(), "weights in 2 MiB pages");
    let some = Pages::Huge { reread: None, small: 0.17 };
    assert!(some.to_string().starts_with("weights in 2 MiB pages, except 17% in 4 KiB pages"), "{some}");
    assert!(some.to_string().contains("compact_memory"), "{some}");
    let noise = Pages::Huge { reread: Some(std::time::Duration::from_millis(1500)), small: 0.001 };
    assert_eq!(noise.to_string(), "weights re-read from disk into 2 MiB pages in 1.50 s (once per file)");
    let fragmented = Pages::Huge { reread: Some(std::time::Duration::from_secs(9)), small: 0.08 };
    assert!(
        fragmented.to_string().starts_with("weights re-read from disk into 2 MiB pages in 9.00 s, except 8%"),
        "{fragmented}"
    );
}

#[test]
fn a_small_file_is_mapped_as_it_is() {
    let (path, bytes) = scratch("small", 1 << 20);
    let (map, pages) = map_weights(&std::fs::File::open(&path).unwrap()).unwrap();
    assert!(map[..] == bytes[..]);
    assert!(matches!(pages, Pages::Small(_)), "{pages}");
    std::fs::remove_file(&path).unwrap();
}

/// Pages given back (weights repacked at load) read the same bytes again afterwards.
#[test]
fn released_pages_read_back_the_same_bytes() {
    let path = std::env::temp_dir().join(format!("bitnet-format-release-{}.gguf", std::process::id()));
    let values: Vec<u8> = (0..(1u32 << 18)).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let mut b = bitnet_format::GgufBuilder::new();
    b.metadata_mut().insert("general.architecture", "llama");
    b.add_tensor("w", bitnet_format::TensorType::F32, &[1 << 18]).unwrap();
    let mut w = b.start(std::io::BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
    w.write_tensor("w", &values).unwrap();
    w.finish().unwrap();
    let file = bitnet_format::GgufFile::open(&path).unwrap();
    let before = file.bytes().to_vec();
    let start = file.data_offset() as usize;
    // Unaligned ends, the whole file, and ranges past its end.
    for range in [start + 100..start + 300_000, 0..before.len(), before.len() - 10..before.len() + 4096] {
        file.release_pages(range.clone());
        assert!(file.bytes() == &before[..], "{range:?}");
    }
    drop(file);
    std::fs::remove_file(&path).unwrap();
}
