//! Big-endian field access. Callers check lengths first; these index directly.

pub(crate) fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn be_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(array(buf, at))
}

pub(crate) fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(buf, at))
}

pub(crate) fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(array(buf, at))
}

pub(crate) fn be_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array(buf, at))
}

fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf[at..at + N].try_into().expect("slice of length N")
}
