//! Length-prefixed Kafka frames: a big-endian `i32` size, then that many bytes.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a connection's byte stream could not be cut into frames. Every variant closes the
/// connection: after a bad frame the stream position is unknowable.
#[derive(Debug, Error)]
pub(crate) enum FrameError {
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("frame length {len} exceeds the maximum request size {max}")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed {got} bytes into a {len}-byte frame")]
    Truncated { got: usize, len: usize },
    #[error("no complete frame within {0:?} of its first byte (slow or stalled client)")]
    Slow(std::time::Duration),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Waits for the first byte of the next frame's length prefix. `Ok(None)` is a clean end of
/// stream between frames. Not bounded in time: the caller applies the idle timeout, which may
/// be extended while requests are in progress.
pub(crate) async fn first_byte<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<u8>, FrameError> {
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte).await {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads the rest of the length prefix whose first byte is `first` and checks it against
/// `max_len`, before anything of the body is read (so an oversized frame costs four bytes).
pub(crate) async fn read_length<R: AsyncRead + Unpin>(
    reader: &mut R,
    first: u8,
    max_len: usize,
) -> Result<usize, FrameError> {
    let mut len_buf = [first, 0, 0, 0];
    reader
        .read_exact(&mut len_buf[1..])
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated { got: 0, len: 4 },
            _ => e.into(),
        })?;
    let raw = i32::from_be_bytes(len_buf);
    let len = usize::try_from(raw).map_err(|_| FrameError::Negative(raw))?;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    Ok(len)
}

/// Reads a frame body of `len` bytes (announced by its length prefix).
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
) -> Result<Bytes, FrameError> {
    // The caller reserved `len` bytes of the agent's memory budget before this read, so the
    // buffer is allocated at exactly `len`: growing it by doubling would hold up to twice what
    // the budget counts. The bytes are read straight into the spare capacity, never zero-filled
    // first, so pages are touched only as data arrives: a peer that announces a large frame and
    // then stalls pins only what it actually sent.
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let want = len - buf.len();
        let n = reader.read_buf(&mut (&mut buf).limit(want)).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                got: buf.len(),
                len,
            });
        }
    }
    Ok(buf.freeze())
}

/// Reads one whole frame without time limits (tests and simple callers). `Ok(None)` is a clean
/// end of stream between frames.
#[cfg(test)]
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_len: usize,
) -> Result<Option<Bytes>, FrameError> {
    let Some(first) = first_byte(reader).await? else {
        return Ok(None);
    };
    let len = read_length(reader, first, max_len).await?;
    read_body(reader, len).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_frames_and_clean_eof() {
        let data = [&3i32.to_be_bytes()[..], b"abc", &0i32.to_be_bytes()[..]].concat();
        let mut r = &data[..];
        assert_eq!(read_frame(&mut r, 10).await.unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(read_frame(&mut r, 10).await.unwrap().unwrap().len(), 0);
        assert!(read_frame(&mut r, 10).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn rejects_bad_lengths_and_truncation() {
        let mut r = &(-1i32).to_be_bytes()[..];
        assert!(matches!(
            read_frame(&mut r, 10).await,
            Err(FrameError::Negative(-1))
        ));
        let mut r = &i32::MAX.to_be_bytes()[..];
        assert!(matches!(
            read_frame(&mut r, 10).await,
            Err(FrameError::TooLarge { .. })
        ));
        let data = [&8i32.to_be_bytes()[..], b"abc"].concat();
        let mut r = &data[..];
        assert!(matches!(
            read_frame(&mut r, 10).await,
            Err(FrameError::Truncated { got: 3, len: 8 })
        ));
        let mut r = &[0u8, 0][..];
        assert!(matches!(
            read_frame(&mut r, 10).await,
            Err(FrameError::Truncated { got: 0, len: 4 })
        ));
    }
}
