//! The agent's UDP servers (`thrift_compact`, `thrift_binary`): one reader
//! that queues datagrams, and workers that decode them and feed the
//! pipeline. UDP cannot answer, so every failure is only counted: an
//! oversized or undecodable datagram as a bad request, a datagram that
//! found the queue full as dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weft_pipeline::{Counter, Payload};

use super::config::UdpConfig;
use super::decode::{decode_agent_datagram, Protocol};
use crate::common::ingest::Ingest;

/// The largest UDP payload there is; a bigger `max_packet_size` changes nothing.
const MAX_DATAGRAM: usize = 65_535;

/// Serves until `token` is cancelled: the socket closes at once, and the
/// workers finish the datagrams already queued (the caller bounds how long).
pub(crate) fn spawn(
    socket: UdpSocket,
    cfg: &UdpConfig,
    protocol: Protocol,
    ingest: Arc<Ingest>,
    dropped: Counter,
    token: CancellationToken,
) -> JoinHandle<()> {
    let max = cfg.max_packet_size;
    let (tx, rx) = mpsc::channel::<(Bytes, Instant)>(cfg.queue_size.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<JoinHandle<()>> = (0..cfg.workers.max(1))
        .map(|_| {
            let rx = rx.clone();
            let ingest = ingest.clone();
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((datagram, received_at)) = next else {
                        break;
                    };
                    process(&ingest, protocol, &datagram, received_at).await;
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        // One byte past the limit tells "exactly at the limit" from "over it":
        // the kernel cuts a longer datagram to the buffer's length.
        let mut buf = vec![0u8; max.min(MAX_DATAGRAM) + 1];
        loop {
            let (n, peer) = tokio::select! {
                _ = token.cancelled() => break,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(got) => got,
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            if n > max {
                ingest.bad_request(&format_args!(
                    "datagram from {peer} is larger than max_packet_size ({max} bytes)"
                ));
                continue;
            }
            let datagram = Bytes::copy_from_slice(&buf[..n]);
            if tx.try_send((datagram, Instant::now())).is_err() {
                dropped.inc();
                tracing::debug!(%peer, "UDP queue full: datagram dropped");
            }
        }
        // Free the port first, then let the workers drain the queue.
        drop(socket);
        drop(tx);
        for w in workers {
            let _ = w.await;
        }
    })
}

async fn process(ingest: &Ingest, protocol: Protocol, datagram: &[u8], received_at: Instant) {
    match decode_agent_datagram(datagram, protocol) {
        Err(e) => ingest.bad_request(&e),
        // A refusal is counted by the hand-off; a datagram has no one to tell.
        Ok(rs) => {
            let _ = ingest
                .consume(Payload::Traces(rs), None, received_at, Default::default())
                .await;
        }
    }
}
