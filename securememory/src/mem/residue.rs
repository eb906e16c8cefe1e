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
/// deepest call chain uses (the crates keep their state in structures of a
/// few hundred bytes and their SIMD backends work in registers).
pub(crate) const STACK_SCRUB: usize = 4096;

/// Zero [`STACK_SCRUB`] bytes of stack below the caller's frame, where the
/// frames of the functions it called just before were; then clear the
/// vector registers. Call right after the cipher returns, from the frame
/// that called it.
#[inline(never)]
pub(crate) fn clear_after_cipher() {
    let mut area = MaybeUninit::<[u8; STACK_SCRUB]>::uninit();
    // SAFETY: `area` is this frame's own local, writable for its size, and
    // nothing else refers to it.
    unsafe { super::copy::wipe_raw(area.as_mut_ptr().cast(), STACK_SCRUB) };
    std::hint::black_box(&area);
    clear_vector_registers();
}

/// Zero the vector registers the cipher may have used: `ymm0`-`ymm15`
/// with AVX (`vzeroall`), else `xmm0`-`xmm15`. The cipher crates use no
/// AVX-512 code (`zmm16`-`zmm31` untouched).
#[cfg(target_arch = "x86_64")]
#[inline]
fn clear_vector_registers() {
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
