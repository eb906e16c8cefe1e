//! Finding bytes anywhere in this process's memory: every mapping read
//! through `/proc/self/mem` (which, as root, reads `PROT_NONE` pages too).
//! The bytes sought are handed in XOR a mask, so that the test's own
//! memory never holds them; the scanner unmasks them into a page of its
//! own, and skips that page and its read buffer when it scans.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use super::mem::anon_rw;

/// Bytes read per `pread`.
const CHUNK: usize = 1 << 20;
/// The longest needle.
const NEEDLE_MAX: usize = 4096;

/// A read buffer and a needle page, outside the heap, mapped once.
pub struct Scanner {
    base: *mut u8,
    mask: u8,
}

impl Scanner {
    /// A scanner for needles given XOR `mask`.
    pub fn new(mask: u8) -> Scanner {
        Scanner {
            base: anon_rw(CHUNK + NEEDLE_MAX) as *mut u8,
            mask,
        }
    }

    fn own(&self) -> Range<usize> {
        self.base as usize..self.base as usize + CHUNK + NEEDLE_MAX
    }

    /// Every address where the unmasked `masked` sits, in any mapping but
    /// the scanner's own, sorted.
    pub fn find(&mut self, masked: &[u8]) -> Vec<usize> {
        assert!(!masked.is_empty() && masked.len() <= NEEDLE_MAX);
        // SAFETY: the mapping made in `new`, `CHUNK + NEEDLE_MAX` bytes,
        // never unmapped and referred to by nothing else.
        let all = unsafe { std::slice::from_raw_parts_mut(self.base, CHUNK + NEEDLE_MAX) };
        let (buf, needle) = all.split_at_mut(CHUNK);
        let needle = &mut needle[..masked.len()];
        for (n, m) in needle.iter_mut().zip(masked) {
            *n = m ^ self.mask;
        }
        let mem = File::open("/proc/self/mem").expect("open /proc/self/mem");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        let own = self.own();
        let mut hits = Vec::new();
        for line in maps.lines() {
            if line.contains("[vvar") || line.contains("[vsyscall]") {
                continue;
            }
            let (a, b) = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'))
                .expect("a range");
            let start = usize::from_str_radix(a, 16).expect("hex");
            let end = usize::from_str_radix(b, 16).expect("hex");
            // The scanner's own pages may share a line with a neighbour
            // (adjacent anonymous mappings merge): only they are skipped.
            for part in [start..end.min(own.start), start.max(own.end)..end] {
                scan_range(&mem, part, buf, needle, &mut hits);
            }
        }
        needle.fill(0);
        hits.sort_unstable();
        hits.dedup();
        hits
    }
}

/// Add to `hits` every address of `needle` in `range`, read in `buf`-sized
/// chunks that overlap by the needle's length.
fn scan_range(
    mem: &File,
    range: Range<usize>,
    buf: &mut [u8],
    needle: &[u8],
    hits: &mut Vec<usize>,
) {
    let mut at = range.start;
    while at < range.end {
        let n = (range.end - at).min(buf.len());
        let Ok(got) = mem.read_at(&mut buf[..n], at as u64) else {
            return;
        };
        let seen = &buf[..got];
        let mut from = 0;
        while from + needle.len() <= seen.len() {
            // SAFETY: both ranges lie inside live buffers.
            let p = unsafe {
                libc::memmem(
                    seen[from..].as_ptr().cast(),
                    seen.len() - from,
                    needle.as_ptr().cast(),
                    needle.len(),
                )
            };
            if p.is_null() {
                break;
            }
            let i = p as usize - seen.as_ptr() as usize;
            hits.push(at + i);
            from = i + 1;
        }
        if got < n || at + n >= range.end {
            return;
        }
        at += n - (needle.len() - 1);
    }
}
