//! The exporter's HTTP side, on hyper: GET /metrics and GET /healthz, every connection
//! served concurrently (a slow or stuck scraper holds up nobody else), with timeouts on
//! reading a request's head, on rendering, and on a connection's whole life, and a cap
//! on connections open at once.

use crate::exposition::Format;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// A client must send a request's head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Rendering the metrics (reading the node state) may take this long; then 503.
const RENDER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection (keep-alive included) is closed, gracefully, after this.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// What a closing connection gets to finish its response.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// Bytes of a request head.
const MAX_HEADER_BYTES: usize = 8 << 10;

/// Renders the metrics in a format (called on a blocking thread: it reads files).
pub type Render = Arc<dyn Fn(Format) -> String + Send + Sync>;

/// The server's thread; [`Server::stop`] ends it.
pub struct Server {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves on `listener` from a thread of its own until stopped.
    pub fn spawn(listener: TcpListener, render: Render) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(4)
            .build()?;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("stockade-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => accept_loop(listener, render, stopped).await,
                        Err(e) => tracing::error!(error = %e, "cannot serve HTTP"),
                    }
                });
                // Connections still open are dropped with the runtime.
                runtime.shutdown_timeout(CLOSE_GRACE);
            })?;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }

    /// Blocks until the server's thread ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    render: Render,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of fds and the like: don't spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "too many connections: closing one");
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            serve_connection(stream, render).await;
            drop(slot);
        });
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, render: Render) {
    let service = hyper::service::service_fn(move |request| respond(request, render.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, connection.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn respond(
    request: Request<Incoming>,
    render: Render,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"));
    }
    Ok(match request.uri().path() {
        "/metrics" => {
            let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let rendering = tokio::task::spawn_blocking(move || render(format));
            match tokio::time::timeout(RENDER_TIMEOUT, rendering).await {
                Ok(Ok(body)) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    response
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "rendering the metrics failed");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n")
                }
                Err(_) => {
                    tracing::warn!(timeout = ?RENDER_TIMEOUT, "rendering the metrics timed out");
                    text(StatusCode::SERVICE_UNAVAILABLE, "rendering timed out\n")
                }
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => text(StatusCode::NOT_FOUND, "try /metrics\n"),
    })
}

/// GETs a path (and query) from an HTTP server, as HTTP/1.0 so no server answers in
/// chunks (for tests and health checks): the status and the body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = RENDER_TIMEOUT + HEADER_TIMEOUT;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn server() -> (Server, SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let scrapes = Arc::new(AtomicUsize::new(0));
        let counter = scrapes.clone();
        let render: Render = Arc::new(move |format| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            format!("scrapes_total {n}\n# {format:?}\n")
        });
        (Server::spawn(listener, render).unwrap(), addr, scrapes)
    }

    fn raw(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn routes_methods_and_formats() {
        let (_server, addr, _) = server();
        assert_eq!(get(addr, "/healthz").unwrap(), (200, "ok\n".into()));
        assert_eq!(get(addr, "/nope").unwrap().0, 404);
        let (status, body) = get(addr, "/metrics?x=1").unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("# Text"), "{body}");
        let om = raw(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\nConnection: close\r\n\r\n",
        );
        assert!(
            om.contains("content-type: application/openmetrics-text"),
            "{om}"
        );
        assert!(om.contains("# OpenMetrics"), "{om}");
        let head = raw(
            addr,
            "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.contains("scrapes_total"), "{head}");
        let post = raw(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }

    #[test]
    fn a_stalled_scraper_holds_up_no_other() {
        let (_server, addr, scrapes) = server();
        // Half a request head, then nothing: a serial server would be stuck reading it
        // until its timeout and close it before serving anyone else.
        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        for _ in 0..3 {
            assert_eq!(get(addr, "/metrics").unwrap().0, 200);
        }
        assert_eq!(scrapes.load(Ordering::SeqCst), 3);
        // The stalled connection is still served once it finishes its head.
        stalled.write_all(b"Connection: close\r\n\r\n").unwrap();
        stalled
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reply = String::new();
        stalled.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("scrapes_total 4"), "{reply}");
    }

    #[test]
    fn a_silent_connection_is_closed_after_the_header_timeout() {
        let (_server, addr, _) = server();
        let mut silent = TcpStream::connect(addr).unwrap();
        // Only a guard against hanging: the server must close first.
        silent.set_read_timeout(Some(HEADER_TIMEOUT * 4)).unwrap();
        let mut buf = Vec::new();
        let read = silent.read_to_end(&mut buf);
        assert!(
            read.is_ok(),
            "the server did not close the connection: {read:?}"
        );
        // hyper answers a head that never came with 408 or just closes.
        let reply = String::from_utf8_lossy(&buf);
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
            "{reply}"
        );
    }

    #[test]
    fn stop_ends_the_server() {
        let (server, addr, _) = server();
        assert_eq!(get(addr, "/healthz").unwrap().0, 200);
        server.stop();
        assert!(TcpStream::connect(addr).is_err());
    }
}
