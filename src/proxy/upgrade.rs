//! WebSocket (HTTP/1.1 Upgrade) tunnels: once both sides have switched protocols, bytes
//! are copied both ways until either side closes or the tunnel is idle longer than the
//! route's read timeout.
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::server::Lifecycle;

/// Counts an open tunnel in `airgate_active_websockets`.
struct TunnelGauge;

impl TunnelGauge {
    fn open() -> Self {
        crate::telemetry::metrics().active_websockets.inc();
        TunnelGauge
    }
}

impl Drop for TunnelGauge {
    fn drop(&mut self) {
        crate::telemetry::metrics().active_websockets.dec();
    }
}

/// Join the client's and the upstream's upgraded connections in a background task.
/// The task holds a drain token, so graceful shutdown waits for it (up to the grace).
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, life: Lifecycle) {
    tokio::spawn(async move {
        let Lifecycle {
            drain: _drain,
            mut hard_stop,
            ..
        } = life;
        let joined = tokio::time::timeout(idle, async { tokio::try_join!(client, upstream) }).await;
        let (client, upstream) = match joined {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
            Err(_) => {
                tracing::debug!("upgrade did not complete in time");
                return;
            }
        };
        let _gauge = TunnelGauge::open();
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            result = copy_with_idle(&mut client, &mut upstream, idle) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "websocket tunnel ended");
                }
            }
            _ = hard_stop.wait_for(|stop| *stop) => {}
        }
    });
}

/// Copy both ways with bounded buffers. Ends when both directions reached EOF, on the
/// first error, or when nothing moved in either direction for `idle`.
pub async fn copy_with_idle<A, B>(a: &mut A, b: &mut B, idle: Duration) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                n = a.read(&mut buf_a), if a_open => {
                    let n = n?;
                    if n == 0 {
                        a_open = false;
                        b.shutdown().await?;
                    } else {
                        b.write_all(&buf_a[..n]).await?;
                        b.flush().await?;
                    }
                }
                n = b.read(&mut buf_b), if b_open => {
                    let n = n?;
                    if n == 0 {
                        b_open = false;
                        a.shutdown().await?;
                    } else {
                        a.write_all(&buf_b[..n]).await?;
                        a.flush().await?;
                    }
                }
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        match step {
            Ok(result) => result?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data in either direction for {idle:?}"),
                ));
            }
        }
    }
    Ok(())
}
