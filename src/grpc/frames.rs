//! Answers written together: small HTTP/2 frames and a socket h2 treats as unvectored.
//!
//! h2 (the HTTP/2 codec under hyper and tonic) copies a DATA frame's payload into the
//! connection's 16 KiB write buffer only when it is shorter than its chain threshold; a
//! longer payload is chained behind the buffer to save the copy, and nothing more can be
//! buffered until that chain has been written (`has_capacity` in h2's
//! `codec/framed_write.rs`). So every answer with a long enough body costs a write of its
//! own, and its trailers (`grpc-status`) usually another. The threshold is 256 bytes on a
//! socket that says it takes vectored writes (a `TcpStream` does) and 1,024 bytes on one
//! that does not. A stored split is about 1.5 KB: a replayed Compute took 1.75 write calls
//! per answer where an empty RPC took 0.67 (RESULTS.md §23), and on loopback each call is
//! a trip through the TCP stack and a wake of the reader.
//!
//! Two pieces remove that:
//! - [`Unvectored`] wraps each accepted connection and reports no vectored writes, so h2's
//!   threshold is 1,024 bytes (and h2 writes its buffer with plain `send`s);
//! - [`small_frames_layer`] cuts each data chunk of a response body of up to
//!   [`MAX_COALESCED`] bytes into frames of at most [`FRAME_BELOW_CHAIN`] (1,023) bytes:
//!   slices of the same `Bytes`, no copy here; h2 copies them into its buffer as it does
//!   any small frame.
//!
//! Answers finished at about the same time then share one write with each other and with
//! their trailers: 0.68 calls per replayed answer. Larger chunks (a long ListSplits page)
//! stay whole and chained: for them a write or two of their own is cheap beside the copy.
//! The cost on the wire is a 9-byte frame header per 1,023 bytes of body.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::util::MapResponseLayer;

/// An accepted connection that reports no vectored writes ([module docs](self)).
#[derive(Debug)]
pub struct Unvectored(pub TcpStream);

impl Connected for Unvectored {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for Unvectored {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Unvectored {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    /// Still vectored if a caller asks anyway (h2 does not, given
    /// [`is_write_vectored`](Self::is_write_vectored)).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Largest DATA payload h2 copies into its write buffer on an [`Unvectored`] socket (one
/// below its chain threshold there, 1,024 bytes).
pub const FRAME_BELOW_CHAIN: usize = 1023;

/// Largest data chunk cut into small frames: 16 frames, about what h2's 16 KiB write
/// buffer holds.
pub const MAX_COALESCED: usize = 16 * FRAME_BELOW_CHAIN;

/// What [`small_frames_layer`] applies to every response.
pub type Answer = http::Response<tonic::body::Body>;

/// The layer: every response's body through [`SmallFrames`] ([module docs](self)).
pub fn small_frames_layer() -> MapResponseLayer<fn(Answer) -> Answer> {
    MapResponseLayer::new(small_frames as fn(Answer) -> Answer)
}

/// `answer` with its body through [`SmallFrames`].
pub fn small_frames(answer: Answer) -> Answer {
    answer.map(|body| tonic::body::Body::new(SmallFrames::new(body)))
}

/// A body whose data chunks of up to [`MAX_COALESCED`] bytes come out in frames of at
/// most [`FRAME_BELOW_CHAIN`] bytes.
#[derive(Debug)]
pub struct SmallFrames<B> {
    inner: B,
    /// What is left of the chunk being cut.
    rest: Bytes,
}

impl<B> SmallFrames<B> {
    /// `inner`, cut.
    pub fn new(inner: B) -> Self {
        SmallFrames {
            inner,
            rest: Bytes::new(),
        }
    }
}

impl<B> Body for SmallFrames<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            let n = FRAME_BELOW_CHAIN.min(this.rest.len());
            return Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        match frame.into_data() {
            Ok(mut data) if data.len() > FRAME_BELOW_CHAIN && data.len() <= MAX_COALESCED => {
                let first = data.split_to(FRAME_BELOW_CHAIN);
                this.rest = data;
                Poll::Ready(Some(Ok(Frame::data(first))))
            }
            Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Err(frame) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(inner.lower() + rest);
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use super::*;

    /// A body of given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn trailers() -> Frame<Bytes> {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        Frame::trailers(t)
    }

    /// Every frame of `body` until it says it has ended.
    async fn drain(mut body: SmallFrames<Frames>) -> Vec<Frame<Bytes>> {
        let mut out = Vec::new();
        while !body.is_end_stream() {
            let f = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            match f {
                Some(Ok(f)) => out.push(f),
                Some(Err(e)) => match e {},
                None => break,
            }
        }
        out
    }

    fn data_of(frames: &[Frame<Bytes>]) -> Vec<&Bytes> {
        frames.iter().filter_map(|f| f.data_ref()).collect()
    }

    #[tokio::test]
    async fn a_split_sized_chunk_goes_out_in_small_frames_then_its_trailers() {
        let chunk: Bytes = (0..1513u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let body = SmallFrames::new(Frames(VecDeque::from([
            Frame::data(chunk.clone()),
            trailers(),
        ])));
        assert_eq!(body.size_hint().lower(), 0);
        let frames = drain(body).await;
        let data = data_of(&frames);
        assert_eq!(
            data.len(),
            2,
            "1,513 bytes in frames of 1,023: one full and 490"
        );
        assert!(data
            .iter()
            .all(|d| d.len() <= FRAME_BELOW_CHAIN && !d.is_empty()));
        let joined: Vec<u8> = data.iter().flat_map(|d| d.iter().copied()).collect();
        assert_eq!(joined, chunk.as_ref(), "the same bytes, in order");
        let last = frames.last().unwrap();
        assert_eq!(
            last.trailers_ref().unwrap()["grpc-status"],
            "0",
            "the trailers come last, unchanged"
        );
        assert_eq!(frames.len(), 3);
    }

    #[tokio::test]
    async fn small_and_large_chunks_pass_whole() {
        let small = Bytes::from(vec![7u8; FRAME_BELOW_CHAIN]);
        let large = Bytes::from(vec![9u8; MAX_COALESCED + 1]);
        let body = SmallFrames::new(Frames(VecDeque::from([
            Frame::data(small.clone()),
            Frame::data(large.clone()),
            trailers(),
        ])));
        let frames = drain(body).await;
        assert_eq!(data_of(&frames), vec![&small, &large]);
        assert!(frames[2].is_trailers());
    }

    #[tokio::test]
    async fn the_body_ends_only_after_the_last_piece() {
        let chunk = Bytes::from(vec![1u8; 2100]);
        let mut body = SmallFrames::new(Frames(VecDeque::from([Frame::data(chunk)])));
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert_eq!(first.unwrap().unwrap().into_data().unwrap().len(), 1023);
        assert!(!body.is_end_stream(), "1,077 bytes are still to come");
        assert_eq!(body.size_hint().lower(), 1077);
        let frames = drain(body).await;
        assert_eq!(
            data_of(&frames).iter().map(|d| d.len()).collect::<Vec<_>>(),
            vec![1023, 54]
        );
    }
}
