//! The instruction sets the native kernels are written for, and the proof that the CPU has one.
//!
//! A kernel compiled for an instruction set (`#[target_feature]`) is undefined behaviour on a
//! CPU without it. Each instruction set therefore has a zero-sized token ([`Avx512`],
//! [`Avx2Fma`]) with a private field: only its `detect`, after checking the CPU's features at
//! run time, can make one. Every kernel entry point takes a token, so no kernel is reachable
//! without its feature check; [`Kernel`] is what the convolution driver is generic over.
//!
//! The int8 kernels ([`super::int8`]) are [`Kernel`]s too, with tokens of their own
//! ([`Avx2Int8`], [`Avx512Vnni`]): [`Int8Kernel`] names them for the public API.

use std::fmt;

/// The instruction set the native engine's kernels use.
///
/// [`Isa::detect`] picks the fastest one the CPU runs; the `flex` device uses it unless
/// [`BackboneBuilder::engine`](crate::BackboneBuilder::engine) names another
/// ([`Engine::Native`](crate::Engine::Native)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// AVX-512F (Intel since Skylake-SP / Ice Lake, AMD since Zen 4): a 14 x 32 register tile
    /// in 28 of the 32 512-bit registers.
    Avx512,
    /// AVX2 and FMA (Intel since Haswell, AMD since Zen), for CPUs without AVX-512: a 14 x 16
    /// tile, computed in groups of at most 5 x 16 in the 16 256-bit registers.
    Avx2,
}

impl Isa {
    /// Every instruction set, fastest first.
    pub const ALL: [Isa; 2] = [Isa::Avx512, Isa::Avx2];

    /// The fastest instruction set this CPU runs, or `None` (not x86-64, or no AVX2 and FMA).
    pub fn detect() -> Option<Isa> {
        Self::ALL.into_iter().find(|isa| isa.is_available())
    }

    /// Whether this CPU runs the instruction set.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Avx512 => Avx512::detect().is_some(),
            Isa::Avx2 => Avx2Fma::detect().is_some(),
        }
    }

    /// The instruction set named `name` as [`Display`](fmt::Display) writes it (`avx512`,
    /// `avx2`), or `None`.
    pub fn from_name(name: &str) -> Option<Isa> {
        Self::ALL.into_iter().find(|isa| isa.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
        }
    }

    /// Why the CPU cannot run it, for [`TapError::EngineUnavailable`](crate::TapError).
    pub(crate) fn missing(self) -> &'static str {
        match self {
            Isa::Avx512 => "this CPU lacks AVX-512F",
            Isa::Avx2 => "this CPU lacks AVX2 and FMA",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The private field of the tokens: a unit where the tokens can exist (x86-64), uninhabited
/// elsewhere, so that code there can prove a token-taking path unreachable (`never`). Private
/// to this module: no other code can make a token, or turn one token into another.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proof(());

/// See the x86-64 definition.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Proof {}

/// Proof that the CPU has AVX-512F. Only [`Avx512::detect`] creates one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512(Proof);

/// Proof that the CPU has AVX2 and FMA. Only [`Avx2Fma::detect`] creates one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Fma(Proof);

impl Avx512 {
    /// The token, when the CPU has AVX-512F.
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f").then_some(Self(Proof(())))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Avx512 {
    /// A token cannot exist here: code that holds one is unreachable.
    pub fn never(self) -> ! {
        match self.0 {}
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Avx2Fma {
    /// A token cannot exist here: code that holds one is unreachable.
    pub fn never(self) -> ! {
        match self.0 {}
    }
}

/// Proof that the CPU has AVX2 and FMA, as the token of the AVX2 int8 kernel
/// ([`super::int8`]), with proof of AVX-VNNI where the CPU has it (then the kernel multiplies
/// and adds with `vpdpbusd`). Made only from an [`Avx2Fma`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Int8 {
    isa: Avx2Fma,
    vnni: Option<AvxVnni>,
}

/// Proof that the CPU has AVX2 and FMA, as the token of the kernel on words of two `i16`
/// (`vpmaddwd`), which runs the matrix products of the int8 network's 3x3s by Winograd's
/// F(2x2, 3x3) on AVX2 without AVX-VNNI ([`super::winograd`]). Made only from an
/// [`Avx2Fma`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Pairs(Avx2Fma);

impl From<Avx2Fma> for Avx2Pairs {
    fn from(isa: Avx2Fma) -> Self {
        Self(isa)
    }
}

impl Avx2Pairs {
    /// The AVX2 token it wraps.
    pub fn avx2(self) -> Avx2Fma {
        self.0
    }
}

/// Proof that the CPU has AVX-VNNI (`vpdpbusd` on 256-bit vectors, VEX-encoded). Only
/// [`Avx2Int8`]'s `From` creates one, after checking (and, in tests, its EVEX stand-in).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AvxVnni(Proof, VnniEncoding);

/// How the AVX-VNNI kernel encodes `vpdpbusd` on 256-bit vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VnniEncoding {
    /// VEX: AVX-VNNI, the kernel's real encoding.
    Vex,
    /// EVEX: AVX512-VNNI with AVX512VL, the same operation on the same registers. Tests run
    /// the AVX-VNNI kernel with it on CPUs that have AVX512-VNNI but not AVX-VNNI
    /// ([`Avx2Int8::evex_stand_in`]): all of the kernel but the instruction's encoding.
    #[cfg(test)]
    Evex,
}

impl AvxVnni {
    /// The encoding of `vpdpbusd` the kernel uses.
    pub fn encoding(self) -> VnniEncoding {
        self.1
    }
}

impl From<Avx2Fma> for Avx2Int8 {
    fn from(isa: Avx2Fma) -> Self {
        #[cfg(target_arch = "x86_64")]
        let vnni = std::arch::is_x86_feature_detected!("avxvnni")
            .then_some(AvxVnni(Proof(()), VnniEncoding::Vex));
        #[cfg(not(target_arch = "x86_64"))]
        let vnni = None;
        Self { isa, vnni }
    }
}

impl Avx2Int8 {
    /// The proof of AVX-VNNI, where the CPU has it.
    pub fn vnni(self) -> Option<AvxVnni> {
        self.vnni
    }

    /// The same token without AVX-VNNI: the `vpmaddubsw` kernel, for tests.
    #[cfg(test)]
    pub fn without_vnni(self) -> Self {
        Self { vnni: None, ..self }
    }

    /// The AVX-VNNI kernel with EVEX-encoded `vpdpbusd` instead of VEX-encoded, for tests on
    /// a CPU with AVX512-VNNI (which the token proves) and AVX512VL (checked here) but
    /// without AVX-VNNI: the instruction is the same operation on the same 256-bit registers,
    /// so the tests run everything of the AVX-VNNI kernel but its encoding. `None` without
    /// AVX512VL.
    #[cfg(test)]
    pub fn evex_stand_in(self, _: Avx512Vnni) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        let vnni = std::arch::is_x86_feature_detected!("avx512vl")
            .then_some(AvxVnni(Proof(()), VnniEncoding::Evex));
        #[cfg(not(target_arch = "x86_64"))]
        let vnni = None;
        vnni.map(|v| Self {
            vnni: Some(v),
            ..self
        })
    }
}

/// Proof that the CPU has AVX-512F, AVX512-VNNI (`vpdpbusd` on 512-bit vectors) and AVX2 with
/// FMA (for the float passes the int8 network shares with the AVX2 kernels). Only
/// [`Avx512Vnni::detect`] creates one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512Vnni {
    isa: Avx512,
    avx2: Avx2Fma,
}

impl Avx512Vnni {
    /// The token, when the CPU has AVX-512F, AVX512-VNNI, AVX2 and FMA.
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            let isa = Avx512::detect()?;
            let avx2 = Avx2Fma::detect()?;
            std::arch::is_x86_feature_detected!("avx512vnni").then_some(Self { isa, avx2 })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// The AVX-512F token it wraps, for the float kernels of the same network.
    pub fn fp32(self) -> Avx512 {
        self.isa
    }
}

/// The int8 kernels: the public name of the one a network runs ([`Int8Kernel`]), and the float
/// passes they share (quantising runs with AVX2 on every CPU that has an int8 kernel).
pub(crate) trait Int8: Kernel {
    /// The kernel, as the public API names it.
    fn name(self) -> Int8Kernel;
    /// The AVX2 token, for the quantising pass (and, for the AVX2 int8 kernel, its float
    /// kernel).
    fn avx2(self) -> Avx2Fma;
    /// The most that two weight codes of the same sign may add up to in magnitude where the
    /// kernel multiplies them as a pair, or `None` where nothing limits them below 127 each.
    /// `vpdpbusd` (AVX-VNNI, AVX512-VNNI) sums four products of `u8` by `i8` into an `i32`
    /// exactly. AVX2's `vpmaddubsw` sums two, of input channels `2j` and `2j + 1` at one tap,
    /// into an `i16` and saturates: with activations up to 255, two codes of opposite signs
    /// stay within 255 x 127 = 32,385, and two of the same sign within 255 x 128 = 32,640 if
    /// their magnitudes add up to at most 128.
    fn pair_limit(self) -> Option<i32> {
        match self.name() {
            Int8Kernel::Avx2 => Some(128),
            Int8Kernel::AvxVnni | Int8Kernel::Avx512Vnni => None,
        }
    }
}

impl Int8 for Avx2Int8 {
    fn name(self) -> Int8Kernel {
        if self.vnni.is_some() {
            Int8Kernel::AvxVnni
        } else {
            Int8Kernel::Avx2
        }
    }

    fn avx2(self) -> Avx2Fma {
        self.isa
    }
}

impl Int8 for Avx512Vnni {
    fn name(self) -> Int8Kernel {
        Int8Kernel::Avx512Vnni
    }

    fn avx2(self) -> Avx2Fma {
        self.avx2
    }
}

/// The int8 kernel a [`Precision::Int8`](crate::Precision::Int8) backbone runs
/// ([`Backbone::int8_kernel`](crate::Backbone::int8_kernel)). All three sum their integer
/// products exactly. The two VNNI kernels take the same weights, so they compute the same
/// values; AVX2's `vpmaddubsw` sums pairs of products in 16 bits, so some of its channels take
/// coarser weights (see [`Precision::Int8`](crate::Precision::Int8)), and its values differ
/// slightly. `Display` writes `avx512-vnni`, `avx-vnni` or `avx2`.
///
/// ```
/// use attrex::Int8Kernel;
///
/// assert_eq!(Int8Kernel::Avx512Vnni.to_string(), "avx512-vnni");
/// assert_eq!(Int8Kernel::AvxVnni.to_string(), "avx-vnni");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Int8Kernel {
    /// AVX512-VNNI (Intel since Ice Lake / Cascade Lake, AMD since Zen 4): `vpdpbusd` on a
    /// 14 x 32 tile, with the AVX-512 float kernels for what stays `f32` ([`Isa::Avx512`]).
    Avx512Vnni,
    /// AVX-VNNI (Intel since Alder Lake, AMD since Zen 5): `vpdpbusd` on 256-bit vectors in
    /// the AVX2 tile ([`Isa::Avx2`]).
    AvxVnni,
    /// AVX2: `vpmaddubsw` and `vpmaddwd` in the AVX2 tile ([`Isa::Avx2`]).
    Avx2,
}

impl Int8Kernel {
    /// The name CI's `ATTREX_EXPECT_ISA` uses for it: `avx512vnni`, `avxvnni`, `avx2`.
    #[cfg(test)]
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Int8Kernel::Avx512Vnni => "avx512vnni",
            Int8Kernel::AvxVnni => "avxvnni",
            Int8Kernel::Avx2 => "avx2",
        }
    }
}

impl fmt::Display for Int8Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Int8Kernel::Avx512Vnni => "avx512-vnni",
            Int8Kernel::AvxVnni => "avx-vnni",
            Int8Kernel::Avx2 => "avx2",
        })
    }
}

impl Avx2Fma {
    /// The token, when the CPU has AVX2 and FMA.
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            (std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"))
            .then_some(Self(Proof(())))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }
}

/// The work a convolution's epilogue does on a tile before and after its one store.
pub(crate) struct Epilogue<'a> {
    /// The first reduction block: start from zero, not from the partial sums in the output.
    pub first: bool,
    /// The last reduction block: apply bias, residual and ReLU.
    pub last: bool,
    pub relu: bool,
    /// The output holds a residual to add (taken in with the first reduction block; later
    /// blocks find it in the partial sums).
    pub accumulate: bool,
    /// The panel's `NR` biases.
    pub bias: &'a [f32],
    /// The panel's `NR` weight scales, by which an integer kernel multiplies its sums before
    /// anything else (empty for float kernels).
    pub scale: &'a [f32],
    /// The input's scale for each stored row (its image's, or its pixel's where the input is
    /// quantised per pixel), by which an integer kernel also multiplies the row's sums (empty
    /// for float kernels).
    pub row_scale: &'a [f32],
    /// This panel's `NR` values to add to the rows of image 0 of the block (null: none); image
    /// `i` at `image_bias + i * pool_stride`.
    pub image_bias: *const f32,
    /// Where this panel's channel sums of image 0 of the block go (null: no pooling); image `i`
    /// at `pool + i * pool_stride`.
    pub pool: *mut f32,
    pub pool_stride: usize,
    /// Where the running maxima of this block's stored values go (null: not tracked): `NR`
    /// lanes per image, image `i` at `max + i * NR`. A lane only grows, and NaN never wins.
    pub max: *mut f32,
    /// Each stored row's image, counted from the block's first: its length is the number of
    /// rows stored.
    pub row_img: &'a [usize],
}

impl Epilogue<'_> {
    /// Checks what an integer kernel reads beyond a float one: the panel's `nr` weight scales,
    /// and the input's scale of every row.
    ///
    /// # Panics
    /// When either is missing.
    pub fn assert_int8(&self, nr: usize) {
        assert_eq!(
            self.scale.len(),
            nr,
            "an int8 tile needs its panel's scales"
        );
        assert_eq!(
            self.row_scale.len(),
            self.row_img.len(),
            "an int8 tile needs its rows' scales"
        );
    }
}

/// The body of [`Kernel::vectorize`]: `$f()` in a function compiled with the target features
/// `$features`, which the token `$token` proves the CPU has (it is uninhabited off x86-64).
macro_rules! vectorize_with {
    ($features:literal, $f:expr, $token:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = $features)]
            fn with_features<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the token exists, so its `detect` found these features on this CPU.
            unsafe { with_features($f) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $f;
            $token.never()
        }
    }};
}
pub(crate) use vectorize_with;

/// Most rows of any kernel's tile: the driver's per-tile arrays have this length.
pub(crate) const MAX_MR: usize = 14;

/// The micro-kernels of one instruction set, implemented by its token: a value of `Self`
/// proves that the CPU runs them.
///
/// A tile is `MR` output pixels by `NR` output channels, summed in registers (AVX-512: the
/// whole tile; AVX2: in row groups that take turns, their sums in an L1 buffer between turns;
/// see [`super::avx2`]). The driver ([`super::kernel`]) splits a convolution into tiles, and
/// calls [`Kernel::tile`] on each, inside [`Kernel::vectorize`].
pub(crate) trait Kernel: Copy + Send + Sync + fmt::Debug + 'static {
    /// The instruction set, as the public API names it.
    const ISA: Isa;
    /// Output pixels per tile (at most [`MAX_MR`], even: a tile of a 7-wide map is two rows).
    const MR: usize;
    /// Output channels per tile and weight panel; an output width must be a multiple of it.
    const NR: usize;
    /// Input values per 32-bit word of the activations and weights the kernel reads: 1 for
    /// `f32`, 4 for the int8 kernel's bytes (the driver counts words).
    const VALUES_PER_WORD: usize = 1;
    /// Whether the driver fetches the next tile's input rows into L2 during a 1x1
    /// convolution's tiles (AVX2 `f32` on AMD Zen 3: stage 1's 1x1s 2-6 % faster on one
    /// thread and 0-15 % on two, the whole pass about 1 %; the int8 kernel, whose rows are a
    /// quarter the size, showed no clear gain, so it leaves them to the hardware prefetchers;
    /// AVX-512 was not measured; see `benches/README.md`).
    const PREFETCH_NEXT_INPUT: bool = false;

    /// Runs `f` in a function compiled for this instruction set, so that what is inlined into
    /// it (the driver's loops, the pooling layers) is vectorised with it and can inline the
    /// micro-kernels.
    fn vectorize<R>(self, f: impl FnOnce() -> R) -> R;

    /// One tile: `out[r][0..NR] = epilogue(sum_k a_r[k] * b[k][0..NR])` for rows `r <
    /// ep.row_img.len()`. Row `r`'s patch values are read at `r * STEP` from `a` (rows from
    /// `MR / 2` on from `a + jump` when `SPLIT`, for two rows of a 7-wide map), one contiguous
    /// run `(offset, len)` after another; `STEP` is a compile-time constant, so every read has
    /// a constant offset. `b` holds the panel's weights, `[sum of the run lengths][NR]`.
    ///
    /// # Safety
    /// For every run `(o, len)`, `a + o + r * STEP + i` (rows below the split) or
    /// `a + jump + o + (r - MR / 2) * STEP + i` (rows from it, when `SPLIT`) must be readable
    /// for `r < MR`, `i < len`; `b` must address (sum of the lengths) x `NR` floats;
    /// `outs[r]` must address `NR` floats that no other thread accesses, for every stored row;
    /// `ep.bias` must hold `NR` floats (and `ep.scale` too, for an integer kernel) and, for
    /// every image `i` in `ep.row_img`, `ep.pool + i * ep.pool_stride` and `ep.max + i * NR`
    /// `NR` floats each, unless null, that no other thread accesses, and
    /// `ep.image_bias + i * ep.pool_stride` `NR` readable floats, unless null.
    unsafe fn tile<const STEP: usize, const SPLIT: bool>(
        self,
        a: *const f32,
        jump: usize,
        runs: &[(usize, usize)],
        b: *const f32,
        outs: &[*mut f32; MAX_MR],
        ep: &Epilogue<'_>,
    );

    /// `dst.copy_from_slice(src)` for the short runs of a patch, where a call to `memcpy` per
    /// run costs more than the copy.
    ///
    /// # Panics
    /// If the lengths differ.
    fn copy(self, dst: &mut [f32], src: &[f32]);

    /// One pixel's channels `values` quantised into `out` (`values.len() / 4` words) under
    /// the pixel's own scale, which it returns: [`super::int8::quantize_pixel`], what a
    /// convolution's epilogue writes for each pixel where it quantises its output per pixel.
    /// The AVX512-VNNI kernel overrides it with 512-bit vectors, to the same codes and scale.
    ///
    /// # Panics
    /// If `out` does not hold `values.len() / 4` words, or that is not whole.
    fn quantize_pixel(self, isa: Avx2Fma, values: &[f32], out: &mut [f32]) -> f32 {
        super::int8::quantize_pixel(isa, values, out)
    }

    /// The AVX2 token for the transforms of Winograd's F(2x2, 3x3) ([`super::winograd`]),
    /// where the `f32` network runs its 3x3 convolutions so instead of directly: the AVX2
    /// kernel (measured on AMD Zen 3, see `benches/README.md`). AVX-512 keeps the direct
    /// kernel: it was not measured there.
    fn winograd(self) -> Option<Avx2Fma> {
        None
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::{Int8Kernel, Isa};

    /// The names `ATTREX_EXPECT_ISA` gives, separated by commas: instruction sets as [`Isa`]
    /// displays them, and the int8 kernels' VNNI extensions as [`Int8Kernel::flag`] writes
    /// them (`.ci/run` sets e.g. `avx512,avx2,avx512vnni`). Read by the tests only, never by
    /// the library.
    ///
    /// # Panics
    /// On a name that is neither.
    fn names() -> Vec<String> {
        let Some(names) = std::env::var_os("ATTREX_EXPECT_ISA") else {
            return Vec::new();
        };
        let names = names.to_string_lossy();
        let known = |n: &str| {
            Isa::from_name(n).is_some()
                || [Int8Kernel::Avx512Vnni, Int8Kernel::AvxVnni]
                    .iter()
                    .any(|k| k.flag() == n)
        };
        names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .inspect(|n| assert!(known(n), "ATTREX_EXPECT_ISA: unknown instruction set {n:?}"))
            .map(str::to_owned)
            .collect()
    }

    /// The instruction sets that CI says this machine has.
    ///
    /// # Panics
    /// On a name that is not an instruction set or a VNNI extension.
    pub fn expected() -> Vec<Isa> {
        names().iter().filter_map(|n| Isa::from_name(n)).collect()
    }

    /// Says that the tests of `isa` do not run on this CPU, or fails when CI expects it.
    ///
    /// # Panics
    /// When `ATTREX_EXPECT_ISA` names `isa`.
    pub fn skip(isa: Isa) {
        skip_named(&isa.to_string());
    }

    /// [`skip`] for an int8 kernel.
    ///
    /// # Panics
    /// When `ATTREX_EXPECT_ISA` names `kernel`'s flag.
    pub fn skip_int8(kernel: Int8Kernel) {
        skip_named(kernel.flag());
    }

    /// Says that the AVX-VNNI kernel runs with its EVEX stand-in
    /// ([`Avx2Int8::evex_stand_in`](super::Avx2Int8::evex_stand_in)) on this CPU, or fails
    /// when CI expects AVX-VNNI itself: the stand-in does not test the VEX encoding.
    ///
    /// # Panics
    /// When `ATTREX_EXPECT_ISA` names `kernel`'s flag.
    pub fn stand_in(kernel: Int8Kernel) {
        lacking(
            kernel.flag(),
            "its kernel runs with EVEX-encoded vpdpbusd instead",
        );
    }

    fn skip_named(name: &str) {
        lacking(name, "its kernels are not tested here");
    }

    /// Says that this CPU lacks `name` and what the tests do instead, or fails when CI expects
    /// `name`.
    fn lacking(name: &str, instead: &str) {
        assert!(
            !names().iter().any(|n| n == name),
            "ATTREX_EXPECT_ISA names {name}, but this CPU lacks it: {instead}"
        );
        eprintln!("this CPU lacks {name}: {instead}");
    }
}

/// Runs `$body` once for each kernel, with its token bound to `$isa` (a different type each
/// time); a kernel the CPU lacks is skipped, or fails the test when CI expects it
/// ([`testing::expected`]).
#[cfg(test)]
macro_rules! each_kernel {
    (|$isa:ident| $body:expr) => {{
        use $crate::native::isa::{Avx2Fma, Avx512, Isa, testing::skip};
        match Avx512::detect() {
            Some($isa) => $body,
            None => skip(Isa::Avx512),
        }
        match Avx2Fma::detect() {
            Some($isa) => $body,
            None => skip(Isa::Avx2),
        }
    }};
}
#[cfg(test)]
pub(crate) use each_kernel;

/// Runs `$body` once for each int8 kernel, with its token bound to `$isa`: AVX512-VNNI,
/// AVX-VNNI and AVX2 (`vpmaddubsw`, also where the CPU has AVX-VNNI); a kernel the CPU lacks is
/// skipped, or fails the test when CI expects it ([`testing`]). Without AVX-VNNI, the AVX-VNNI
/// kernel runs with EVEX-encoded `vpdpbusd` where the CPU has AVX512-VNNI and AVX512VL
/// ([`Avx2Int8::evex_stand_in`]).
#[cfg(test)]
macro_rules! each_int8_kernel {
    (|$isa:ident| $body:expr) => {{
        use $crate::native::isa::testing::{skip, skip_int8, stand_in};
        use $crate::native::isa::{Avx2Fma, Avx2Int8, Avx512Vnni, Int8Kernel, Isa};
        match Avx512Vnni::detect() {
            Some($isa) => $body,
            None => skip_int8(Int8Kernel::Avx512Vnni),
        }
        match Avx2Fma::detect().map(Avx2Int8::from) {
            Some(isa) => {
                match isa.vnni() {
                    Some(_) => {
                        let $isa = isa;
                        $body
                    }
                    None => match Avx512Vnni::detect().and_then(|p| isa.evex_stand_in(p)) {
                        Some(isa) => {
                            stand_in(Int8Kernel::AvxVnni);
                            let $isa = isa;
                            $body
                        }
                        None => skip_int8(Int8Kernel::AvxVnni),
                    },
                }
                let $isa = isa.without_vnni();
                $body
            }
            None => skip(Isa::Avx2),
        }
    }};
}
#[cfg(test)]
pub(crate) use each_int8_kernel;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_sets_ci_expects_are_detected() {
        for isa in testing::expected() {
            assert!(
                isa.is_available(),
                "ATTREX_EXPECT_ISA names {isa}: not on this CPU"
            );
        }
    }

    #[test]
    fn names_round_trip_and_detection_picks_the_fastest() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(&isa.to_string()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse2"), None);
        assert_eq!(
            Isa::detect(),
            Isa::ALL.into_iter().find(|i| i.is_available())
        );
        // Every CPU with AVX-512F has AVX2 and FMA.
        if Isa::Avx512.is_available() {
            assert!(Isa::Avx2.is_available());
        }
    }
}
