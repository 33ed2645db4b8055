//! Whole-payload decompression into a buffer each thread reuses, for the codecs whose framing
//! splits a payload into independently compressed blocks (lz4's frame with independent blocks,
//! xerial snappy): each block goes through the library's block decoder straight into the
//! buffer, and records are then read in place.
//!
//! Why not the libraries' stream decoders: `lz4::Decoder` allocates and clears a frame context
//! and its buffers for every batch and copies each byte through them, then through the record
//! reader's buffer; callgrind put that (memset, memcpy) at over a third of produce's
//! instructions on lz4 batches. The frame layout parsed here is small and fixed
//! (<https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md>); frames this module does not
//! take (linked blocks, dictionaries) go back to the stream decoder.

use std::cell::Cell;

/// Buffers larger than this are freed after use rather than kept for the thread's next batch,
/// so one odd batch does not pin its size for the life of the thread.
const KEEP_AT_MOST: usize = 8 << 20;
/// Room is made a whole lz4 block at a time (at most 4 MiB), so the buffer may pass the limit by
/// this much before the bytes written are counted against it; never by more.
const ROOM_PAST_LIMIT: usize = 4 << 20;
const LZ4_MAGIC: u32 = 0x184D_2204;
/// A block whose size field has this bit set is stored uncompressed.
const LZ4_UNCOMPRESSED: u32 = 0x8000_0000;
/// Xerial snappy framing, as Kafka's Java producer writes it: magic, version 1, compatible
/// version 1, then length-prefixed raw snappy blocks. Readers check only the magic.
pub(crate) const XERIAL_HEADER: &[u8] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
const XERIAL_MAGIC: &[u8] = XERIAL_HEADER.split_at(8).0;

thread_local! {
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Why a payload could not be expanded.
#[derive(Debug)]
pub(crate) enum ExpandError {
    /// The payload is not a valid frame of its codec.
    Invalid(String),
    /// It expands (or claims to expand) past the limit.
    TooLarge,
}

/// A payload expanded into a reused buffer; the buffer goes back to its thread on drop.
pub(crate) struct Expanded {
    buf: Vec<u8>,
    /// Bytes written; `buf` past them holds earlier batches' bytes (initialised, so reusing the
    /// buffer never zero-fills it again).
    len: usize,
    limit: usize,
}

impl Expanded {
    fn new(limit: usize) -> Self {
        Self {
            buf: SPARE.with(Cell::take),
            len: 0,
            limit,
        }
    }

    /// The expanded bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Room for `n` more bytes.
    fn room(&mut self, n: usize) -> Result<&mut [u8], ExpandError> {
        if self.len.saturating_add(n) > self.limit.saturating_add(ROOM_PAST_LIMIT) {
            return Err(ExpandError::TooLarge);
        }
        let end = self.len + n;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        Ok(&mut self.buf[self.len..end])
    }

    /// Counts `n` bytes just written into [`Expanded::room`].
    fn advance(&mut self, n: usize) -> Result<(), ExpandError> {
        self.len += n;
        match self.len > self.limit {
            true => Err(ExpandError::TooLarge),
            false => Ok(()),
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), ExpandError> {
        self.room(bytes.len())?.copy_from_slice(bytes);
        self.advance(bytes.len())
    }
}

impl Drop for Expanded {
    fn drop(&mut self) {
        if self.buf.capacity() <= KEEP_AT_MOST {
            SPARE.with(|spare| spare.set(std::mem::take(&mut self.buf)));
        }
    }
}

fn invalid(reason: impl Into<String>) -> ExpandError {
    ExpandError::Invalid(reason.into())
}

/// Splits `n` bytes off the front of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], ExpandError> {
    if input.len() < n {
        return Err(invalid(format!("frame cut short in its {what}")));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn u32_le(input: &mut &[u8], what: &str) -> Result<u32, ExpandError> {
    let bytes = take(input, 4, what)?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

fn xxh32(bytes: &[u8]) -> u32 {
    twox_hash::XxHash32::oneshot(0, bytes)
}

/// What an lz4 frame descriptor says.
struct Lz4Descriptor {
    block_checksums: bool,
    content_checksum: bool,
    content_size: Option<u64>,
    max_block: usize,
}

/// Reads the magic number and frame descriptor; `None` for frames left to the stream decoder
/// (linked blocks, which refer back into earlier blocks, or a dictionary).
fn lz4_descriptor(input: &mut &[u8]) -> Result<Option<Lz4Descriptor>, ExpandError> {
    if u32_le(input, "magic number")? != LZ4_MAGIC {
        return Err(invalid("no lz4 frame magic number"));
    }
    let start = *input;
    let &[flg, bd] = take(input, 2, "descriptor")? else {
        unreachable!("two bytes")
    };
    if flg >> 6 != 1 || flg & 0x02 != 0 || bd & 0x8f != 0 {
        return Err(invalid(format!(
            "frame descriptor {flg:#04x} {bd:#04x} is not version 1 or sets reserved bits"
        )));
    }
    if flg & 0x20 == 0 || flg & 0x01 != 0 {
        return Ok(None);
    }
    let max_block = match (bd >> 4) & 0x07 {
        id @ 4..=7 => 64 << (10 + 2 * (id - 4)),
        id => return Err(invalid(format!("block size id {id} is reserved"))),
    };
    let content_size = match flg & 0x08 != 0 {
        true => Some(u64::from_le_bytes(
            take(input, 8, "content size")?.try_into().expect("8 bytes"),
        )),
        false => None,
    };
    let described = &start[..start.len() - input.len()];
    let &[hc] = take(input, 1, "descriptor checksum")? else {
        unreachable!("one byte")
    };
    if hc != (xxh32(described) >> 8) as u8 {
        return Err(invalid("frame descriptor checksum mismatch"));
    }
    Ok(Some(Lz4Descriptor {
        block_checksums: flg & 0x10 != 0,
        content_checksum: flg & 0x04 != 0,
        content_size,
        max_block,
    }))
}

/// Expands an lz4 frame of independent blocks; `Ok(None)` when the frame is one the stream
/// decoder must take. Checksums present in the frame are verified (the descriptor's, each
/// block's, the content's), trailing bytes after the frame are refused.
pub(crate) fn lz4(payload: &[u8], limit: usize) -> Result<Option<Expanded>, ExpandError> {
    let mut input = payload;
    let Some(frame) = lz4_descriptor(&mut input)? else {
        return Ok(None);
    };
    if frame.content_size.is_some_and(|size| size > limit as u64) {
        return Err(ExpandError::TooLarge);
    }
    let mut out = Expanded::new(limit);
    loop {
        let size = u32_le(&mut input, "block size")?;
        if size == 0 {
            break;
        }
        let stored = (size & !LZ4_UNCOMPRESSED) as usize;
        if stored > frame.max_block {
            return Err(invalid(format!(
                "block of {stored} bytes exceeds the frame's {} maximum",
                frame.max_block
            )));
        }
        let block = take(&mut input, stored, "block")?;
        if frame.block_checksums && u32_le(&mut input, "block checksum")? != xxh32(block) {
            return Err(invalid("block checksum mismatch"));
        }
        if size & LZ4_UNCOMPRESSED != 0 {
            out.push(block)?;
            continue;
        }
        let room = out.room(frame.max_block)?;
        let n = lz4::block::decompress_to_buffer(block, Some(room.len() as i32), room)
            .map_err(|e| invalid(format!("block does not decode: {e}")))?;
        out.advance(n)?;
    }
    if frame.content_checksum && u32_le(&mut input, "content checksum")? != xxh32(out.bytes()) {
        return Err(invalid("content checksum mismatch"));
    }
    if let Some(size) = frame.content_size.filter(|&size| size != out.len as u64) {
        return Err(invalid(format!(
            "frame declares {size} bytes of content but holds {}",
            out.len
        )));
    }
    if !input.is_empty() {
        return Err(invalid(format!("{} bytes follow the frame", input.len())));
    }
    Ok(Some(out))
}

/// Expands Kafka's snappy framing (xerial `SnappyOutputStream`): a 16-byte magic header, then
/// blocks of `[u32 big-endian compressed length][raw snappy block]`; without the header, one raw
/// snappy block. Each block's claimed size is checked against the limit before room is made.
pub(crate) fn snappy(payload: &[u8], limit: usize) -> Result<Expanded, ExpandError> {
    let mut out = Expanded::new(limit);
    if !(payload.len() >= XERIAL_HEADER.len() && payload.starts_with(XERIAL_MAGIC)) {
        snappy_block(&mut out, payload)?;
        return Ok(out);
    }
    let mut input = &payload[XERIAL_HEADER.len()..];
    while !input.is_empty() {
        let Some((len, rest)) = input.split_first_chunk::<4>() else {
            return Err(invalid("block length cut short"));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(invalid("block cut short"));
        }
        let (block, rest) = rest.split_at(len);
        snappy_block(&mut out, block)?;
        input = rest;
    }
    Ok(out)
}

fn snappy_block(out: &mut Expanded, block: &[u8]) -> Result<(), ExpandError> {
    let claim = snap::raw::decompress_len(block).map_err(|e| invalid(format!("block: {e}")))?;
    if out.len.saturating_add(claim) > out.limit {
        // Refused from the block's own claim, before making room for it.
        return Err(ExpandError::TooLarge);
    }
    let room = out.room(claim)?;
    let n = snap::raw::Decoder::new()
        .decompress(block, room)
        .map_err(|e| invalid(format!("block: {e}")))?;
    out.advance(n)
}
