//! A buffered, cancel-safe reader shared by the handshake and the transmission phase, so
//! no byte the client sent early is lost when one phase hands over to the next.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much to read ahead when the buffer runs dry.
const READ_AHEAD: usize = 64 << 10;

/// Reads a byte stream into an internal buffer. Bytes stay in the buffer until taken, so
/// dropping a pending [`WireReader::fill`] (for example in a `select!`) loses nothing.
pub(crate) struct WireReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> WireReader<R> {
    /// Wraps a stream.
    pub(crate) fn new(inner: R) -> Self {
        WireReader {
            inner,
            buf: BytesMut::with_capacity(READ_AHEAD),
        }
    }

    /// Bytes received but not yet taken.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads until at least `n` bytes are buffered. Returns `false` if the stream ended
    /// first. Cancel-safe: whatever was read stays buffered.
    pub(crate) async fn fill(&mut self, n: usize) -> std::io::Result<bool> {
        while self.buf.len() < n {
            let missing = n - self.buf.len();
            self.buf.reserve(missing.max(READ_AHEAD));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Removes and returns the first `n` buffered bytes; call after `fill(n)` returned true.
    pub(crate) fn take(&mut self, n: usize) -> BytesMut {
        let n = n.min(self.buf.len());
        self.buf.split_to(n)
    }

    /// Reads and throws away `n` bytes, a piece at a time. Returns `false` on end of stream.
    pub(crate) async fn skip(&mut self, mut n: usize) -> std::io::Result<bool> {
        while n > 0 {
            let piece = n.min(READ_AHEAD);
            if !self.fill(piece).await? {
                return Ok(false);
            }
            drop(self.take(piece));
            n -= piece;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn fill_take_and_skip_keep_the_stream_in_order() {
        let (mut client, server) = tokio::io::duplex(16);
        let writer = tokio::spawn(async move {
            let data: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
            client.write_all(&data).await.unwrap();
        });
        let mut r = WireReader::new(server);
        assert!(r.fill(3).await.unwrap());
        assert_eq!(&r.take(3)[..], &[0, 1, 2]);
        assert!(r.skip(100_000 - 3).await.unwrap());
        assert!(r.fill(2).await.unwrap());
        let expected = u8::try_from(100_000 % 256).unwrap();
        assert_eq!(r.buffered()[0], expected);
        assert!(r.skip(100_000).await.unwrap());
        writer.await.unwrap();
        assert!(!r.fill(1).await.unwrap(), "stream ended");
    }
}
