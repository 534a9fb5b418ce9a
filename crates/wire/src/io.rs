//! Framed reads and batched writes shared by the client and the server.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::frame::{Frame, FrameError, HEADER_LEN, decode_frame};

/// Room kept free in the read buffer so each `read` can take a good chunk of the socket.
const READ_CHUNK: usize = 64 << 10;

/// Payloads up to this size are copied into the write batch; larger ones are written
/// straight from their buffer to avoid copying read data twice.
const COPY_LIMIT: usize = 64 << 10;

/// A write batch is sent once it holds this much, even if more frames are queued.
const BATCH_LIMIT: usize = 256 << 10;

/// Why a stream stopped yielding frames.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The bytes are not a valid frame.
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// The peer closed the stream in the middle of a frame.
    #[error("stream closed in the middle of a frame ({0} bytes of it received)")]
    Truncated(usize),
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads frames from a byte stream. `next` is cancel safe: bytes already read stay in the
/// buffer, so it can be used as a `select!` branch.
pub(crate) struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(reader: R) -> Self {
        FrameReader {
            reader,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The next frame, or `None` when the peer closed the stream between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK {
                self.buf.reserve(READ_CHUNK);
            }
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated(self.buf.len()))
                };
            }
        }
    }
}

/// Writes every frame received on `frames` to `writer` until all senders are gone, then
/// shuts the write side down. Frames that are ready together go out in one write.
/// Frames must already be valid (the senders check them).
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut frames: mpsc::Receiver<Frame>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(BATCH_LIMIT);
    while let Some(frame) = frames.recv().await {
        put_frame(&mut writer, &mut buf, &frame).await?;
        while buf.len() < BATCH_LIMIT {
            match frames.try_recv() {
                Ok(frame) => put_frame(&mut writer, &mut buf, &frame).await?,
                Err(_) => break,
            }
        }
        writer.write_all(&buf).await?;
        buf.clear();
        writer.flush().await?;
    }
    writer.shutdown().await
}

async fn put_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &mut BytesMut,
    frame: &Frame,
) -> std::io::Result<()> {
    buf.reserve(HEADER_LEN);
    buf.put_slice(&frame.raw_header().to_bytes());
    if frame.payload.len() <= COPY_LIMIT {
        buf.put_slice(&frame.payload);
    } else {
        writer.write_all(buf).await?;
        buf.clear();
        writer.write_all(&frame.payload).await?;
    }
    Ok(())
}
