//! A minimal HTTP/1.x server for GET /metrics and GET /healthz: one connection at a time,
//! `Connection: close`, bounded request size and time. Prometheus needs nothing more.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MAX_REQUEST: usize = 8 << 10;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request gets: status, content type, body.
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }
}

/// Serves until `stop` is set (and a connection wakes the accept call).
pub fn serve(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    metrics: impl Fn() -> Response + Send + 'static,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => {
                if let Err(e) = handle(stream, &metrics) {
                    tracing::debug!(error = %e, "HTTP connection failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of fds and the like: don't spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn handle(mut stream: TcpStream, metrics: &impl Fn() -> Response) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
        if request.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                &Response::text("431 Request Header Fields Too Large", "request too large\n"),
                false,
            );
        }
    }
    let head = String::from_utf8_lossy(&request);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let response = match (method, path) {
        ("GET" | "HEAD", "/metrics") => metrics(),
        ("GET" | "HEAD", "/healthz") => Response::text("200 OK", "ok\n"),
        ("GET" | "HEAD", _) => Response::text("404 Not Found", "try /metrics\n"),
        _ => Response::text("405 Method Not Allowed", "only GET\n"),
    };
    respond(&mut stream, &response, method != "HEAD")
}

fn respond(stream: &mut TcpStream, response: &Response, body: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if body {
        stream.write_all(response.body.as_bytes())?;
    }
    stream.flush()
}

/// GETs a path from a server (for tests and `stockade monitor --once`-style checks).
pub fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
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
