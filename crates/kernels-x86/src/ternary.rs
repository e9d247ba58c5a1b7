//! x86 decoding of 2-bit codes; the instruction-set-independent half of the ternary kernels is
//! `bitnet_quant::isa`.

/// `decode(v, codes)`: the four 2-bit code groups of one vector of packed codes, in element
/// order (I2_S keeps group `g` at shift `6 − 2g`, TQ2_0 at `2g`), for an instruction set's vector
/// type and intrinsics. TQ1_0's base-3 codes are decoded by `x256::tq1_codes` instead.
#[cfg(target_arch = "x86_64")]
macro_rules! decode_2bit {
    ($feat:literal, $vec:ty, $set1_epi8:ident, $srli_epi16:ident, $and:ident) => {
        #[target_feature(enable = $feat)]
        fn decode(v: $vec, codes: Codes) -> [$vec; 4] {
            let m = $set1_epi8(3);
            let (s2, s4, s6) = ($srli_epi16::<2>(v), $srli_epi16::<4>(v), $srli_epi16::<6>(v));
            match codes {
                Codes::I2s | Codes::I2sArm => [$and(s6, m), $and(s4, m), $and(s2, m), $and(v, m)],
                Codes::Tq2 => [$and(v, m), $and(s2, m), $and(s4, m), $and(s6, m)],
                Codes::Tq1 => unreachable!("TQ1_0 is decoded by x256::tq1_codes"),
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use decode_2bit;
