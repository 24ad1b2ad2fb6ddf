//! A simulated slow, lossy link, for tests and benchmarks on one machine
//! (the kernel has no `netem` here): a TCP connection wrapper that holds
//! every byte it receives before the node reads it.
//!
//! * Delay: every byte is held a fixed time, so every round trip to or
//!   from this node takes that much longer.
//! * Loss, as TCP shows it to the application: each 1,448-byte segment is
//!   lost with the given probability, and a loss holds the stream (and
//!   everything behind it: TCP delivers in order) for a retransmission
//!   timeout, 200 ms (Linux's least) doubling while the retransmission is
//!   lost too. Bytes are never dropped, reordered or corrupted.
//!
//! Off unless asked for (`pangea serve --simulate-delay MS
//! --simulate-loss P`); nothing else in the node knows it is there. (Real
//! loss with iptables needs the lossy peer's traffic to carry its own
//! address, which loopback connections it dials do not: they leave from
//! 127.0.0.1.)

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

/// Bytes held back at most: beyond it the wrapper stops reading, and TCP's
/// flow control slows the sender as a real slow link would.
const MAX_HELD: usize = 4 << 20;
/// One read from the socket.
const READ: usize = 64 << 10;
/// A TCP segment's payload on a 1,500-byte MTU.
const SEGMENT: usize = 1448;
/// The first retransmission timeout (Linux's `TCP_RTO_MIN`).
const RTO: Duration = Duration::from_millis(200);

/// What the simulated link adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Added to every byte's way in (so to every round trip).
    pub delay: Duration,
    /// The probability that a segment is lost (0 to 1).
    pub loss: f64,
}

/// See the module documentation.
pub struct Delayed<S> {
    inner: S,
    delay: Duration,
    loss: f64,
    /// xorshift64 state for the losses.
    rng: u64,
    /// When the last bytes held may be read (nothing overtakes them).
    last_due: Option<Instant>,
    /// Bytes received, each run with the time it may be read.
    held: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes of `held`'s front already read.
    front_read: usize,
    held_bytes: usize,
    timer: Option<Pin<Box<Sleep>>>,
    /// The socket said end of file (after what is held).
    eof: bool,
    /// A read error, reported once what came before it is read.
    error: Option<io::Error>,
}

impl<S> Delayed<S> {
    pub fn new(inner: S, impairment: Impairment) -> Delayed<S> {
        static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Delayed {
            inner,
            delay: impairment.delay,
            loss: impairment.loss.clamp(0.0, 1.0),
            rng: (time ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            last_due: None,
            held: VecDeque::new(),
            front_read: 0,
            held_bytes: 0,
            timer: None,
            eof: false,
            error: None,
        }
    }
}

impl<S> Delayed<S> {
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How long `n` bytes just received are held: the delay, plus a
    /// retransmission timeout per lost segment (doubling while the
    /// retransmission is lost too).
    fn hold_for(&mut self, n: usize) -> Duration {
        let mut hold = self.delay;
        if self.loss > 0.0 {
            for _ in 0..n.div_ceil(SEGMENT) {
                let mut rto = RTO;
                while self.uniform() < self.loss && rto < Duration::from_secs(60) {
                    hold += rto;
                    rto *= 2;
                }
            }
        }
        hold
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Delayed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Take in everything the socket has (its waker is registered when
        // it has nothing more).
        while !this.eof && this.error.is_none() && this.held_bytes < MAX_HELD {
            let mut tmp = vec![0u8; READ];
            match Pin::new(&mut this.inner).poll_read(cx, &mut tmp) {
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(n)) => {
                    tmp.truncate(n);
                    this.held_bytes += n;
                    let now = Instant::now();
                    let due = now.checked_add(this.hold_for(n)).unwrap_or(now);
                    let due = this.last_due.map_or(due, |last| due.max(last));
                    this.last_due = Some(due);
                    this.held.push_back((due, tmp));
                }
                Poll::Ready(Err(e)) => this.error = Some(e),
                Poll::Pending => break,
            }
        }
        loop {
            let Some((due, bytes)) = this.held.front() else {
                if let Some(e) = this.error.take() {
                    return Poll::Ready(Err(e));
                }
                if this.eof {
                    return Poll::Ready(Ok(0));
                }
                return Poll::Pending;
            };
            if *due <= Instant::now() {
                let rest = &bytes[this.front_read..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                this.front_read += n;
                this.held_bytes -= n;
                if this.front_read == bytes.len() {
                    this.held.pop_front();
                    this.front_read = 0;
                }
                this.timer = None;
                return Poll::Ready(Ok(n));
            }
            let due = *due;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Delayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncReadExt;

    #[tokio::test(flavor = "current_thread")]
    async fn every_byte_arrives_in_order_after_the_delay() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut b = Delayed::new(
            futures::io::Cursor::new(data.clone()),
            Impairment {
                delay: Duration::from_millis(150),
                loss: 0.0,
            },
        );
        let t = Instant::now();
        let mut first = [0u8; 1];
        b.read_exact(&mut first).await.expect("first byte");
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        let mut got = first.to_vec();
        b.read_to_end(&mut got).await.expect("the rest");
        assert_eq!(got, data);
        // Nothing held back beyond the delay: the rest came at once.
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lost_segment_holds_the_stream_a_retransmission_timeout() {
        let data = vec![7u8; 40 * SEGMENT];
        let mut b = Delayed::new(
            futures::io::Cursor::new(data.clone()),
            Impairment {
                delay: Duration::ZERO,
                loss: 0.3,
            },
        );
        // 40 segments at 30%: P(no loss) = 6e-7; each loss costs >= 200 ms.
        let t = Instant::now();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, data);
        assert!(t.elapsed() >= RTO, "{:?}", t.elapsed());
        let mut sure = Delayed::new(
            futures::io::Cursor::new(data.clone()),
            Impairment {
                delay: Duration::ZERO,
                loss: 0.0,
            },
        );
        let t = Instant::now();
        got.clear();
        sure.read_to_end(&mut got).await.expect("read");
        assert!(t.elapsed() < RTO, "{:?}", t.elapsed());
    }
}
