//! The one way the tool writes a byte amount.

use std::fmt;

/// A byte amount in the largest binary unit that divides it exactly
/// (`8 MiB`, `20 KiB`, `4097 bytes`); `0` for none and `unlimited` for
/// `None` (how the system reports an unlimited rlimit).
#[derive(Clone, Copy, Debug)]
pub struct Bytes(pub Option<u64>);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        const KIB: u64 = 1 << 10;
        match self.0 {
            None => f.write_str("unlimited"),
            Some(0) => f.write_str("0"),
            Some(b) if b % MIB == 0 => write!(f, "{} MiB", b / MIB),
            Some(b) if b % KIB == 0 => write!(f, "{} KiB", b / KIB),
            Some(b) => write!(f, "{b} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bytes;

    #[test]
    fn largest_exact_unit() {
        let s = |v| Bytes(v).to_string();
        assert_eq!(s(None), "unlimited");
        assert_eq!(s(Some(0)), "0");
        assert_eq!(s(Some(8 << 20)), "8 MiB");
        assert_eq!(s(Some(20 << 10)), "20 KiB");
        assert_eq!(s(Some((1 << 20) + 1024)), "1025 KiB");
        assert_eq!(s(Some(4097)), "4097 bytes");
    }
}
