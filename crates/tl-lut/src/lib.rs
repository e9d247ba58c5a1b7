//! Lookup-table kernels (T-MAC's method) for bitnet.cpp's TL1 and TL2 ternary types, reading
//! the file's bytes in place for any tiling: no per-model code generation, no repacking.
//!
//! A TL weight index stands for a group of weights (TL1: a pair, 4 bits; TL2: a triple, a 4-bit
//! magnitude and a sign bit, 1.67 bits per weight). For one token, every group of activations
//! gets a 16-entry table of the signed sums its indices can stand for; then the product of a row
//! with the token is a sum of table entries, looked up 16, 32 or 64 rows at a time with one
//! `tbl` (NEON), `vpshufb` (AVX2), `vpshufb` on 512 bits (AVX-512 BW) or `vpermb` (AVX-512 VBMI,
//! TL2 triples, sign included). Sums of three int8
//! values need 16 bits, so each table is kept as two byte planes (low and high bytes), looked up
//! separately and interleaved back to 16 bits (the SIMD walks split entries in base 31
//! instead, [`geometry::Split`]); sums are exact, so results equal the scalar reference's
//! (`bitnet_quant::ScalarKernel`) bit for bit.
//!
//! bitnet.cpp's TL files lay weights out in tiles for its 128/256-bit shuffles (see
//! [`geometry`]); the kernels read that order as it is, with the tiling the file records (or
//! bitnet.cpp's preset for the shape). Two or more tokens take the panel path where there is one
//! (AVX-512 VNNI, AVX2, NEON with dotprod and the portable loops: `panel.rs`): each sub-tile is
//! decoded once into 2-bit codes and every token multiplies them with integer dot products, as
//! the I2_S GEMMs do; plain NEON walks the tables once per token.
//!
//! ```
//! use bitnet_quant::{TernaryKernel, TernaryFormat, TlTiling, PackedTernary, QuantizedActivations};
//! let t = TlTiling { bm: 32, bk: 96, bmm: 32 };
//! let m = bitnet_quant::TernaryMatrix::new(32, 256, (0..32 * 256).map(|i| (i % 3) as i8 - 1).collect()).unwrap();
//! let bytes = bitnet_quant::tl::pack_tl2(&m, t).unwrap();
//! let w = PackedTernary::new(TernaryFormat::Tl2(t), 32, 256, &bytes, Some(0.5)).unwrap();
//! let x = QuantizedActivations::quantize(&[0.25; 256], 256).unwrap();
//! let mut out = vec![0.0; 32];
//! bitnet_tl_lut::Lut::best().gemm(&w, &x, &mut out).unwrap();
//! ```

pub mod geometry;
#[cfg(target_arch = "aarch64")]
mod neon;
mod panel;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::Cell;
use std::ops::Range;

use bitnet_quant::{PackedTernary, QuantError, QuantizedActivations, ScalarKernel, TernaryFormat, TernaryKernel};

use geometry::{Geometry, Kind, Plane};

/// Which loops run the table lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// Plain Rust, one index at a time (any CPU).
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2(x86::Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(x86::Avx512),
    #[cfg(target_arch = "aarch64")]
    Neon(neon::Neon),
}

/// A TL1/TL2 kernel: the lookup loops of one instruction set. Other formats go to the scalar
/// reference (kernel sets route only TL1/TL2 here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lut(Isa);

impl Lut {
    /// The portable loops (every CPU).
    pub fn portable() -> Lut {
        Lut(Isa::Portable)
    }

    /// Every variant this CPU runs, fastest first, the portable one last.
    pub fn available() -> Vec<Lut> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(t) = x86::Avx512::detect() {
                out.push(Lut(Isa::Avx512(t)));
                // The BW-only walk too (it runs TL2 triples without `vpermb`), so that tests
                // and benchmarks reach it on CPUs that also have VBMI.
                if t.vbmi() {
                    out.push(Lut(Isa::Avx512(t.without_vbmi())));
                }
            }
            if let Some(t) = x86::Avx2::detect() {
                out.push(Lut(Isa::Avx2(t)));
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if let Some(t) = neon::Neon::detect() {
                out.push(Lut(Isa::Neon(t)));
            }
        }
        out.push(Lut::portable());
        out
    }

    /// The fastest variant this CPU runs.
    pub fn best() -> Lut {
        Lut::available().swap_remove(0)
    }

    /// The variant for a kernel set of this name ("avx512-vnni" → AVX-512 (with VBMI where the
    /// CPU has it), "avx2" and "avx-vnni*" → AVX2, "neon*" → NEON), if this CPU runs it.
    pub fn for_set(set: &str) -> Option<Lut> {
        let want = if set.starts_with("avx512") {
            "lut-avx512"
        } else if set == "avx2" || set.starts_with("avx-vnni") {
            "lut-avx2"
        } else if set.starts_with("neon") {
            "lut-neon"
        } else {
            return None;
        };
        // The first of a family is its fastest ("lut-avx512vbmi" before "lut-avx512").
        Lut::available().into_iter().find(|l| l.name().starts_with(want))
    }

    /// Bytes per vector of the lookups (the table layout depends on it).
    fn width(self) -> usize {
        match self.0 {
            Isa::Portable => 16,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => 32,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => 64,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(_) => 16,
        }
    }

    /// The tables this variant's loops read. The SIMD walks keep them in base 31 (see
    /// [`geometry::Split::Base31`]); the portable one in low and high bytes. The AVX-512 VBMI
    /// walk looks TL2 triples up with `vpermb`, sign included (see [`Layout`]).
    fn layout(self) -> Layout {
        let (how, negated) = match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => (geometry::Split::Base31, false),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(i) => (geometry::Split::Base31, i.vbmi()),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(_) => (geometry::Split::Base31, false),
            _ => (geometry::Split::Bytes, false),
        };
        (self.width(), how, negated)
    }

    /// Adds the lookups of one column tile's runs to their sub-tiles' sums.
    fn tile(self, plane: &Plane, t: Tile<'_>) {
        let sign = plane.kind == Kind::Triples;
        let v = positions(plane, self.width());
        match self.0 {
            Isa::Portable => portable_tile(plane, t),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(i) => i.tile(sign, v, t),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(i) => i.tile(sign, t),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(i) => i.tile(sign, v, t),
        }
    }
}

/// The runs of consecutive sub-tiles of one column tile, as a lookup loop takes them.
pub(crate) struct Tile<'a> {
    /// The runs' index bytes, `run` each.
    bytes: &'a [u8],
    run: usize,
    /// The column tile's tables (the same for every sub-tile).
    tables: &'a [u8],
    /// The runs' sign bytes, `srun` each (TL2 triples; empty otherwise).
    signs: &'a [u8],
    srun: usize,
    /// Per sub-tile, `positions · width` 16-bit sums carried between column tiles (lane order).
    acc16: &'a mut [i16],
    /// Per sub-tile, the 32-bit sums (lane order).
    acc32: &'a mut [i32],
    /// Widen the 16-bit sums into the 32-bit ones after this tile.
    flush: bool,
}

/// Vector positions per period: lookups at these positions fill different rows.
fn positions(plane: &Plane, width: usize) -> usize {
    plane.period().div_ceil(width).max(1)
}

/// The sub-tile row of every lane-order accumulator entry a `width`-byte loop fills: entry
/// `q·width + h·width/2 + e` is 16-bit element `e` of the low (`h` = 0) or high (`h` = 1) byte
/// interleave of the vector at period position `q`; element `e` comes from byte
/// `16·(e / 8) + 8·h + e mod 8` of that vector (x86 `unpacklo/hi_epi8`, NEON `zip1/zip2`).
fn lane_rows(plane: &Plane, width: usize) -> Vec<usize> {
    let v = positions(plane, width);
    let mut rows = Vec::with_capacity(v * width);
    for q in 0..v {
        for h in 0..2 {
            for e in 0..width / 2 {
                let byte = q * width + 16 * (e / 8) + 8 * h + e % 8;
                rows.push(plane.row_of(byte));
            }
        }
    }
    rows
}

/// One token's tables for `plane` in the layout a `width`-byte loop reads: per column tile, per
/// vector of a run, four `width`-byte vectors (high-nibble first plane, high-nibble second plane,
/// low-nibble first plane, low-nibble second plane: low and high bytes, or what `how` says), each
/// one 16-byte table per 16-byte lane; with `negated`, a triple plane's odd lanes hold the
/// negated table of the lane before (see [`Layout`]).
/// `planes` is scratch for the byte planes of every group.
fn build_tables(plane: &Plane, a: &[i8], (width, how, negated): Layout, planes: &mut Vec<[u8; 32]>, out: &mut Vec<u8>) {
    let negated = negated && plane.kind == Kind::Triples;
    let g = plane.group();
    let cols = plane.ktiles * plane.bk;
    geometry::byte_planes(plane.kind, &a[plane.col0..plane.col0 + cols], how, planes);
    // The groups each 16-byte lane of a run indexes (the same in every column tile).
    let lanes: Vec<(usize, usize)> = (0..plane.run_bytes() / 16).map(|l| plane.groups_of(16 * l)).collect();
    let per_tile = plane.run_bytes() * 4;
    let per_kt = plane.bk / g;
    out.clear();
    out.resize(plane.ktiles * per_tile, 0);
    for (kt, tiles) in out.chunks_exact_mut(per_tile).enumerate() {
        let tile_planes = &planes[kt * per_kt..(kt + 1) * per_kt];
        for (v, dst) in tiles.chunks_exact_mut(4 * width).enumerate() {
            for lane in 0..width / 16 {
                let (gh, gl) = lanes[v * width / 16 + lane];
                let at = lane * 16;
                let (h, l) = (&tile_planes[gh], &tile_planes[gl]);
                dst[at..at + 16].copy_from_slice(&h[..16]);
                dst[width + at..width + at + 16].copy_from_slice(&h[16..]);
                dst[2 * width + at..2 * width + at + 16].copy_from_slice(&l[..16]);
                dst[3 * width + at..3 * width + at + 16].copy_from_slice(&l[16..]);
                if negated && lane % 2 == 1 {
                    // Both lanes of a pair index the same 6-column chunk (rows 0-15, 16-31).
                    assert_eq!(lanes[v * width / 16 + lane - 1], (gh, gl), "a triple chunk spans two lanes");
                    for k in 0..4 {
                        dst[k * width + at..k * width + at + 16].iter_mut().for_each(|b| *b = b.wrapping_neg());
                    }
                }
            }
        }
    }
}

/// What a plane's tables depend on besides the activations and the layout: (kind, first column,
/// column tile, column tiles).
type PlaneKey = (Kind, usize, usize, usize);

/// What a loop's tables look like: its vector width in bytes, how it splits table entries into
/// byte planes, and whether a TL2 triple plane's odd 16-byte lanes hold the negated tables of
/// the even ones. A 64-byte vector of triple indices holds two 6-column chunks (lanes 0-1, 2-3),
/// so its four lanes need only two tables: with their negations in the other two, one `vpermb`
/// over the 64 bytes looks up a signed entry, its index `chunk << 5 | sign << 4 | magnitude`.
type Layout = (usize, geometry::Split, bool);

/// One thread's tables for the last activations it saw: matrices that share an input (q/k/v,
/// gate/up) build them once.
#[derive(Default)]
struct TableCache {
    /// The activations and the layout the tables are for.
    acts: Vec<i8>,
    layout: Option<Layout>,
    /// Tables per plane shape ([`PlaneKey`]) → tables.
    tables: Vec<(PlaneKey, Vec<u8>)>,
    planes: Vec<[u8; 32]>,
}

impl TableCache {
    /// The index in `tables` of `plane`'s tables for activations `a` in `layout`, built if not
    /// cached.
    fn get(&mut self, plane: &Plane, a: &[i8], layout: Layout) -> usize {
        if self.acts != a || self.layout != Some(layout) {
            self.acts.clear();
            self.acts.extend_from_slice(a);
            self.layout = Some(layout);
            self.tables.clear();
        }
        let key = (plane.kind, plane.col0, plane.bk, plane.ktiles);
        if let Some(i) = self.tables.iter().position(|(k, _)| *k == key) {
            return i;
        }
        let mut t = Vec::new();
        build_tables(plane, a, layout, &mut self.planes, &mut t);
        self.tables.push((key, t));
        self.tables.len() - 1
    }
}

/// The portable loop: the same tables and lane order as the vector loops, one byte at a time,
/// straight into the 32-bit sums.
fn portable_tile(plane: &Plane, t: Tile<'_>) {
    const W: usize = 16;
    let v = positions(plane, W);
    let subs = t.bytes.len() / t.run;
    for sub in 0..subs {
        let bytes = &t.bytes[sub * t.run..(sub + 1) * t.run];
        let signs = &t.signs[(sub * t.srun).min(t.signs.len())..];
        let acc = &mut t.acc32[sub * v * W..(sub + 1) * v * W];
        for (n, vec) in bytes.chunks_exact(W).enumerate() {
            let tab = &t.tables[n * 4 * W..(n + 1) * 4 * W];
            let q = n % v;
            for (i, &b) in vec.iter().enumerate() {
                let lookup = |k: usize, idx: u8| {
                    i16::from_le_bytes([tab[2 * k * W + idx as usize], tab[(2 * k + 1) * W + idx as usize]])
                };
                let (h, e) = (i / 8, i % 8);
                let mut sum = 0i32;
                for (k, idx) in [(0, b >> 4), (1, b & 15)] {
                    let mut val = i32::from(lookup(k, idx));
                    if plane.kind == Kind::Triples {
                        let row = plane.row_of(n * W + i);
                        let (gh, gl) = plane.groups_of(n * W + i);
                        if Plane::negative(signs, row, if k == 0 { gh } else { gl }) {
                            val = -val;
                        }
                    }
                    sum += val;
                }
                acc[q * W + h * W / 2 + e] += sum;
            }
        }
    }
}

/// Tokens from which the panel path is taken where there is one.
const PANEL_TOKENS: usize = 2;

thread_local! {
    /// This thread's tables, kept between calls.
    static TABLES: Cell<Option<Box<TableCache>>> = const { Cell::new(None) };
}

fn check(w: &PackedTernary<'_>, x: &QuantizedActivations, rows: &Range<usize>, out: &[f32]) -> Result<(), QuantError> {
    // Fields are public, so a hand-built PackedTernary is re-checked like `new` checks it (the
    // walk indexes by the byte count `new` checks).
    PackedTernary::new(w.format, w.rows, w.cols, w.data, w.scale)?;
    bitnet_quant::isa::check(w, x, rows, out)
}

impl Lut {
    /// Whether many tokens take the panel path (decode once, then integer dot products per
    /// token) rather than one table walk per token: the portable loops (its reference), AVX-512
    /// VNNI, AVX2 and NEON with dotprod.
    fn panel(self) -> bool {
        match self.0 {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(i) => i.panel(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => true,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(i) => i.panel(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Many tokens: per sub-tile, decode every plane's runs into a panel, then multiply every
    /// token over it.
    fn panel_gemm_rows(
        self,
        geo: &Geometry,
        w: &PackedTernary<'_>,
        x: &QuantizedActivations,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let scale = w.scale.unwrap_or(1.0);
        let (len, cols, n) = (rows.len(), geo.cols, x.len());
        let first = &geo.planes[0];
        // Every plane of a tensor has the same sub-tile rows and row groups (TL2's two planes
        // share the 32-row order).
        let (sub, groups) = (first.sub, panel::groups(first));
        // The sub-tile row of each (row group, lane) dot, from the first run byte of each group.
        let group_rows: Vec<usize> = (0..groups)
            .flat_map(|g| {
                let lane = (0..first.period() / 16).find(|&l| panel::row_group(first, 16 * l) == g).unwrap_or(0);
                (0..16).map(move |k| first.row_of(16 * lane + k))
            })
            .collect();
        // The lane of each sub-tile row: `order[r]` is the dot index (g·16 + k) holding row r.
        let mut order = vec![0u32; group_rows.len()];
        for (l, &r) in group_rows.iter().enumerate() {
            order[r] = l as u32;
        }
        let mut panel = vec![0u8; groups * cols / 4 * 64];
        let mut dots = vec![0i32; n * groups * 16];
        let mut vals = vec![0f32; groups * 16];
        // The sub-tiles in the range, as (row tile, sub-tile), and each one's runs: (index bytes,
        // sign bytes, first column) per plane and column tile.
        let tiles: Vec<(usize, usize)> = (rows.start / geo.bm..rows.end.div_ceil(geo.bm))
            .flat_map(|rt| {
                let base = rt * geo.bm;
                let subs = (rows.start.max(base) - base) / sub..(rows.end.min(base + geo.bm) - base).div_ceil(sub);
                subs.map(move |st| (rt, st))
            })
            .collect();
        let runs = |rt: usize, st: usize| {
            geo.planes.iter().flat_map(move |plane| {
                let (run, srun) = (plane.run_bytes(), plane.run_sign_bytes());
                (0..plane.ktiles).map(move |kt| {
                    let i = plane.run_index(rt, kt, st);
                    let bytes = &w.data[plane.offset + i * run..plane.offset + (i + 1) * run];
                    let signs = &w.data[plane.signs + i * srun..plane.signs + (i + 1) * srun];
                    (plane, bytes, signs, plane.col0 + kt * plane.bk)
                })
            })
        };
        for (ti, &(rt, st)) in tiles.iter().enumerate() {
            let base = rt * geo.bm;
            for (plane, bytes, signs, col) in runs(rt, st) {
                match self.0 {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512(i) if i.panel() => i.decode(plane, bytes, signs, &mut panel, cols, col),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2(i) => i.decode(plane, bytes, signs, &mut panel, cols, col),
                    #[cfg(target_arch = "aarch64")]
                    Isa::Neon(i) if i.panel() => i.decode(plane, bytes, signs, &mut panel, cols, col),
                    _ => panel::decode_run(plane, bytes, signs, &mut panel, cols, col),
                }
            }
            // Each run is read once, by its decode: the next sub-tile's runs (a column tile's
            // sub-tiles apart in the file) are requested while this one's products run.
            // Unrequested, the decode waited on memory for most of its time (Xeon, perf).
            if let Some(&(rt, st)) = tiles.get(ti + 1) {
                for (_, bytes, signs, _) in runs(rt, st) {
                    prefetch_l2(bytes);
                    prefetch_l2(signs);
                }
            }
            match self.0 {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512(i) if i.panel() => i.gemm(&panel, groups, cols, &x.codes, &mut dots),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2(i) => i.gemm(&panel, groups, cols, &x.codes, &mut dots),
                #[cfg(target_arch = "aarch64")]
                Isa::Neon(i) if i.panel() => i.gemm(&panel, groups, cols, &x.codes, &mut dots),
                _ => panel::gemm(&panel, groups, cols, &x.codes, &mut dots),
            }
            let first = base + st * sub;
            if rows.start <= first && first + sub <= rows.end {
                let p = panel::Place { order: &order, acts: &x.rows, scale, len, at: first - rows.start };
                match self.0 {
                    // Permuted into row order in registers, two or four stores per token
                    // (placed one value at a time, the results were 11% of a TL2 prompt on a
                    // Xeon).
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512(i) => i.place(&p, &dots, out),
                    _ => panel::place(&p, &dots, out, &mut vals),
                }
            } else {
                // A sub-tile cut by the row range (only at its ends).
                for (t, act) in x.rows.iter().enumerate() {
                    let d = &dots[t * groups * 16..(t + 1) * groups * 16];
                    let o = &mut out[t * len..(t + 1) * len];
                    for (&r, &dot) in group_rows.iter().zip(d) {
                        if rows.contains(&(first + r)) {
                            o[first + r - rows.start] = panel::result(dot, act, scale);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn tl_gemm_rows(
        self,
        geo: &Geometry,
        w: &PackedTernary<'_>,
        x: &QuantizedActivations,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let scale = w.scale.unwrap_or(1.0);
        let layout = self.layout();
        let width = layout.0;
        let len = rows.len();
        if len == 0 {
            return Ok(());
        }
        let maps: Vec<Vec<usize>> = geo.planes.iter().map(|p| lane_rows(p, width)).collect();
        // Planes whose lane order is row order (TL2 on 256 bits): their sums are added as they
        // are (the scatter by the map was 3–4% of a TL2 GEMV on AVX2).
        let in_order: Vec<bool> = maps
            .iter()
            .zip(&geo.planes)
            .map(|(m, p)| m.len() == p.sub && m.iter().enumerate().all(|(k, &r)| k == r))
            .collect();
        let acc_len = width * geo.planes.iter().map(|p| positions(p, width)).max().unwrap_or(1);
        let mut cache = TABLES.take().unwrap_or_default();
        let subs_max = geo.planes.iter().map(|p| p.subs()).max().unwrap_or(1);
        let mut acc32 = vec![0i32; subs_max * acc_len];
        let mut acc16 = vec![0i16; subs_max * acc_len];
        let mut dots = vec![0i32; geo.bm];
        for (t, act) in x.rows.iter().enumerate() {
            let a = x.row(t);
            let at: Vec<usize> = geo.planes.iter().map(|p| cache.get(p, a, layout)).collect();
            for rt in rows.start / geo.bm..rows.end.div_ceil(geo.bm) {
                let base = rt * geo.bm;
                dots.iter_mut().for_each(|d| *d = 0);
                for (((plane, map), &at), &in_order) in geo.planes.iter().zip(&maps).zip(&at).zip(&in_order) {
                    let tab = &cache.tables[at].1;
                    let (run, srun) = (plane.run_bytes(), plane.run_sign_bytes());
                    let v = positions(plane, width);
                    let per_sub = v * width;
                    // Sub-tiles that hold a row of the range.
                    let subs = (rows.start.max(base) - base) / plane.sub
                        ..(rows.end.min(base + geo.bm) - base).div_ceil(plane.sub);
                    let (s0, ns) = (subs.start, subs.len());
                    acc32[..ns * per_sub].fill(0);
                    acc16[..ns * per_sub].fill(0);
                    // Column tiles whose 16-bit sums fit between two widenings (≤ 32 vectors per
                    // position; a longer run is widened inside the loop).
                    let per_tile = (run / width / v).max(1);
                    let between = (32 / per_tile).max(1);
                    // Column tile by column tile, the sub-tiles inside: the file's order, so the
                    // weights stream front to back.
                    for kt in 0..plane.ktiles {
                        let first = plane.run_index(rt, kt, s0);
                        self.tile(
                            plane,
                            Tile {
                                bytes: &w.data[plane.offset + first * run..plane.offset + (first + ns) * run],
                                run,
                                tables: &tab[kt * run * 4..(kt + 1) * run * 4],
                                signs: &w.data[plane.signs + first * srun..plane.signs + (first + ns) * srun],
                                srun,
                                acc16: &mut acc16[..ns * per_sub],
                                acc32: &mut acc32[..ns * per_sub],
                                flush: (kt + 1) % between == 0 || kt + 1 == plane.ktiles,
                            },
                        );
                    }
                    for (i, st) in subs.enumerate() {
                        let acc = &acc32[i * per_sub..(i + 1) * per_sub];
                        if in_order {
                            let d = &mut dots[st * plane.sub..(st + 1) * plane.sub];
                            d.iter_mut().zip(acc).for_each(|(d, &v)| *d += v);
                        } else {
                            for (&r, &v) in map.iter().zip(acc) {
                                dots[st * plane.sub + r] += v;
                            }
                        }
                    }
                }
                for r in rows.start.max(base)..rows.end.min(base + geo.bm) {
                    out[t * len + r - rows.start] = dots[r - base] as f32 / act.scale * scale;
                }
            }
        }
        TABLES.set(Some(cache));
        Ok(())
    }

    /// "lut-avx512vbmi", "lut-avx512", "lut-avx2", "lut-neon" or "lut-portable".
    pub fn name(self) -> &'static str {
        match self.0 {
            Isa::Portable => "lut-portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => "lut-avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(i) if i.vbmi() => "lut-avx512vbmi",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => "lut-avx512",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(_) => "lut-neon",
        }
    }
}

impl TernaryKernel for Lut {
    fn name(&self) -> &'static str {
        Lut::name(*self)
    }

    fn supports(&self, format: TernaryFormat) -> bool {
        matches!(format, TernaryFormat::Tl1(_) | TernaryFormat::Tl2(_))
    }

    fn gemm_rows(
        &self,
        w: &PackedTernary<'_>,
        x: &QuantizedActivations,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let Some(geo) = Geometry::of(w.format, w.rows, w.cols) else {
            return ScalarKernel.gemm_rows(w, x, rows, out);
        };
        let geo = geo?;
        check(w, x, &rows, out)?;
        if x.len() >= PANEL_TOKENS && self.panel() {
            self.panel_gemm_rows(&geo, w, x, rows, out)
        } else {
            self.tl_gemm_rows(&geo, w, x, rows, out)
        }
    }
}

/// Asks for `bytes` to be brought into L2 (a hint; x86 only, nothing elsewhere).
fn prefetch_l2(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    x86::prefetch_l2(bytes);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_quant::{ActScale, TlTiling, tl};

    /// One token at a time (the table walk) on every variant, whole matrices and row ranges
    /// that cut row tiles and sub-tiles: the same results as the reference.
    #[test]
    fn walks_over_row_ranges_match_the_reference() {
        let mut s = 0x9E37_79B9u64;
        let mut rnd = |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        for (tl2, t, rows, cols) in [
            (true, TlTiling { bm: 64, bk: 48, bmm: 32 }, 192, 48 * 9 + 32),
            (false, TlTiling { bm: 64, bk: 32, bmm: 32 }, 128, 32 * 11),
            (false, TlTiling { bm: 64, bk: 64, bmm: 64 }, 128, 64 * 5),
        ] {
            let m = bitnet_quant::TernaryMatrix::new(rows, cols, (0..rows * cols).map(|_| rnd(3) as i8 - 1).collect())
                .unwrap();
            let (format, bytes) = if tl2 {
                (TernaryFormat::Tl2(t), tl::pack_tl2(&m, t).unwrap())
            } else {
                (TernaryFormat::Tl1(t), tl::pack_tl1(&m, t).unwrap())
            };
            let w = PackedTernary::new(format, rows, cols, &bytes, Some(0.75)).unwrap();
            // One token (the table walk) and three (the panel path where a variant has one).
            for n in [1, 3] {
                let codes: Vec<i8> = (0..n * cols).map(|_| rnd(256) as u8 as i8).collect();
                let acts = codes
                    .chunks(cols)
                    .map(|c| ActScale { scale: 3.0, sum: c.iter().map(|&v| i32::from(v)).sum() })
                    .collect();
                let x = QuantizedActivations { cols, codes, rows: acts };
                for range in [0..rows, 32..rows - 32, 40..41, 60..70] {
                    let mut want = vec![0f32; n * range.len()];
                    ScalarKernel.gemm_rows(&w, &x, range.clone(), &mut want).unwrap();
                    for l in Lut::available() {
                        let mut got = vec![f32::NAN; n * range.len()];
                        l.gemm_rows(&w, &x, range.clone(), &mut got).unwrap();
                        assert_eq!(got, want, "{} {format:?} rows {range:?}, {n} tokens", l.name());
                    }
                }
            }
        }
    }
}
