//! What a cipher call leaves behind, cleared: its stack frames and the CPU's
//! vector registers. The AEAD of sealed secrets (`storage/sealed.rs`) runs
//! in the calling thread's ordinary stack frames and, on x86_64, in SSE or
//! AVX registers; its key schedule and keystream pass through both. The
//! cipher crates zeroize their own structures when dropped, but not the
//! spills of their inner functions nor the registers, which a core file
//! records (every thread's vector registers are in its `NT_X86_XSTATE`
//! note).

use std::mem::MaybeUninit;

/// Bytes of stack zeroed below the caller's frame: more than the cipher's
/// call chain uses. An optimised build inlines it into a few frames; an
/// unoptimised one (the tests) copies blocks and keys through dozens of
/// frames: 32 KiB left a tag there (`guarantee_core_dump.rs`, sealed case).
pub(crate) const STACK_SCRUB: usize = if cfg!(debug_assertions) {
    64 * 1024
} else {
    4096
};

/// Zero [`STACK_SCRUB`] bytes of stack below the caller's frame, where the
/// frames of the functions it called just before were; then clear the
/// vector registers. Call right after the cipher returns, from the frame
/// that called it.
#[inline(never)]
pub(crate) fn clear_after_cipher() {
    let mut area = MaybeUninit::<[u64; STACK_SCRUB / 8]>::uninit();
    zero_words(area.as_mut_ptr().cast(), STACK_SCRUB / 8);
    std::hint::black_box(&area);
    clear_vector_registers();
}

/// Zero `words` 8-byte words at `at` (this frame's caller's local): one
/// `rep stosq` on x86_64, several times faster over 4 KiB than a loop of
/// 8-byte stores (the scrub was a tenth of a sealed access); it moves only
/// zeros, so the vector registers it may use internally hold nothing.
#[inline(always)]
fn zero_words(at: *mut u64, words: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `[at, at + 8 * words)` is the caller's own local, writable
    // and referred to by nothing else; the direction flag is clear (the
    // ABI guarantees it at every call); the changed registers are declared.
    unsafe {
        std::arch::asm!(
            "rep stosq",
            inout("rcx") words => _,
            inout("rdi") at => _,
            in("rax") 0u64,
            options(nostack, preserves_flags)
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above; `wipe_raw`'s stores are never elided.
    unsafe {
        super::copy::wipe_raw(at.cast(), words * 8)
    };
}

/// Zero the vector registers: `ymm0`-`ymm15` with AVX (`vzeroall`), else
/// `xmm0`-`xmm15`; and `zmm16`-`zmm31` where the CPU has AVX-512, which
/// this crate's code never uses but glibc's `memcpy` does (its EVEX
/// versions move data through them): a release build's core held a
/// ciphertext there before this (`guarantee_core_dump.rs`, sealed case).
#[cfg(target_arch = "x86_64")]
#[inline]
fn clear_vector_registers() {
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above); the instructions
        // only zero `zmm16`-`zmm31`, caller-saved, which code compiled
        // without the `avx512f` target feature never holds values in.
        unsafe {
            std::arch::asm!(
                "vpxord zmm16, zmm16, zmm16",
                "vpxord zmm17, zmm17, zmm17",
                "vpxord zmm18, zmm18, zmm18",
                "vpxord zmm19, zmm19, zmm19",
                "vpxord zmm20, zmm20, zmm20",
                "vpxord zmm21, zmm21, zmm21",
                "vpxord zmm22, zmm22, zmm22",
                "vpxord zmm23, zmm23, zmm23",
                "vpxord zmm24, zmm24, zmm24",
                "vpxord zmm25, zmm25, zmm25",
                "vpxord zmm26, zmm26, zmm26",
                "vpxord zmm27, zmm27, zmm27",
                "vpxord zmm28, zmm28, zmm28",
                "vpxord zmm29, zmm29, zmm29",
                "vpxord zmm30, zmm30, zmm30",
                "vpxord zmm31, zmm31, zmm31",
                options(nostack, nomem, preserves_flags)
            )
        };
    }
    clear_low_vector_registers();
}

/// `ymm0`-`ymm15` (all of `zmm0`-`zmm15` on AVX-512), or `xmm0`-`xmm15`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn clear_low_vector_registers() {
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked above); `vzeroall` only zeroes
        // vector registers, all caller-saved and declared clobbered.
        unsafe {
            std::arch::asm!(
                "vzeroall",
                clobber_abi("C"),
                options(nostack, nomem, preserves_flags)
            )
        };
    } else {
        // SAFETY: SSE2 is part of x86_64; the instructions only zero
        // vector registers, all caller-saved and declared clobbered.
        unsafe {
            std::arch::asm!(
                "xorps xmm0, xmm0",
                "xorps xmm1, xmm1",
                "xorps xmm2, xmm2",
                "xorps xmm3, xmm3",
                "xorps xmm4, xmm4",
                "xorps xmm5, xmm5",
                "xorps xmm6, xmm6",
                "xorps xmm7, xmm7",
                "xorps xmm8, xmm8",
                "xorps xmm9, xmm9",
                "xorps xmm10, xmm10",
                "xorps xmm11, xmm11",
                "xorps xmm12, xmm12",
                "xorps xmm13, xmm13",
                "xorps xmm14, xmm14",
                "xorps xmm15, xmm15",
                clobber_abi("C"),
                options(nostack, nomem, preserves_flags)
            )
        };
    }
}

/// Elsewhere there is no portable way to name the vector registers.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn clear_vector_registers() {}
