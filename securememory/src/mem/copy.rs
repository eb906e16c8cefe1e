//! The one way the library copies or wipes secret bytes in user space.
//!
//! A plain `copy_from_slice` becomes a call to libc's `memcpy`, which moves
//! the bytes through SSE/AVX registers and leaves them there: a core file
//! records every thread's vector registers (the `NT_X86_XSTATE` note), so
//! the secret would be in the dump though every page of it is excluded.
//! `memcpy` is also an interposable symbol (`LD_PRELOAD`), which matters
//! while a protection key is open. So on x86_64 the copy is a short
//! `asm!` loop that moves 8 bytes at a time through one general-purpose
//! register (cleared at the end), calls no function and touches no vector
//! register. (`rep movsb` would also avoid vector registers, but its start-up
//! cost made a 32-byte protection-key access six times slower on these
//! machines: 85 ns became 510 ns.) Elsewhere it is a loop of volatile
//! byte loads and stores, which the compiler may not widen into vector
//! code or turn into a `memcpy` call.

/// Copy `src` into `dst`.
///
/// # Panics
/// If the lengths differ (as `copy_from_slice` does).
#[inline]
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of unequal length"
    );
    // SAFETY: both slices are valid for `len` bytes; `&mut` and `&` cannot
    // overlap.
    unsafe { copy_raw(src.as_ptr(), dst.as_mut_ptr(), src.len()) }
}

/// Test hook: a function run right after each copy, to look at the CPU
/// state the copy left (see `test_hooks::after_secret_copy`).
#[cfg(feature = "test-hooks")]
static AFTER_COPY: std::sync::RwLock<Option<fn()>> = std::sync::RwLock::new(None);

#[cfg(feature = "test-hooks")]
pub(crate) fn set_after_copy(f: Option<fn()>) {
    *AFTER_COPY.write().unwrap_or_else(|p| p.into_inner()) = f;
}

#[cfg(feature = "test-hooks")]
fn after_copy() {
    let f = *AFTER_COPY.read().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = f {
        f();
    }
}

/// Copy `len` bytes from `src` to `dst`.
///
/// # Safety
/// `src` readable and `dst` writable for `len` bytes, the two ranges not
/// overlapping, no other thread writing either range.
#[inline]
pub(crate) unsafe fn copy_raw(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the loop moves 8 bytes at a time through one general-purpose
    // register, then the last `len % 8` bytes one at a time, from `[src]` to
    // `[dst]`, both valid and disjoint for `len` bytes (the caller's
    // contract); every pointer and count register it changes is declared as
    // a clobbered output, and it clears the register that held the bytes
    // before it ends. It changes flags (`cmp`, `sub`), so flags are not
    // declared preserved. Not `nomem`: the compiler must treat it as
    // reading and writing memory, so no access to either range moves across
    // it (nor across the WRPKRU that opens and closes a key around it).
    unsafe {
        std::arch::asm!(
            "2:",
            "cmp {len}, 8",
            "jb 3f",
            "mov {tmp}, qword ptr [{src}]",
            "mov qword ptr [{dst}], {tmp}",
            "add {src}, 8",
            "add {dst}, 8",
            "sub {len}, 8",
            "jmp 2b",
            "3:",
            "test {len}, {len}",
            "jz 4f",
            "mov {tmp:l}, byte ptr [{src}]",
            "mov byte ptr [{dst}], {tmp:l}",
            "add {src}, 1",
            "add {dst}, 1",
            "sub {len}, 1",
            "jmp 3b",
            "4:",
            "xor {tmp:e}, {tmp:e}",
            len = inout(reg) len => _,
            src = inout(reg) src => _,
            dst = inout(reg) dst => _,
            tmp = out(reg) _,
            options(nostack),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    for i in 0..len {
        // SAFETY: `i < len`, inside both ranges (the caller's contract).
        // Volatile: one byte at a time, never merged into vector code or a
        // `memcpy` call.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
    #[cfg(feature = "test-hooks")]
    after_copy();
}

/// Write zeros over `[dst, dst + len)`, stores the compiler may not remove.
///
/// # Safety
/// `dst` writable for `len` bytes, no other reference into the range live.
#[inline]
pub(crate) unsafe fn wipe_raw(dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len >= REP_STOS_FROM {
        // SAFETY: `rep stosq` then `rep stosb` store zeros (from `rax`, a
        // general-purpose register: no vector register is involved) over
        // `[dst, dst + len)`, the caller's range; the direction flag is
        // clear (the ABI guarantees it at every call); the registers it
        // changes are declared. Not elided (an `asm!` block), and without
        // `nomem` no later access is moved before it.
        unsafe {
            std::arch::asm!(
                "rep stosq",
                "mov rcx, {tail}",
                "rep stosb",
                tail = in(reg) len % 8,
                inout("rcx") len / 8 => _,
                inout("rdi") dst => _,
                in("rax") 0u64,
                options(nostack, preserves_flags),
            );
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the loop stores a zeroed general-purpose register over
    // `[dst, dst + len)`, 8 bytes at a time and then byte by byte; the range
    // is the caller's. The pointer and count registers it changes are
    // declared as clobbered outputs; it changes flags. An `asm!` block's
    // stores are never elided, and without `nomem` no later access (unlock,
    // unmap, reuse) is moved before them.
    unsafe {
        std::arch::asm!(
            "xor {zero:e}, {zero:e}",
            "2:",
            "cmp {len}, 8",
            "jb 3f",
            "mov qword ptr [{dst}], {zero}",
            "add {dst}, 8",
            "sub {len}, 8",
            "jmp 2b",
            "3:",
            "test {len}, {len}",
            "jz 4f",
            "mov byte ptr [{dst}], {zero:l}",
            "add {dst}, 1",
            "sub {len}, 1",
            "jmp 3b",
            "4:",
            len = inout(reg) len => _,
            dst = inout(reg) dst => _,
            zero = out(reg) _,
            options(nostack),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: forwarded from the caller.
        let bytes = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        zeroize::Zeroize::zeroize(bytes);
    }
}

/// From this many bytes a wipe is one `rep stosq` (fast strings: a 4 KiB
/// page in a few dozen cycles, against 512 stores of the loop); below it
/// the loop, which has no start-up cost (a secret's 32 bytes).
#[cfg(target_arch = "x86_64")]
const REP_STOS_FROM: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_and_offset() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 1) as u8).collect();
        for off in [0, 1, 7, 33] {
            for len in [0, 1, 2, 15, 16, 17, 31, 32, 33, 64, 255] {
                let mut dst = vec![0xeeu8; len + 2];
                copy(&mut dst[1..1 + len], &src[off..off + len]);
                assert_eq!(&dst[1..1 + len], &src[off..off + len]);
                assert_eq!((dst[0], dst[len + 1]), (0xee, 0xee), "wrote outside");
            }
        }
    }

    #[test]
    fn wipes_exactly_the_range() {
        for len in [0, 1, 31, 32, 255, 256, 257, 263, 4095, 4096] {
            let mut buf = vec![0xa5u8; len + 2];
            let range = &mut buf[1..1 + len];
            // SAFETY: a live, exclusively borrowed range of `len` bytes.
            unsafe { wipe_raw(range.as_mut_ptr(), len) };
            assert!(buf[1..1 + len].iter().all(|&b| b == 0));
            assert_eq!((buf[0], buf[len + 1]), (0xa5, 0xa5), "wrote outside");
        }
    }

    /// Every length up to 600 (both sides of the switch to `rep stos`) and
    /// a spread up to 9000, at every alignment of 16: each byte of the
    /// range zero, none of 64 bytes either side touched.
    #[test]
    fn wipes_exactly_the_range_at_every_length_and_alignment() {
        const GUARD: usize = 64;
        let lens = (0..=600).chain((601..=9000).step_by(37)).chain([
            1023, 1024, 1025, 4095, 4096, 4097, 5000, 8191, 8192, 8193, 9000,
        ]);
        let mut buf = vec![0u8; GUARD + 16 + 9000 + GUARD];
        for len in lens {
            for off in 0..16 {
                buf.fill(0xa5);
                let start = GUARD + off;
                let range = &mut buf[start..start + len];
                // SAFETY: a live, exclusively borrowed range of `len` bytes.
                unsafe { wipe_raw(range.as_mut_ptr(), len) };
                assert!(
                    buf[start..start + len].iter().all(|&b| b == 0),
                    "len {len} offset {off}: a byte left unwiped"
                );
                assert!(
                    buf[..start].iter().all(|&b| b == 0xa5)
                        && buf[start + len..].iter().all(|&b| b == 0xa5),
                    "len {len} offset {off}: wrote outside the range"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "unequal length")]
    fn unequal_lengths_panic() {
        copy(&mut [0u8; 3], &[1u8; 4]);
    }
}
