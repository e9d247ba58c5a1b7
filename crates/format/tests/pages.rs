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
        assert_eq!(pages2, Pages::Huge { reread: None });
    }
    drop((map, again));
    std::fs::remove_file(&path).unwrap();
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
