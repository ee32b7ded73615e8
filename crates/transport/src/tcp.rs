//! TCP: addresses, listening, and connecting (over TLS when configured) with the client
//! side of the handshake.

use tokio::net::{TcpListener, TcpStream};

use crate::handshake::handshake;
use crate::tls::explain;
use crate::{ConnConfig, FrameReader, TcpReadHalf, TcpWriteHalf, TransportError};
use rask_proto::msg::Hello;

/// `tcp://host:port` → `host:port`.
pub fn parse_addr(addr: &str) -> Result<&str, TransportError> {
    let rest = addr.strip_prefix("tcp://").unwrap_or(addr);
    if rest.is_empty() || !rest.contains(':') {
        return Err(TransportError::BadAddress(addr.into()));
    }
    Ok(rest)
}

/// Opens a connection and does the client side of the handshake (authentication
/// included when either side has a secret), all within `cfg.handshake_timeout`. With
/// `cfg.tls`, TLS first: the server's certificate is checked against the CA (and the
/// address dialled, see [`crate::tls`]), and a server that does not answer in TLS is
/// [`TransportError::NotTls`].
pub async fn connect(
    addr: &str,
    hello: &Hello,
    cfg: ConnConfig,
) -> Result<(FrameReader, TcpWriteHalf, u32), TransportError> {
    let target = parse_addr(addr)?;
    let limit = cfg.handshake_timeout;
    tokio::time::timeout(limit, async {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        watch_peer(&stream, cfg.peer_timeout)?;
        let (r, w) = match &cfg.tls {
            None => {
                let (r, w) = stream.into_split();
                (TcpReadHalf::Plain(r), TcpWriteHalf::Plain(w))
            }
            Some(tls) => tls.connect(target, stream).await?,
        };
        // Failures of TLS surface here too (a client certificate is refused after the
        // client's side of the TLS handshake is done): explained, not raw i/o errors.
        handshake(FrameReader::new(r, cfg), w, hello)
            .await
            .map_err(explain)
    })
    .await
    .map_err(|_| TransportError::ConnectTimeout(limit))?
}

/// Makes the kernel end `stream` when the peer leaves sent data unacknowledged for
/// `timeout` (TCP_USER_TIMEOUT), and probe an idle peer (keepalive) so that one that
/// vanished is noticed within about `timeout` too: a crashed or cut-off host sends no
/// close.
pub fn watch_peer(stream: &TcpStream, timeout: std::time::Duration) -> std::io::Result<()> {
    use rustix::net::sockopt;
    let ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    sockopt::set_tcp_user_timeout(stream, ms)?;
    sockopt::set_socket_keepalive(stream, true)?;
    let idle = (timeout / 3).max(std::time::Duration::from_secs(1));
    sockopt::set_tcp_keepidle(stream, idle)?;
    sockopt::set_tcp_keepintvl(stream, idle)?;
    Ok(())
}

/// Binds a listener; `addr` may be `tcp://host:port` or `host:port` (port 0 picks one).
pub async fn listen(addr: &str) -> Result<TcpListener, TransportError> {
    Ok(TcpListener::bind(parse_addr(addr)?).await?)
}

/// The `tcp://ip:port` form of a listener's address.
pub fn listener_addr(l: &TcpListener) -> Result<String, TransportError> {
    Ok(format!("tcp://{}", l.local_addr()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::tests::hello;
    use crate::{accept, spawn_writer, welcome};
    use bytes::Bytes;
    use rask_proto::msg::{DataItem, PeerMsg};
    use rask_proto::{Datum, TaskId};

    #[tokio::test]
    async fn batches_with_buffers_round_trip() {
        let listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener_addr(&listener).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut reader = FrameReader::new(r, ConnConfig::default());
            let h = accept(&mut reader, &mut w, &ConnConfig::default())
                .await
                .unwrap();
            assert_eq!(h.name, "t");
            welcome(&mut w, &reader, 9).await.unwrap();
            let mut got = Vec::new();
            while let Some(b) = reader.read_batch::<PeerMsg>().await.unwrap() {
                for m in b.msgs {
                    if let PeerMsg::Data { items, .. } = m {
                        for it in items {
                            got.push(it.value.to_value(&b.bufs, &[]).unwrap());
                        }
                    }
                }
            }
            got
        });
        let (_r, w, id) = connect(&addr, &hello(), ConnConfig::default())
            .await
            .unwrap();
        assert_eq!(id, 9);
        let tx = spawn_writer::<PeerMsg, _>(w);
        let mut expect = Vec::new();
        for i in 0..100u64 {
            let payload = Bytes::from(vec![i as u8; (i * 997) as usize]);
            expect.push(rask_proto::Value::List(vec![
                rask_proto::Value::Int(i as i64),
                rask_proto::Value::Bytes(payload.clone()),
            ]));
            let value = Datum::List(vec![Datum::Int(i as i64), Datum::Buf(0)]);
            tx.send_with(
                PeerMsg::Data {
                    req: i,
                    items: vec![DataItem {
                        task: TaskId(i),
                        value,
                    }],
                    missing: vec![],
                },
                vec![payload],
            )
            .unwrap();
        }
        drop(tx);
        assert_eq!(server.await.unwrap(), expect);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("tcp://127.0.0.1:8786").unwrap(),
            "127.0.0.1:8786"
        );
        assert_eq!(parse_addr("127.0.0.1:1").unwrap(), "127.0.0.1:1");
        assert!(parse_addr("tcp://").is_err());
    }
}
