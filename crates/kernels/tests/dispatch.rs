//! Which kernel sets this CPU offers, printed for the test log, and (when the environment says
//! what to expect, as CI does under qemu with a chosen CPU model) that the dispatch picked it:
//! `BITNET_EXPECT_KERNEL=neon` under `qemu-aarch64 -cpu cortex-a72`, `neon-i8mm` under `-cpu max`.

use bitnet_kernels::Kernels;

#[test]
fn the_best_set_is_the_expected_one() {
    let names: Vec<&str> = Kernels::available().iter().map(Kernels::name).collect();
    eprintln!("kernel sets on this CPU: {names:?}");
    assert_eq!(names.last(), Some(&"scalar"), "the reference comes last");
    for name in &names {
        assert!(Kernels::KNOWN.contains(name), "{name} is missing from Kernels::KNOWN");
    }
    match std::env::var("BITNET_EXPECT_KERNEL") {
        Ok(want) if !want.is_empty() => assert_eq!(Kernels::best().name(), want, "available: {names:?}"),
        _ => eprintln!("BITNET_EXPECT_KERNEL unset: not checking which set is best"),
    }
}
