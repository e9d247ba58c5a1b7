//! The x86 lookup loops: `vpshufb` on 256 bits (AVX2) and 512 bits (AVX-512 BW).
//!
//! Both take the runs of consecutive sub-tiles of one column tile, their tables in the width's
//! layout and (TL2 triples) their sign bytes, and add the lookups into each sub-tile's 16-bit
//! sums, widened into its 32-bit lane-order sums at least every 32 vectors (each 16-bit lane
//! gains at most two table entries of |v| ≤ 384 per vector, so 32 vectors stay below 2^15).

use std::arch::x86_64::*;

use crate::geometry::{Kind, Plane};

/// Vectors between two widenings of the 16-bit sums.
const FLUSH: usize = 32;

/// How far ahead of the index bytes being read to prefetch, into L1 and into L2: the runs of a
/// row tile follow each other in the file, so the stream continues past the run (as in
/// kernels-x86's GEMVs, where these distances were measured).
const PREFETCH: usize = 2048;
const PREFETCH_L2: usize = 32 * 1024;

/// Prefetch hints for the stream at `p` (they read nothing and cannot fault, whatever the address).
#[inline(always)]
fn prefetch_ahead(p: *const u8) {
    // SAFETY: prefetches are hints that never fault; SSE is part of x86-64.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH).cast());
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH_L2).cast());
    }
}

/// Prefetch hints into L2 for every cache line of `s`.
pub(crate) fn prefetch_l2(s: &[u8]) {
    let p = s.as_ptr();
    for off in (0..s.len()).step_by(64).chain(s.len().checked_sub(1)) {
        // SAFETY: prefetches are hints that never fault; SSE is part of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(off).cast()) }
    }
}

/// [`prefetch_ahead`] for the sign plane, at the same distance in weights.
#[inline(always)]
fn prefetch_ahead_signs(p: *const u8) {
    // SAFETY: prefetches are hints that never fault; SSE is part of x86-64.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH / 4).cast());
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH_L2 / 4).cast());
    }
}

/// `x` as it is, hidden from LLVM: a byte sum of lookups stays a running sum. Left to itself LLVM
/// reassociates a group's adds into a tree of all its lookups, which needs more registers than
/// there are (the AVX2 pair walk spilled 19 vectors a group).
#[inline]
#[target_feature(enable = "avx2")]
fn settled(mut x: __m256i) -> __m256i {
    // SAFETY: the asm block is empty; it reads and writes only the register holding `x`.
    unsafe { std::arch::asm!("/* {0} */", inout(ymm_reg) x, options(pure, nomem, nostack, preserves_flags)) };
    x
}

/// Adds byte sums of base-31 entries (`q` and `p` planes, wrapping bytes whose true values fit
/// in i8) to a position's two 16-bit sums in lane order: `q + 31·p` per lane, by `vpmaddubsw` of
/// the interleaved bytes against (1, 31).
#[inline]
#[target_feature(enable = "avx2")]
fn widen31(sum: &mut [__m256i; 2], q: __m256i, p: __m256i) {
    let c131 = _mm256_set1_epi16(0x1F01);
    sum[0] = _mm256_add_epi16(sum[0], _mm256_maddubs_epi16(c131, _mm256_unpacklo_epi8(q, p)));
    sum[1] = _mm256_add_epi16(sum[1], _mm256_maddubs_epi16(c131, _mm256_unpackhi_epi8(q, p)));
}

/// AVX2 loops; only [`Avx2::detect`] builds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx2(());

impl Avx2 {
    pub fn detect() -> Option<Avx2> {
        is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }

    /// Decodes one run of `plane` into `panel` (see [`crate::panel`]), 8 rows per register, the
    /// codes by `vpermd` from the decode tables.
    pub(crate) fn decode(self, plane: &Plane, bytes: &[u8], signs: &[u8], panel: &mut [u8], cols: usize, col: usize) {
        assert!(col.is_multiple_of(4) && cols.is_multiple_of(4));
        assert!(panel.len() >= crate::panel::groups(plane) * cols / 4 * 64 && col + plane.bk <= cols);
        // SAFETY: the token proves AVX2; the asserts and the run's geometry bound every access
        // (each run writes 4-column groups col/4 .. (col + bk)/4 of its row groups).
        unsafe {
            if plane.kind == Kind::Triples {
                // Whole pairs of 6-column chunk pairs (BK is a multiple of 24).
                assert!(bytes.len() == plane.run_bytes() && bytes.len().is_multiple_of(128));
                assert!(signs.len() >= plane.run_sign_bytes());
                decode_triples256(bytes, signs, panel, cols, col);
            } else {
                decode_pairs256(plane, bytes, panel, cols, col);
            }
        }
    }

    /// The panel product (see [`crate::panel::gemm`]) with `vpmaddubsw` + `vpmaddwd`.
    pub(crate) fn gemm(self, panel: &[u8], groups: usize, cols: usize, acts: &[i8], dots: &mut [i32]) {
        crate::panel::check_gemm(panel, groups, cols, acts, dots);
        // SAFETY: the token proves AVX2; the checks bound every access.
        unsafe { gemm_panel256(panel, groups, cols, acts, dots) }
    }

    /// The runs of consecutive sub-tiles of one column tile (see [`crate::Tile`]).
    pub(crate) fn tile(self, sign: bool, v: usize, t: crate::Tile<'_>) {
        let n = t.run / 32;
        let subs = t.bytes.len() / t.run.max(1);
        assert!(t.run.is_multiple_of(32 * v) && t.bytes.len().is_multiple_of(t.run) && t.tables.len() >= n * 128);
        assert!(t.acc16.len() >= subs * 32 * v && t.acc32.len() >= subs * 32 * v);
        // TL2 column tiles are multiples of 24 columns (`tl::check_tl2`), so a run is whole groups
        // of four vectors and 32 sign bytes.
        assert!(!sign || (v == 1 && n.is_multiple_of(4) && t.srun >= n / 4 * 32 && t.signs.len() >= subs * t.srun));
        // SAFETY: the token proves AVX2; the asserts above bound every load and store.
        unsafe {
            match (sign, v) {
                (true, _) => tile256::<true, 1>(t),
                (false, 1) => tile256::<false, 1>(t),
                (false, 2) => tile256::<false, 2>(t),
                _ => unreachable!("periods are 32 or 64 bytes"),
            }
        }
    }
}

/// Adds `a`'s 16 lanes, widened, to `acc[0..16]`.
#[inline(always)]
unsafe fn widen_add256(a: __m256i, acc: *mut i32) {
    // SAFETY: the caller passes 16 valid i32 slots; AVX2 is enabled by the caller.
    unsafe {
        let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a));
        let hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(a));
        let p = acc.cast::<__m256i>();
        _mm256_storeu_si256(p, _mm256_add_epi32(_mm256_loadu_si256(p), lo));
        _mm256_storeu_si256(p.add(1), _mm256_add_epi32(_mm256_loadu_si256(p.add(1)), hi));
    }
}

#[target_feature(enable = "avx2")]
unsafe fn tile256<const SIGN: bool, const V: usize>(t: crate::Tile<'_>) {
    let n = t.run / 32;
    let m4 = _mm256_set1_epi8(0x0F);
    let tab = t.tables.as_ptr();
    // Vector `j`'s four table lookups, one per nibble and plane: (high nibble first plane, high
    // nibble second plane, low nibble first plane, low nibble second plane).
    macro_rules! lookups {
        ($b:expr, $j:expr) => {{
            let j = $j;
            let x = _mm256_loadu_si256($b.add(32 * j).cast());
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
            let lo = _mm256_and_si256(x, m4);
            let tj = tab.add(128 * j);
            (
                _mm256_shuffle_epi8(_mm256_loadu_si256(tj.cast()), hi),
                _mm256_shuffle_epi8(_mm256_loadu_si256(tj.add(32).cast()), hi),
                _mm256_shuffle_epi8(_mm256_loadu_si256(tj.add(64).cast()), lo),
                _mm256_shuffle_epi8(_mm256_loadu_si256(tj.add(96).cast()), lo),
            )
        }};
    }
    for sub in 0..t.bytes.len() / t.run {
        // SAFETY: the caller checked `subs` runs of index and sign bytes and 32·V 16- and 32-bit
        // sums per sub-tile.
        let (b, s, p16, p32) = unsafe {
            (
                t.bytes.as_ptr().add(sub * t.run),
                t.signs.as_ptr().wrapping_add(sub * t.srun),
                t.acc16.as_mut_ptr().add(sub * 32 * V),
                t.acc32.as_mut_ptr().add(sub * 32 * V),
            )
        };
        let mut sums = [[_mm256_setzero_si256(); 2]; V];
        for (q, sum) in sums.iter_mut().enumerate() {
            for (h, v) in sum.iter_mut().enumerate() {
                // SAFETY: within this sub-tile's 32·V 16-bit sums.
                *v = unsafe { _mm256_loadu_si256(p16.add(32 * q + 16 * h).cast()) };
            }
        }
        let mut i = 0;
        while i < n {
            // At most FLUSH vectors per position between widenings, in a loop of its own so
            // that the hot loop carries no widening branch.
            let end = n.min(i + FLUSH * V);
            if SIGN {
                // Four vectors (one 32-byte group of sign words) at a time. Vector j is 6-column
                // chunk j: triples 2j mod 8 (high nibble) and the next; the sign of (row r,
                // triple tr) is bit 15 − (2·tr + r/16) of word r mod 16. The tables are in base
                // 31 (`Split::Base31`): both planes are small signed bytes, so each lookup is
                // signed in place by `vpsignb` and a row's eight lookups of the group add up in
                // bytes (|Σq| ≤ 120, |Σp| ≤ 96) before one `vpmaddubsw` by (1, 31) per 16 rows
                // makes them 16-bit. Byte b of a vector is row b for b < 8 or b ≥ 24, b + 8 for
                // 8 ≤ b < 16, b − 8 for 16 ≤ b < 24 (the converter's swap), so each 128-bit lane
                // needs only its own eight words: a shuffle puts the high (triples 0–3) or low
                // (4–7) byte of the lane's words twice, the second copy (rows r ≥ 16) doubled so
                // that both halves find triple tr's bit at 7 − 2·tr, and a 16-bit shift by 2·tr
                // brings it to the byte's sign bit (bit 0, set, keeps the byte non-zero for
                // `vpsignb`; no sign lives there in either half).
                let ones8 = _mm256_set1_epi8(1);
                let hib = _mm256_setr_epi8(
                    1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11,
                    13, 15,
                );
                let lob = _mm256_setr_epi8(
                    0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10,
                    12, 14,
                );
                macro_rules! sign_bytes {
                    ($words:expr, $pick:expr) => {{
                        let mut x = _mm256_shuffle_epi8($words, $pick);
                        // Hidden from LLVM, which would otherwise double the words first and
                        // shuffle both copies (two more operations on the shuffle pipes). The
                        // template is empty: it reads and writes only this register.
                        std::arch::asm!("/* {0} */", inout(ymm_reg) x, options(pure, nomem, nostack, preserves_flags));
                        _mm256_or_si256(_mm256_blend_epi32::<0b1100_1100>(x, _mm256_add_epi8(x, x)), ones8)
                    }};
                }
                // Vector j's four lookups, signed: (first plane, second plane), each the high
                // nibble's lookup plus the low nibble's.
                macro_rules! signed_vector {
                    ($j:expr, $sh:expr, $sl:expr) => {{
                        let (hq, hp, lq, lp) = lookups!(b, $j);
                        let (sh, sl) = ($sh, $sl);
                        (
                            _mm256_add_epi8(_mm256_sign_epi8(hq, sh), _mm256_sign_epi8(lq, sl)),
                            _mm256_add_epi8(_mm256_sign_epi8(hp, sh), _mm256_sign_epi8(lp, sl)),
                        )
                    }};
                }
                while i < end {
                    // SAFETY: i + 3 < n; the group's 32 sign bytes (checked by the caller); 32·n
                    // index bytes and 128·n table bytes per run (checked by the caller).
                    unsafe {
                        prefetch_ahead(b.wrapping_add(32 * i));
                        prefetch_ahead(b.wrapping_add(32 * i + 64));
                        if i % 8 == 0 {
                            prefetch_ahead_signs(s.wrapping_add(8 * i));
                        }
                        let words = _mm256_loadu_si256(s.add(8 * i).cast());
                        let x = sign_bytes!(words, hib);
                        let y = sign_bytes!(words, lob);
                        let (q0, p0) = signed_vector!(i, x, _mm256_slli_epi16::<2>(x));
                        let (q1, p1) = signed_vector!(i + 1, _mm256_slli_epi16::<4>(x), _mm256_slli_epi16::<6>(x));
                        let (q2, p2) = signed_vector!(i + 2, y, _mm256_slli_epi16::<2>(y));
                        let (q3, p3) = signed_vector!(i + 3, _mm256_slli_epi16::<4>(y), _mm256_slli_epi16::<6>(y));
                        let q = _mm256_add_epi8(_mm256_add_epi8(q0, q1), _mm256_add_epi8(q2, q3));
                        let p = _mm256_add_epi8(_mm256_add_epi8(p0, p1), _mm256_add_epi8(p2, p3));
                        widen31(&mut sums[0], q, p);
                    }
                    i += 4;
                }
            }
            // Unsigned runs (TL1-style pairs, base-31 tables as the triples'): up to four steps
            // of a vector per position (eight lookups per row, |Σq| ≤ 120, |Σp| ≤ 64) add up in
            // bytes, then one `vpunpck` + `vpmaddubsw` per 16 rows widens them.
            // One group of `steps` vectors per position (whole groups take a literal 4, which
            // LLVM unrolls).
            macro_rules! unsigned_group {
                ($steps:expr) => {{
                    let steps = $steps;
                    let mut q = [_mm256_setzero_si256(); V];
                    let mut p = [_mm256_setzero_si256(); V];
                    for g in 0..steps {
                        for k in 0..V {
                            let j = i + g * V + k;
                            if j % 2 == 0 {
                                prefetch_ahead(b.wrapping_add(32 * j));
                            }
                            // SAFETY: j < n; the caller checked 32·n index bytes and 128·n table
                            // bytes per run.
                            unsafe {
                                let (hq, hp, lq, lp) = lookups!(b, j);
                                q[k] = settled(_mm256_add_epi8(q[k], _mm256_add_epi8(hq, lq)));
                                p[k] = settled(_mm256_add_epi8(p[k], _mm256_add_epi8(hp, lp)));
                            }
                        }
                    }
                    for (k, sum) in sums.iter_mut().enumerate() {
                        widen31(sum, q[k], p[k]);
                    }
                    i += steps * V;
                }};
            }
            while end - i >= 4 * V {
                unsigned_group!(4);
            }
            if i < end {
                unsigned_group!((end - i) / V);
            }
            if end < n || t.flush {
                for (q, sum) in sums.iter_mut().enumerate() {
                    for (h, v) in sum.iter_mut().enumerate() {
                        // SAFETY: within this sub-tile's 32·V 32-bit sums.
                        unsafe { widen_add256(*v, p32.add(32 * q + 16 * h)) };
                        *v = _mm256_setzero_si256();
                    }
                }
            }
        }
        for (q, sum) in sums.iter().enumerate() {
            for (h, v) in sum.iter().enumerate() {
                // SAFETY: within this sub-tile's 32·V 16-bit sums.
                unsafe { _mm256_storeu_si256(p16.add(32 * q + 16 * h).cast(), *v) };
            }
        }
    }
}

/// AVX-512 BW loops; only [`Avx512::detect`] builds one. `vnni` says whether the panel GEMM
/// (which needs `vpdpbusd`) runs too, `vbmi` whether TL2 triples are looked up by `vpermb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx512 {
    vnni: bool,
    vbmi: bool,
}

impl Avx512 {
    pub fn detect() -> Option<Avx512> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx2"))
        .then_some(Avx512 {
            vnni: is_x86_feature_detected!("avx512vnni"),
            vbmi: is_x86_feature_detected!("avx512vbmi"),
        })
    }

    /// Whether the TL2 triple walk looks signed entries up with `vpermb` (AVX-512 VBMI): its
    /// tables then hold negated copies (see `Layout` in lib.rs).
    pub fn vbmi(self) -> bool {
        self.vbmi
    }

    /// The same loops without `vpermb`.
    pub fn without_vbmi(self) -> Avx512 {
        Avx512 { vbmi: false, ..self }
    }

    /// Whether the many-token panel path runs (AVX-512 VNNI).
    pub fn panel(self) -> bool {
        self.vnni
    }

    /// Decodes one run of `plane` into `panel` (see [`crate::panel`]).
    pub(crate) fn decode(self, plane: &Plane, bytes: &[u8], signs: &[u8], panel: &mut [u8], cols: usize, col: usize) {
        assert!(self.vnni && col.is_multiple_of(4) && cols.is_multiple_of(4));
        let groups_needed = crate::panel::groups(plane);
        assert!(panel.len() >= groups_needed * cols / 4 * 64 && col + plane.bk <= cols);
        // SAFETY: the token proves AVX-512 F/BW/VNNI; the asserts and the run's geometry bound
        // every access (each run writes 4-column groups col/4 .. (col + bk)/4 of its row groups).
        unsafe {
            if plane.kind == Kind::Triples {
                assert!(bytes.len() == plane.run_bytes() && signs.len() >= plane.run_sign_bytes());
                if self.vbmi {
                    decode_triples_vbmi(bytes, signs, panel, cols, col);
                } else {
                    decode_triples(bytes, signs, panel, cols, col);
                }
            } else {
                decode_pairs(plane, bytes, panel, cols, col);
            }
        }
    }

    /// Writes one whole sub-tile's results for every token (see [`crate::panel::Place`]),
    /// permuted into row order in registers.
    pub(crate) fn place(self, p: &crate::panel::Place<'_>, dots: &[i32], out: &mut [f32]) {
        p.check(dots, out);
        // SAFETY: the token proves AVX-512 F; the check bounds every access.
        unsafe { place512(p, dots, out) }
    }

    /// The panel product (see [`crate::panel::gemm`]).
    pub(crate) fn gemm(self, panel: &[u8], groups: usize, cols: usize, acts: &[i8], dots: &mut [i32]) {
        assert!(self.vnni);
        crate::panel::check_gemm(panel, groups, cols, acts, dots);
        // SAFETY: the token proves AVX-512 F/VNNI; the checks bound every access.
        unsafe { gemm_panel(panel, groups, cols, acts, dots) }
    }

    /// The runs of consecutive sub-tiles of one column tile (see [`crate::Tile`]; periods of 32
    /// and 64 bytes both fit one vector).
    pub(crate) fn tile(self, sign: bool, t: crate::Tile<'_>) {
        let n = t.run / 64;
        let subs = t.bytes.len() / t.run.max(1);
        assert!(t.run.is_multiple_of(64) && t.bytes.len().is_multiple_of(t.run) && t.tables.len() >= n * 256);
        assert!(t.acc16.len() >= subs * 64 && t.acc32.len() >= subs * 64);
        // TL2 column tiles are multiples of 24 columns (`tl::check_tl2`): a run is an even number
        // of vectors, 32 sign bytes per two.
        assert!(!sign || (n.is_multiple_of(2) && t.srun >= n / 2 * 32 && t.signs.len() >= subs * t.srun));
        // SAFETY: the token proves AVX-512 F/BW and AVX2 (and VBMI where it says so); the asserts
        // bound every access.
        unsafe {
            match (sign, self.vbmi) {
                (true, true) => tile512_vbmi::<true>(t),
                (true, false) => tile512::<true>(t),
                (false, _) => tile512::<false>(t),
            }
        }
    }
}

/// Sub-tiles [`tile512`] walks side by side, so each table vector it loads serves that many runs.
const SIDE: usize = 2;

/// Per byte of a 512-bit vector, the bit of its sign byte (see [`side512`]) that holds the sign
/// of the triple its high (`hi`) or low nibble indexes: that triple is t = 0 (high) or 1 (low)
/// of the vector's four in lanes 0-1 and t + 2 in lanes 2-3, its bit 7 − 2·t − h, with h = 1 in
/// bytes 8-15 of a lane (rows 16-31 of the sub-tile).
const fn sign_tests(hi: bool) -> [u8; 64] {
    let mut out = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        let t = if hi { 0 } else { 1 } + if i < 32 { 0 } else { 2 };
        let h = if i % 16 >= 8 { 1 } else { 0 };
        out[i] = 1 << (7 - 2 * t - h);
        i += 1;
    }
    out
}

/// Per byte of a lane, the byte of the lane's eight sign words that holds its row's signs: the
/// high byte (triples 0-3 of the group, even vectors) or the low byte (triples 4-7, odd ones) of
/// word `b mod 8`.
const fn sign_picks(high: bool) -> [u8; 64] {
    let mut out = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        out[i] = (2 * (i % 8) + if high { 1 } else { 0 }) as u8;
        i += 1;
    }
    out
}

const SIGN_TESTS: [[u8; 64]; 2] = [sign_tests(true), sign_tests(false)];
const SIGN_PICKS: [[u8; 64]; 2] = [sign_picks(true), sign_picks(false)];

/// The VBMI walk's index bits 4-5 (sign, chunk) come from a row's sign byte (`SIGN_PICKS`),
/// `(byte & KEEP) | MARK`, rotated right per dword by `ROT` (high nibble, low nibble): the
/// triple's sign bit (7 − 2·t − h, as in `sign_tests`) lands on bit 4 and bit 5 becomes 0 in
/// lanes 0-1, 1 in lanes 2-3, because KEEP clears and MARK sets the bits that the rotations
/// bring to bit 5 (none of them a sign these bytes need). A dword's four bytes share a lane and
/// `h`, so a 32-bit rotation moves each byte's own bits; only rotations by 3 take bit 5 from the
/// next byte's bit 0, cleared in all of them.
const fn vbmi_byte(i: usize, mark: bool) -> u8 {
    let h = i % 16 >= 8;
    match (i < 32, h, mark) {
        (true, false, false) => !0x41,
        (true, true, false) => !0xA0,
        (false, _, false) => 0xFF,
        (true, _, true) => 0,
        (false, false, true) => 0x14,
        (false, true, true) => 0x0A,
    }
}

const fn vbmi_bytes(mark: bool) -> [u8; 64] {
    let mut out = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        out[i] = vbmi_byte(i, mark);
        i += 1;
    }
    out
}

/// Per dword, the right rotation bringing the sign of the high (`hi`) or low nibble's triple
/// to bit 4: lanes 0-1 by 3 − h (high) or 1 − h (low), lanes 2-3 left by 1 + h or 3 + h.
const fn vbmi_rotations(hi: bool) -> [u32; 16] {
    let mut out = [0u32; 16];
    let mut d = 0;
    while d < 16 {
        let h = if d % 4 >= 2 { 1 } else { 0 };
        out[d] = match (d < 8, hi) {
            (true, true) => 3 - h,
            (true, false) => 1 - h,
            (false, true) => 31 - h,
            (false, false) => 29 - h,
        };
        d += 1;
    }
    out
}

const VBMI_KEEP: [u8; 64] = vbmi_bytes(false);
const VBMI_MARK: [u8; 64] = vbmi_bytes(true);
const VBMI_ROT: [[u32; 16]; 2] = [vbmi_rotations(true), vbmi_rotations(false)];

/// [`settled`] on 512 bits.
#[inline]
#[target_feature(enable = "avx512f")]
fn settled512(mut x: __m512i) -> __m512i {
    // SAFETY: the asm block is empty; it reads and writes only the register holding `x`.
    unsafe { std::arch::asm!("/* {0} */", inout(zmm_reg) x, options(pure, nomem, nostack, preserves_flags)) };
    x
}

/// `x` with the bytes `k` selects negated (`zero` is zero): one masked `vpsubb`. Written as
/// `_mm512_mask_sub_epi8`, LLVM makes it a subtraction and a masked move (two operations, the
/// TL2 walk no faster than the 16-bit one it replaced).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn negate_where(mut x: __m512i, k: __mmask64, zero: __m512i) -> __m512i {
    // SAFETY: one register-only AVX-512 BW instruction (the caller's target features).
    unsafe {
        std::arch::asm!(
            "vpsubb {x}{{{k}}}, {z}, {x}",
            x = inout(zmm_reg) x,
            k = in(kreg) k,
            z = in(zmm_reg) zero,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    x
}

/// [`widen31`] on 512 bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn widen31_512(sum: &mut [__m512i; 2], q: __m512i, p: __m512i) {
    let c131 = _mm512_set1_epi16(0x1F01);
    sum[0] = _mm512_add_epi16(sum[0], _mm512_maddubs_epi16(c131, _mm512_unpacklo_epi8(q, p)));
    sum[1] = _mm512_add_epi16(sum[1], _mm512_maddubs_epi16(c131, _mm512_unpackhi_epi8(q, p)));
}

/// The 512-bit walk ([`side512`]'s doc) as two functions: one for AVX-512 BW, one that also
/// enables VBMI and looks TL2 triples up with `vpermb` (`$vbmi`). One body, so that both keep the
/// same loop; `$d` is `$` for the inner macro.
macro_rules! walk512 {
    ($d:tt, $tile:ident, $side:ident, $features:literal, $vbmi:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $tile<const SIGN: bool>(t: crate::Tile<'_>) {
            let subs = t.bytes.len() / t.run;
            let mut sub = 0;
            while sub + SIDE <= subs {
                // SAFETY: sub-tiles sub..sub + SIDE exist (the caller's checks hold for them).
                unsafe { $side::<SIGN, SIDE>(&t, sub) };
                sub += SIDE;
            }
            while sub < subs {
                // SAFETY: as above, for one sub-tile.
                unsafe { $side::<SIGN, 1>(&t, sub) };
                sub += 1;
            }
        }

        /// Sub-tiles `first..first + S` of a [`crate::Tile`], side by side: per vector position, the
        /// four table vectors are loaded once for all `S` runs. The tables are in base 31
        /// (`Split::Base31`, as the AVX2 walk's): a group of four vectors adds its eight lookups per
        /// row in bytes (|Σq| ≤ 120, |Σp| ≤ 96), then one `vpunpck` + `vpmaddubsw` by (1, 31) per
        /// interleave widens them. TL2 signs: AVX-512 has no `vpsignb`, so a byte is
        /// negated under a mask (`vptestmb` of its row's sign byte, one in-lane `vpshufb` of the group's
        /// words per vector) — on Intel's cores 512-bit shuffles have one port, so the walk keeps them
        /// few: 4 lookups, 1 sign shuffle, 2 tests and ½ unpack per vector, against 4 + 4 unpacks + 4
        /// tests in the 16-bit walk it replaced. With `$vbmi` (`side512_vbmi`), TL2 triples are
        /// looked up signed by `vpermb` instead: no tests, no negations (`VBMI_*`).
        #[target_feature(enable = $features)]
        unsafe fn $side<const SIGN: bool, const S: usize>(t: &crate::Tile<'_>, first: usize) {
            let n = t.run / 64;
            let m4 = _mm512_set1_epi8(0x0F);
            let zero = _mm512_setzero_si512();
            // SAFETY: the constants are 64 bytes each.
            let (tests, picks) = unsafe {
                (
                    [_mm512_loadu_si512(SIGN_TESTS[0].as_ptr().cast()), _mm512_loadu_si512(SIGN_TESTS[1].as_ptr().cast())],
                    [_mm512_loadu_si512(SIGN_PICKS[0].as_ptr().cast()), _mm512_loadu_si512(SIGN_PICKS[1].as_ptr().cast())],
                )
            };
            // SAFETY: the constants are 64 bytes each.
            let (vbmi_keep, vbmi_mark, vbmi_rot) = unsafe {
                (
                    _mm512_loadu_si512(VBMI_KEEP.as_ptr().cast()),
                    _mm512_loadu_si512(VBMI_MARK.as_ptr().cast()),
                    [_mm512_loadu_si512(VBMI_ROT[0].as_ptr().cast()), _mm512_loadu_si512(VBMI_ROT[1].as_ptr().cast())],
                )
            };
            let tab = t.tables.as_ptr();
            let mut b = [t.bytes.as_ptr(); S];
            let mut s = [t.signs.as_ptr(); S];
            let mut p16 = [t.acc16.as_ptr().cast_mut(); S];
            let mut p32 = [t.acc32.as_ptr().cast_mut(); S];
            let mut acc = [[zero; 2]; S];
            for k in 0..S {
                let sub = first + k;
                // SAFETY: the caller checked `subs` runs of index and sign bytes and 64 16- and 32-bit
                // sums per sub-tile; sub < subs.
                unsafe {
                    b[k] = t.bytes.as_ptr().add(sub * t.run);
                    s[k] = t.signs.as_ptr().wrapping_add(sub * t.srun);
                    p16[k] = t.acc16.as_ptr().add(sub * 64).cast_mut();
                    p32[k] = t.acc32.as_ptr().add(sub * 64).cast_mut();
                    acc[k] = [_mm512_loadu_si512(p16[k].cast()), _mm512_loadu_si512(p16[k].add(32).cast())];
                }
            }
            let mut j = 0;
            while j < n {
                // At most FLUSH vectors between widenings, in a loop of its own (no branch in the hot
                // loop).
                let end = n.min(j + FLUSH);
                // Vector j + g of every sub-tile, its lookups added to the group's byte sums `q` and
                // `p`. A group starts at an even vector (signed runs have an even count), so with `g` a
                // literal both vectors of a sign group read the same words, loaded once.
                macro_rules! vector {
                    ($d g:expr, $d q:ident, $d p:ident) => {{
                        let g = $d g;
                        let v = j + g;
                        // SAFETY: v < n; the caller checked 256·n table bytes.
                        let (t0, t1, t2, t3) = unsafe {
                            let tv = tab.add(256 * v);
                            (
                                _mm512_loadu_si512(tv.cast()),
                                _mm512_loadu_si512(tv.add(64).cast()),
                                _mm512_loadu_si512(tv.add(128).cast()),
                                _mm512_loadu_si512(tv.add(192).cast()),
                            )
                        };
                        for k in 0..S {
                            prefetch_ahead(b[k].wrapping_add(64 * v));
                            if SIGN && g == 0 {
                                // The sign plane is a second stream, a fifth the size of the first.
                                prefetch_ahead_signs(s[k].wrapping_add(16 * v));
                            }
                            // SAFETY: v < n; the caller checked 64·n index bytes per run and (signs)
                            // 32 bytes per 2 vectors; j is even.
                            unsafe {
                                let x = _mm512_loadu_si512(b[k].add(64 * v).cast());
                                // Each row's sign byte (TL2 triples).
                                let signs = if SIGN {
                                    let at = s[k].add(16 * j + 32 * (g / 2));
                                    let words = _mm512_broadcast_i64x4(_mm256_loadu_si256(at.cast()));
                                    _mm512_shuffle_epi8(words, picks[g % 2])
                                } else {
                                    zero
                                };
                                let (mut hq, mut hp, mut lq, mut lp) = if SIGN && $vbmi {
                                    // Signed lookups by `vpermb`: the index's magnitude from
                                    // the nibble, its sign (bit 4) and chunk (bit 5) from the
                                    // row's sign byte, marked and rotated (`VBMI_*`).
                                    let marked = _mm512_ternarylogic_epi32::<0xEA>(signs, vbmi_keep, vbmi_mark);
                                    let ih = _mm512_ternarylogic_epi32::<0xE4>(
                                        _mm512_srli_epi16::<4>(x),
                                        _mm512_rorv_epi32(marked, vbmi_rot[0]),
                                        m4,
                                    );
                                    let il = _mm512_ternarylogic_epi32::<0xE4>(x, _mm512_rorv_epi32(marked, vbmi_rot[1]), m4);
                                    (
                                        _mm512_permutexvar_epi8(ih, t0),
                                        _mm512_permutexvar_epi8(ih, t1),
                                        _mm512_permutexvar_epi8(il, t2),
                                        _mm512_permutexvar_epi8(il, t3),
                                    )
                                } else {
                                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(x), m4);
                                    let lo = _mm512_and_si512(x, m4);
                                    (
                                        _mm512_shuffle_epi8(t0, hi),
                                        _mm512_shuffle_epi8(t1, hi),
                                        _mm512_shuffle_epi8(t2, lo),
                                        _mm512_shuffle_epi8(t3, lo),
                                    )
                                };
                                if SIGN && !$vbmi {
                                    let kh = _mm512_test_epi8_mask(signs, tests[0]);
                                    let kl = _mm512_test_epi8_mask(signs, tests[1]);
                                    hq = negate_where(hq, kh, zero);
                                    hp = negate_where(hp, kh, zero);
                                    lq = negate_where(lq, kl, zero);
                                    lp = negate_where(lp, kl, zero);
                                }
                                $d q[k] = settled512(_mm512_add_epi8($d q[k], _mm512_add_epi8(hq, lq)));
                                $d p[k] = settled512(_mm512_add_epi8($d p[k], _mm512_add_epi8(hp, lp)));
                            }
                        }
                    }};
                }
                // Groups of four vectors (written out, so that LLVM sees the shared sign words), then
                // what is left before the widening.
                while j < end {
                    let mut q = [zero; S];
                    let mut p = [zero; S];
                    let steps = (end - j).min(4);
                    if steps == 4 {
                        vector!(0, q, p);
                        vector!(1, q, p);
                        vector!(2, q, p);
                        vector!(3, q, p);
                    } else {
                        for g in 0..steps {
                            vector!(g, q, p);
                        }
                    }
                    for k in 0..S {
                        widen31_512(&mut acc[k], q[k], p[k]);
                    }
                    j += steps;
                }
                if end < n || t.flush {
                    for k in 0..S {
                        for (h, a) in acc[k].iter_mut().enumerate() {
                            // SAFETY: within sub-tile first + k's 64 32-bit sums.
                            unsafe {
                                widen_add256(_mm512_castsi512_si256(*a), p32[k].add(32 * h));
                                widen_add256(_mm512_extracti64x4_epi64::<1>(*a), p32[k].add(32 * h + 16));
                            }
                            *a = zero;
                        }
                    }
                }
            }
            for k in 0..S {
                // SAFETY: within sub-tile first + k's 64 16-bit sums.
                unsafe {
                    _mm512_storeu_si512(p16[k].cast(), acc[k][0]);
                    _mm512_storeu_si512(p16[k].add(32).cast(), acc[k][1]);
                }
            }
        }
    };
}

walk512!($, tile512, side512, "avx512f,avx512bw,avx2", false);
walk512!($, tile512_vbmi, side512_vbmi, "avx512f,avx512bw,avx512vbmi,avx2", true);

/// Decodes a TL2 triple run: per pair of 6-column chunks and per lane (row group), the 16 rows'
/// four triples become `sign << 4 | magnitude` indices (the sign rotated into bit 4 from the
/// row's sign word), then codes by one `vpermi2d` each, then three 4-column dwords.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn decode_triples(bytes: &[u8], signs: &[u8], panel: &mut [u8], cols: usize, col: usize) {
    let t = &crate::panel::TRIPLES;
    // SAFETY: TRIPLES holds 32 u32 (two 64-byte halves).
    let (tlo, thi) = unsafe { (_mm512_loadu_si512(t.as_ptr().cast()), _mm512_loadu_si512(t.as_ptr().add(16).cast())) };
    let m4 = _mm512_set1_epi32(15);
    // Rotations bringing triple tr's sign bit (15 − 2·tr for rows 0-15, 14 − 2·tr for rows 16-31:
    // lanes 0-7 and 8-15 of a row group) to bit 4.
    let rot = |tr: i32| {
        _mm512_mask_blend_epi32(
            0xFF00,
            _mm512_set1_epi32((11 - 2 * tr).rem_euclid(32)),
            _mm512_set1_epi32((10 - 2 * tr).rem_euclid(32)),
        )
    };
    let rots = [[rot(0), rot(1), rot(2), rot(3)], [rot(4), rot(5), rot(6), rot(7)]];
    let per_row = cols / 4;
    let p = panel.as_mut_ptr();
    for cp in 0..bytes.len() / 64 {
        let r = &rots[cp % 2];
        for h in 0..2 {
            // SAFETY: cp < run / 64: 64 index bytes and (32 per 4 chunks) 16 sign bytes each.
            unsafe {
                let xa = _mm512_cvtepu8_epi32(_mm_loadu_si128(bytes.as_ptr().add(64 * cp + 16 * h).cast()));
                let xb = _mm512_cvtepu8_epi32(_mm_loadu_si128(bytes.as_ptr().add(64 * cp + 32 + 16 * h).cast()));
                let w16 = _mm_loadu_si128(signs.as_ptr().add(32 * (cp / 2) + 16 * h).cast());
                let w = _mm512_broadcast_i64x4(_mm256_cvtepu16_epi32(w16));
                let idx =
                    |mag: __m512i, rot: __m512i| _mm512_ternarylogic_epi32::<0xE4>(mag, _mm512_rorv_epi32(w, rot), m4);
                let p0 = _mm512_permutex2var_epi32(tlo, idx(_mm512_srli_epi32::<4>(xa), r[0]), thi);
                let p1 = _mm512_permutex2var_epi32(tlo, idx(xa, r[1]), thi);
                let p2 = _mm512_permutex2var_epi32(tlo, idx(_mm512_srli_epi32::<4>(xb), r[2]), thi);
                let p3 = _mm512_permutex2var_epi32(tlo, idx(xb, r[3]), thi);
                let d0 = _mm512_or_si512(p0, _mm512_slli_epi32::<24>(p1));
                let d1 = _mm512_or_si512(_mm512_srli_epi32::<8>(p1), _mm512_slli_epi32::<16>(p2));
                let d2 = _mm512_or_si512(_mm512_srli_epi32::<16>(p2), _mm512_slli_epi32::<8>(p3));
                let at = p.add((h * per_row + col / 4 + 3 * cp) * 64);
                _mm512_storeu_si512(at.cast(), d0);
                _mm512_storeu_si512(at.add(64).cast(), d1);
                _mm512_storeu_si512(at.add(128).cast(), d2);
            }
        }
    }
}

/// The VBMI triple decode's constants (see [`decode_triples_vbmi`]), per row group `h` or sign
/// word parity or 4-column group `m` of a 12-column pair of chunks:
/// * `rows[h]`: `vpermi2b` indices over (64 index bytes, 32 sign-word bytes) making row `k`'s
///   dword `[xa_k, xb_k, w_(k mod 8)]`: its byte in each half of the chunk pair and its sign word;
/// * `nibbles`: `vpmultishiftqb` controls bringing triple `j`'s magnitude nibble to byte
///   `4k + j`'s bits 0-3 (high, low nibble of `xa_k`, then of `xb_k`);
/// * `signs[parity]`: controls bringing its sign bit (word bit 15 − 2·tr for rows 0-7, 14 − 2·tr
///   for rows 8-15, tr = 4·parity + j) to bit 4;
/// * `picks[m]`, `digits[m]`: byte `4k + i` (column 4m + i of row k) takes triple (4m + i) / 3's
///   index, and digit (4m + i) mod 3 goes to its bits 5-6;
/// * `codes`: 128 entries `digit << 5 | sign << 4 | magnitude` → that digit's code
///   ([`crate::panel::TRIPLES`]).
struct VbmiDecode {
    rows: [[u8; 64]; 2],
    nibbles: [u8; 64],
    signs: [[u8; 64]; 2],
    picks: [[u8; 64]; 3],
    digits: [[u8; 64]; 3],
    codes: [[u8; 64]; 2],
}

const VBMI_DECODE: VbmiDecode = {
    let mut d = VbmiDecode {
        rows: [[0; 64]; 2],
        nibbles: [0; 64],
        signs: [[0; 64]; 2],
        picks: [[0; 64]; 3],
        digits: [[0; 64]; 3],
        codes: [[0; 64]; 2],
    };
    let mut b = 0;
    while b < 64 {
        let (k, j) = (b / 4, b % 4);
        let half = (k % 2 * 32) as u8;
        let mut h = 0;
        while h < 2 {
            d.rows[h][b] = match j {
                0 => 16 * h + k,
                1 => 32 + 16 * h + k,
                _ => 64 + 16 * h + 2 * (k % 8) + (j - 2),
            } as u8;
            let tr = 4 * h + j;
            let bit = if k < 8 { 15 - 2 * tr } else { 14 - 2 * tr };
            d.signs[h][b] = half + (16 + bit - 4) as u8;
            h += 1;
        }
        d.nibbles[b] = half + [4, 0, 12, 8][j];
        let mut m = 0;
        while m < 3 {
            let c = 4 * m + j;
            d.picks[m][b] = (4 * k + c / 3) as u8;
            d.digits[m][b] = ((c % 3) << 5) as u8;
            m += 1;
        }
        b += 1;
    }
    let mut e = 0;
    while e < 128 {
        let digit = e >> 5;
        if digit < 3 {
            d.codes[e / 64][e % 64] = (crate::panel::TRIPLES[e & 31] >> (8 * digit)) as u8;
        }
        e += 1;
    }
    d
};

/// [`decode_triples`] with VBMI byte permutes: per chunk pair one 64-byte load holds both row
/// groups' index bytes; per row group one `vpermi2b` gathers each row's two index bytes and sign
/// word into its dword, two `vpmultishiftqb` and one `vpternlogd` make each (row, triple) byte
/// `sign << 4 | magnitude`, and each 4-column output is one `vpermb` (the column's triple), one
/// `vpternlogd` (its digit) and one `vpermi2b` into the code table: 13 operations per 16 rows ×
/// 12 columns against ~27 (`vpermi2d` per triple, then shifts to merge dwords).
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,avx2")]
unsafe fn decode_triples_vbmi(bytes: &[u8], signs: &[u8], panel: &mut [u8], cols: usize, col: usize) {
    let c = &VBMI_DECODE;
    // SAFETY: every constant is 64 bytes.
    let ld = |v: &[u8; 64]| unsafe { _mm512_loadu_si512(v.as_ptr().cast()) };
    let (tlo, thi) = (ld(&c.codes[0]), ld(&c.codes[1]));
    let rows = [ld(&c.rows[0]), ld(&c.rows[1])];
    let nibbles = ld(&c.nibbles);
    let sign_at = [ld(&c.signs[0]), ld(&c.signs[1])];
    let picks = [ld(&c.picks[0]), ld(&c.picks[1]), ld(&c.picks[2])];
    let digits = [ld(&c.digits[0]), ld(&c.digits[1]), ld(&c.digits[2])];
    let (m4, m5) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x1F));
    let per_row = cols / 4;
    let p = panel.as_mut_ptr();
    for cp in 0..bytes.len() / 64 {
        // SAFETY: cp < run / 64: 64 index bytes and (32 per 4 chunks) 16 sign bytes each; the
        // caller checked the run's row groups and column groups inside the panel.
        unsafe {
            let a = _mm512_loadu_si512(bytes.as_ptr().add(64 * cp).cast());
            let w = _mm512_zextsi256_si512(_mm256_loadu_si256(signs.as_ptr().add(32 * (cp / 2)).cast()));
            for (h, &gather) in rows.iter().enumerate() {
                let r = _mm512_permutex2var_epi8(a, gather, w);
                let x = _mm512_ternarylogic_epi32::<0xE4>(
                    _mm512_multishift_epi64_epi8(nibbles, r),
                    _mm512_multishift_epi64_epi8(sign_at[cp % 2], r),
                    m4,
                );
                let at = p.add((h * per_row + col / 4 + 3 * cp) * 64);
                for (m, (&pick, &digit)) in picks.iter().zip(&digits).enumerate() {
                    let sel = _mm512_ternarylogic_epi32::<0xEA>(_mm512_permutexvar_epi8(pick, x), m5, digit);
                    _mm512_storeu_si512(at.add(64 * m).cast(), _mm512_permutex2var_epi8(tlo, sel, thi));
                }
            }
        }
    }
}

/// Decodes a pair run (TL1, TL2's trailing columns): each 16-byte lane is 16 rows × two pairs,
/// one 4-column dword per row.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn decode_pairs(plane: &Plane, bytes: &[u8], panel: &mut [u8], cols: usize, col: usize) {
    // SAFETY: PAIRS holds 16 u32.
    let tp = unsafe { _mm512_loadu_si512(crate::panel::PAIRS.as_ptr().cast()) };
    let per_row = cols / 4;
    let p = panel.as_mut_ptr();
    for lane in 0..bytes.len() / 16 {
        let (group, cg) = crate::panel::pair_lane(plane, 16 * lane);
        // SAFETY: lane < run / 16; the lane's row group and column group are inside the panel
        // (checked by the caller for this run).
        unsafe {
            let x = _mm512_cvtepu8_epi32(_mm_loadu_si128(bytes.as_ptr().add(16 * lane).cast()));
            let hi = _mm512_permutexvar_epi32(_mm512_srli_epi32::<4>(x), tp);
            let lo = _mm512_permutexvar_epi32(x, tp);
            let d = _mm512_or_si512(hi, _mm512_slli_epi32::<16>(lo));
            _mm512_storeu_si512(p.add((group * per_row + col / 4 + cg) * 64).cast(), d);
        }
    }
}

/// [`Avx512::place`]: per 16 rows one permutation of the token's dots (`vpermd` over 16,
/// `vpermi2d` over 32, two of them and a blend on index bit 5 over 64), then the reference's
/// subtraction, conversion, division and multiplication, and one store.
#[target_feature(enable = "avx512f")]
unsafe fn place512(p: &crate::panel::Place<'_>, dots: &[i32], out: &mut [f32]) {
    let order = p.order;
    let g = order.len();
    let chunks = g / 16;
    let mut idx = [_mm512_setzero_si512(); 4];
    let mut upper = [0u16; 4];
    for (c, i) in idx.iter_mut().enumerate().take(chunks) {
        // SAFETY: c < chunks = order.len() / 16.
        *i = unsafe { _mm512_loadu_si512(order.as_ptr().add(16 * c).cast()) };
        upper[c] = _mm512_test_epi32_mask(*i, _mm512_set1_epi32(32));
    }
    let ws = _mm512_set1_ps(p.scale);
    for (t, act) in p.acts.iter().enumerate() {
        // SAFETY: the caller checked g dots per token and rows at..at + g of each token's `len`.
        unsafe {
            let d = dots.as_ptr().add(t * g);
            let src = |c: usize| _mm512_loadu_si512(d.add(16 * c).cast());
            let o = out.as_mut_ptr().add(t * p.len + p.at);
            let (sum, s) = (_mm512_set1_epi32(act.sum), _mm512_set1_ps(act.scale));
            for c in 0..chunks {
                let v = match chunks {
                    1 => _mm512_permutexvar_epi32(idx[c], src(0)),
                    2 => _mm512_permutex2var_epi32(src(0), idx[c], src(1)),
                    _ => _mm512_mask_blend_epi32(
                        upper[c],
                        _mm512_permutex2var_epi32(src(0), idx[c], src(1)),
                        _mm512_permutex2var_epi32(src(2), idx[c], src(3)),
                    ),
                };
                let f = _mm512_mul_ps(_mm512_div_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, sum)), s), ws);
                _mm512_storeu_ps(o.add(16 * c), f);
            }
        }
    }
}

/// Tokens per pass over a panel row group (their sums stay in registers): 16 read the panel
/// half as often as 8 (2B-4T TL2 pp128 on a Xeon VM 65.3-66.6 -> 74.5-74.9 tokens/s); what is
/// left of a prompt goes 4 and then 1 at a time.
const TOKENS: usize = 16;

#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn gemm_panel(panel: &[u8], groups: usize, cols: usize, acts: &[i8], dots: &mut [i32]) {
    crate::panel::token_blocks(groups, acts.len() / cols, &[TOKENS, 4, 1], |g, t0, w| {
        // SAFETY: the tokens of the block exist, the caller checked the panel, acts and dots
        // sizes, and the enclosing function's target features hold.
        unsafe {
            match w {
                TOKENS => gemm_tokens::<TOKENS>(panel, g, groups, cols, acts, t0, dots),
                4 => gemm_tokens::<4>(panel, g, groups, cols, acts, t0, dots),
                _ => gemm_tokens::<1>(panel, g, groups, cols, acts, t0, dots),
            }
        }
    });
}

/// Tokens `t0..t0 + T` over row group `g`.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn gemm_tokens<const T: usize>(
    panel: &[u8],
    g: usize,
    groups: usize,
    cols: usize,
    acts: &[i8],
    t0: usize,
    dots: &mut [i32],
) {
    let mut acc = [_mm512_setzero_si512(); T];
    let per_row = cols / 4;
    // SAFETY: the caller checked per_row·64 bytes per row group, T tokens of
    // `cols` activations from t0, and 16 dots per (token, group).
    unsafe {
        let base = panel.as_ptr().add(g * per_row * 64);
        let a = acts.as_ptr().add(t0 * cols);
        for c in 0..per_row {
            let codes = _mm512_loadu_si512(base.add(64 * c).cast());
            for (t, s) in acc.iter_mut().enumerate() {
                let four = a.add(t * cols + 4 * c).cast::<i32>().read_unaligned();
                *s = _mm512_dpbusd_epi32(*s, codes, _mm512_set1_epi32(four));
            }
        }
        for (t, s) in acc.iter().enumerate() {
            _mm512_storeu_si512(dots.as_mut_ptr().add(((t0 + t) * groups + g) * 16).cast(), *s);
        }
    }
}

/// Entry `i & 15` of a 16-entry dword table held as two registers (entries 0-7, 8-15), for
/// eight indices at once: two `vpermd` and a blend on bit 3 (`vblendvps` reads each dword's top
/// bit). The TL2 triple decode took twice the samples with `vpgatherdd` from the table (Zen 3).
#[inline]
#[target_feature(enable = "avx2")]
fn lookup16((lo8, hi8): (__m256i, __m256i), i: __m256i) -> __m256i {
    _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(lo8, i)),
        _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(hi8, i)),
        _mm256_castsi256_ps(_mm256_slli_epi32::<28>(i)),
    ))
}

/// The first 16 entries of a decode table as [`lookup16`]'s two registers.
#[inline]
#[target_feature(enable = "avx2")]
fn table16(t: &[u32]) -> (__m256i, __m256i) {
    let t: &[u32; 16] = t[..16].try_into().expect("16 entries");
    // SAFETY: `t` holds 16 u32: two unaligned 32-byte loads.
    unsafe { (_mm256_loadu_si256(t.as_ptr().cast()), _mm256_loadu_si256(t.as_ptr().add(8).cast())) }
}

/// [`decode_triples`] on 256 bits: per pair of 6-column chunks, per row group and per half of
/// it (rows 0-15 or 16-31 of the sub-tile), 8 rows' four triples → codes → three 4-column
/// dwords. A triple's codes come from its magnitude by [`lookup16`] over the positive half of
/// [`crate::panel::TRIPLES`], and a negative sign turns each code `c` into `2 − c`
/// (negated digits): `vpgatherdd` from the whole table, with its index built by shifts of
/// register-held counts, made this decode a sixth of a TL2 prompt on Zen 3.
#[target_feature(enable = "avx2")]
unsafe fn decode_triples256(bytes: &[u8], signs: &[u8], panel: &mut [u8], cols: usize, col: usize) {
    // The positive half of the table (signs below 16).
    let positive = table16(&crate::panel::TRIPLES);
    let (m4, twos) = (_mm256_set1_epi32(15), _mm256_set1_epi32(0x0002_0202));
    let per_row = cols / 4;
    let p = panel.as_mut_ptr();
    // The codes of magnitudes `mag & 15`, and of the negated triple where `neg`'s top bit is
    // set. Codes are at most 2 a byte and the fourth byte is 0, so `2 − c` borrows nowhere.
    let codes = |mag: __m256i, neg: __m256i| {
        let pos = lookup16(positive, _mm256_and_si256(mag, m4));
        _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(pos),
            _mm256_castsi256_ps(_mm256_sub_epi32(twos, pos)),
            _mm256_castsi256_ps(neg),
        ))
    };
    // Chunk pair `cp` (triples `$tr0 ..= $tr0 + 3` of the sign words), row half `$half`: the
    // sign of triple tr is bit 15 − 2·tr − half of word 8h + i, moved to bit 31 by an
    // immediate shift.
    macro_rules! step {
        ($cp:expr, $h:expr, $tr0:literal, $half:literal) => {{
            let (cp, h) = ($cp, $h);
            // SAFETY: cp < run / 64: 64 index bytes and (32 per 4 chunks) sign bytes each; the
            // three stores are this row group's 4-column groups col/4 + 3·cp .. + 3 (checked
            // by the caller).
            unsafe {
                let at = 64 * cp + 16 * h + 8 * $half;
                let xa = _mm256_cvtepu8_epi32(_mm_loadl_epi64(bytes.as_ptr().add(at).cast()));
                let xb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(bytes.as_ptr().add(at + 32).cast()));
                let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(signs.as_ptr().add(32 * (cp / 2) + 16 * h).cast()));
                let p0 = codes(_mm256_srli_epi32::<4>(xa), _mm256_slli_epi32::<{ 16 + 2 * $tr0 + $half }>(w));
                let p1 = codes(xa, _mm256_slli_epi32::<{ 18 + 2 * $tr0 + $half }>(w));
                let p2 = codes(_mm256_srli_epi32::<4>(xb), _mm256_slli_epi32::<{ 20 + 2 * $tr0 + $half }>(w));
                let p3 = codes(xb, _mm256_slli_epi32::<{ 22 + 2 * $tr0 + $half }>(w));
                let d0 = _mm256_or_si256(p0, _mm256_slli_epi32::<24>(p1));
                let d1 = _mm256_or_si256(_mm256_srli_epi32::<8>(p1), _mm256_slli_epi32::<16>(p2));
                let d2 = _mm256_or_si256(_mm256_srli_epi32::<16>(p2), _mm256_slli_epi32::<8>(p3));
                let out = p.add((h * per_row + col / 4 + 3 * cp) * 64 + 32 * $half);
                _mm256_storeu_si256(out.cast(), d0);
                _mm256_storeu_si256(out.add(64).cast(), d1);
                _mm256_storeu_si256(out.add(128).cast(), d2);
            }
        }};
    }
    // A run is whole pairs of chunk pairs (BK is a multiple of 24: 2·BK/24 chunk pairs).
    for cp in (0..bytes.len() / 64).step_by(2) {
        for h in 0..2 {
            step!(cp, h, 0, 0);
            step!(cp, h, 0, 1);
            step!(cp + 1, h, 4, 0);
            step!(cp + 1, h, 4, 1);
        }
    }
}

/// [`decode_pairs`] on 256 bits: 8 rows × two pairs per step, codes by [`lookup16`].
#[target_feature(enable = "avx2")]
unsafe fn decode_pairs256(plane: &Plane, bytes: &[u8], panel: &mut [u8], cols: usize, col: usize) {
    let t = table16(&crate::panel::PAIRS);
    let m4 = _mm256_set1_epi32(15);
    let per_row = cols / 4;
    let p = panel.as_mut_ptr();
    for lane in 0..bytes.len() / 16 {
        let (group, cg) = crate::panel::pair_lane(plane, 16 * lane);
        for half in 0..2 {
            // SAFETY: lane < run / 16; the lane's row group and column group are inside the
            // panel (checked by the caller).
            unsafe {
                let x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(bytes.as_ptr().add(16 * lane + 8 * half).cast()));
                let hi = lookup16(t, _mm256_srli_epi32::<4>(x));
                let lo = lookup16(t, _mm256_and_si256(x, m4));
                let d = _mm256_or_si256(hi, _mm256_slli_epi32::<16>(lo));
                _mm256_storeu_si256(p.add((group * per_row + col / 4 + cg) * 64 + 32 * half).cast(), d);
            }
        }
    }
}

/// Tokens per pass over a panel row group on 256 bits.
const TOKENS256: usize = 4;

#[target_feature(enable = "avx2")]
unsafe fn gemm_panel256(panel: &[u8], groups: usize, cols: usize, acts: &[i8], dots: &mut [i32]) {
    crate::panel::token_blocks(groups, acts.len() / cols, &[TOKENS256, 1], |g, t0, w| {
        // SAFETY: the tokens of the block exist, the caller checked the panel, acts and dots
        // sizes, and the enclosing function's target features hold.
        unsafe {
            if w == TOKENS256 {
                gemm_tokens256::<TOKENS256>(panel, g, groups, cols, acts, t0, dots)
            } else {
                gemm_tokens256::<1>(panel, g, groups, cols, acts, t0, dots)
            }
        }
    });
}

/// Tokens `t0..t0 + T` over row group `g` (rows 0-7 and 8-15 in two registers).
#[target_feature(enable = "avx2")]
unsafe fn gemm_tokens256<const T: usize>(
    panel: &[u8],
    g: usize,
    groups: usize,
    cols: usize,
    acts: &[i8],
    t0: usize,
    dots: &mut [i32],
) {
    let ones = _mm256_set1_epi16(1);
    let per_row = cols / 4;
    // SAFETY: the caller checked per_row·64 bytes per row group, T tokens of `cols`
    // activations from t0, and 16 dots per (token, group).
    unsafe {
        let base = panel.as_ptr().add(g * per_row * 64);
        let a = acts.as_ptr().add(t0 * cols);
        let d = dots.as_mut_ptr();
        let out = |t: usize| d.add(((t0 + t) * groups + g) * 16).cast::<__m256i>();
        for t in 0..T {
            _mm256_storeu_si256(out(t), _mm256_setzero_si256());
            _mm256_storeu_si256(out(t).add(1), _mm256_setzero_si256());
        }
        // The i16 pair sums (codes ≤ 2, activations in [−128, 127]: each in [−512, 508]) add up
        // in i16 for 32 column groups (≤ 16384 in magnitude), then widen once into the dots:
        // one `vpmaddwd` per 32 `vpmaddubsw` instead of one each (the 32-bit sums stay in
        // memory, so the sixteen registers hold the 16-bit ones).
        let mut c = 0;
        while c < per_row {
            let end = per_row.min(c + 32);
            let mut acc = [[_mm256_setzero_si256(); 2]; T];
            for c in c..end {
                let c0 = _mm256_loadu_si256(base.add(64 * c).cast());
                let c1 = _mm256_loadu_si256(base.add(64 * c + 32).cast());
                for (t, s) in acc.iter_mut().enumerate() {
                    let four = _mm256_set1_epi32(a.add(t * cols + 4 * c).cast::<i32>().read_unaligned());
                    s[0] = _mm256_add_epi16(s[0], _mm256_maddubs_epi16(c0, four));
                    s[1] = _mm256_add_epi16(s[1], _mm256_maddubs_epi16(c1, four));
                }
            }
            for (t, s) in acc.iter().enumerate() {
                for (h, &v) in s.iter().enumerate() {
                    let p = out(t).add(h);
                    _mm256_storeu_si256(p, _mm256_add_epi32(_mm256_loadu_si256(p), _mm256_madd_epi16(v, ones)));
                }
            }
            c = end;
        }
    }
}
