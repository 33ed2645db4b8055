//! Length-prefixed Kafka frames: a big-endian `i32` size, then that many bytes.

use bytes::{Bytes, BytesMut};
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
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_len: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len_buf = [0u8; 4];
    match reader.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let raw = i32::from_be_bytes(len_buf);
    let len = usize::try_from(raw).map_err(|_| FrameError::Negative(raw))?;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    // Read in steps rather than allocating `len` up front, so a peer that announces a large
    // frame and then stalls pins only what it actually sent.
    let mut buf = BytesMut::with_capacity(len.min(64 * 1024));
    while buf.len() < len {
        let want = (len - buf.len()).min(1024 * 1024);
        let start = buf.len();
        buf.resize(start + want, 0);
        let n = reader.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(FrameError::Truncated {
                got: buf.len(),
                len,
            });
        }
    }
    Ok(Some(buf.freeze()))
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
    }
}
