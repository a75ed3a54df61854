//! Copies the head of a Socket.IO request out of hyper's read buffer.
//!
//! hyper parses a request's URI and header values as slices of the connection's
//! read buffer, which is 16 KiB once a request has been read (8 KiB reserved, then
//! grown past the few bytes hyper-util reads first to tell HTTP/1 from HTTP/2).
//! engineioxide keeps the `Parts` of the request that opened a session for the
//! session's whole life (`SocketRef::req_parts`), so those slices would keep the
//! whole buffer alive: 16 KiB per connection for a head of a few hundred bytes.
//! Copying the URI (and axum's [`OriginalUri`], a clone of it) and the header values
//! into allocations of their own lets hyper's buffer go once the connection is
//! upgraded. Nothing else changes: same URI, same headers in the same order, same
//! sensitivity flags.

use axum::extract::OriginalUri;
use axum::http::{HeaderValue, Request, Uri};

/// Whether `path` is served by the Socket.IO endpoint mounted at `req_path`
/// (engineioxide's own rule).
pub fn is_socket_io_path(path: &str, req_path: &str) -> bool {
    path.strip_prefix(req_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || req_path.ends_with('/'))
}

/// `req` with its URI and header values copied into buffers of their own.
pub fn detach<B>(mut req: Request<B>) -> Request<B> {
    copy_uri(req.uri_mut());
    if let Some(OriginalUri(original)) = req.extensions_mut().get_mut::<OriginalUri>() {
        copy_uri(original);
    }
    for value in req.headers_mut().values_mut() {
        // `from_bytes` copies; it accepts every value hyper accepted.
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
    req
}

fn copy_uri(uri: &mut Uri) {
    // `TryFrom<&str>` copies; re-parsing what `Uri` printed gives the same URI.
    if let Ok(copy) = Uri::try_from(uri.to_string().as_str()) {
        *uri = copy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::header;

    fn inside(buf: &Bytes, bytes: &[u8]) -> bool {
        let range = buf.as_ptr_range();
        range.contains(&bytes.as_ptr())
    }

    #[test]
    fn the_head_no_longer_points_into_the_read_buffer() {
        // What hyper does: every part of the head is a slice of one buffer.
        let mut buf = b"/ws/?EIO=4&transport=websocket&token=abc websocket Bearer xyz".to_vec();
        buf.resize(16 * 1024, 0);
        let buf = Bytes::from(buf);
        let uri = Uri::from_maybe_shared(buf.slice(0..40)).unwrap();
        let upgrade = HeaderValue::from_maybe_shared(buf.slice(41..50)).unwrap();
        let mut auth = HeaderValue::from_maybe_shared(buf.slice(51..61)).unwrap();
        auth.set_sensitive(true);
        let req = Request::builder()
            .uri(uri.clone())
            .extension(OriginalUri(uri))
            .header(header::UPGRADE, upgrade)
            .header(header::AUTHORIZATION, auth)
            .header("x-other", "one")
            .header("x-other", "two")
            .body(())
            .unwrap();
        assert!(inside(&buf, req.uri().path().as_bytes()));
        assert!(inside(&buf, req.headers()[header::UPGRADE].as_bytes()));

        let req = detach(req);

        assert_eq!(req.uri(), "/ws/?EIO=4&transport=websocket&token=abc");
        assert_eq!(
            req.uri().query(),
            Some("EIO=4&transport=websocket&token=abc")
        );
        assert!(!inside(&buf, req.uri().path().as_bytes()));
        assert!(!inside(&buf, req.uri().query().unwrap().as_bytes()));
        let OriginalUri(original) = req.extensions().get::<OriginalUri>().unwrap();
        assert_eq!(original, req.uri());
        assert!(!inside(&buf, original.path().as_bytes()));
        let headers = req.headers();
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::AUTHORIZATION], "Bearer xyz");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
        let others: Vec<_> = headers.get_all("x-other").iter().collect();
        assert_eq!(others, ["one", "two"]);
        for value in headers.values() {
            assert!(!inside(&buf, value.as_bytes()));
        }
    }

    #[test]
    fn absolute_uris_survive() {
        let req = Request::builder()
            .uri("http://example.com:3001/ws/?EIO=4")
            .body(())
            .unwrap();
        assert_eq!(detach(req).uri(), "http://example.com:3001/ws/?EIO=4");
    }

    #[test]
    fn paths_of_the_endpoint_follow_engineioxide() {
        assert!(is_socket_io_path("/ws", "/ws"));
        assert!(is_socket_io_path("/ws/", "/ws"));
        assert!(is_socket_io_path("/ws/x", "/ws"));
        assert!(!is_socket_io_path("/wsx", "/ws"));
        assert!(!is_socket_io_path("/api/jobs", "/ws"));
        assert!(is_socket_io_path("/ws/", "/ws/"));
    }
}
