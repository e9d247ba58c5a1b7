//! Any byte string given to the GGUF reader gives Ok or a typed error: no panic, no overflow, no
//! unbounded allocation. A file that parses must also hand out every tensor's bytes and survive a
//! write/read round trip.
#![no_main]

use bitnet_format::{Gguf, GgufBuilder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = Gguf::parse(data) else { return };
    let mut b = GgufBuilder::new();
    b.version(file.version()).unwrap();
    b.with_metadata(file.metadata().clone());
    for t in file.tensors() {
        b.add_tensor(&t.name, t.ty, &t.shape).unwrap();
    }
    let mut w = b.start(Vec::new()).unwrap();
    for t in file.tensors() {
        w.write_tensor(&t.name, file.tensor_data(t)).unwrap();
    }
    let bytes = w.finish().unwrap();
    let again = Gguf::parse_with(bytes.as_slice(), bitnet_format::ReadOptions { dialect: Some(file.dialect()) })
        .expect("what we write parses");
    // Debug, not ==: a NaN in the metadata must compare equal to itself.
    let entries = |g: &Gguf<_>| format!("{:?}", g.metadata().iter().collect::<Vec<_>>());
    assert_eq!(entries(&again), entries(&file));
    assert_eq!(again.tensors().len(), file.tensors().len());
    for (a, b) in again.tensors().iter().zip(file.tensors()) {
        assert_eq!((&a.name, &a.shape, a.ty), (&b.name, &b.shape, b.ty));
        assert_eq!(again.tensor_data(a), file.tensor_data(b));
    }
});
