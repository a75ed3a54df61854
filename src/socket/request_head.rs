//! Copies the head of a Socket.IO request out of hyper's read buffer.
//!
//! hyper parses a request's URI and header values as slices of the connection's
//! read buffer, which is 16 KiB once a request has been read (8 KiB reserved, then
//! grown past the few bytes hyper-util reads first to tell HTTP/1 from HTTP/2).
//! engineioxide keeps the `Parts` of the request that opened a session for the
//! session's whole life (`SocketRef::req_parts`), so those slices would keep the
//! whole buffer alive: 16 KiB per connection for a head of a few hundred bytes.
//! Copying the URI (and axum's [`OriginalUri`], a clone of it) and the header values
//! into one buffer of their own lets hyper's buffer go once the connection is
//! upgraded. One buffer rather than one per value: the copies are what the session
//! keeps, and engineioxide clones the head once more. Nothing else changes: same
//! URI, same headers in the same order, same sensitivity flags.

use std::ops::Range;

use axum::body::Bytes;
use axum::extract::OriginalUri;
use axum::http::{HeaderValue, Request, Uri};

/// Whether `path` is served by the Socket.IO endpoint mounted at `req_path`
/// (engineioxide's own rule).
pub fn is_socket_io_path(path: &str, req_path: &str) -> bool {
    path.strip_prefix(req_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || req_path.ends_with('/'))
}

/// `req` with its URI and header values copied into a buffer of their own.
pub fn detach<B>(mut req: Request<B>) -> Request<B> {
    let uri = req.uri().to_string();
    let original = req
        .extensions()
        .get::<OriginalUri>()
        .map(|OriginalUri(original)| original.to_string())
        .filter(|original| *original != uri);
    let values: usize = req.headers().values().map(|v| v.len()).sum();
    let mut head =
        Vec::with_capacity(uri.len() + original.as_ref().map_or(0, String::len) + values);
    let uri_at = push(&mut head, uri.as_bytes());
    let original_at = original.map(|original| push(&mut head, original.as_bytes()));
    let value_at: Vec<Range<usize>> = req
        .headers()
        .values()
        .map(|v| push(&mut head, v.as_bytes()))
        .collect();
    let head = Bytes::from(head);

    // Parsing what `Uri` printed gives the same URI; a failure keeps the original.
    let Ok(copy) = Uri::from_maybe_shared(head.slice(uri_at)) else {
        return req;
    };
    *req.uri_mut() = copy.clone();
    if let Some(OriginalUri(original)) = req.extensions_mut().get_mut::<OriginalUri>() {
        match original_at {
            None => *original = copy,
            Some(at) => {
                if let Ok(copy) = Uri::from_maybe_shared(head.slice(at)) {
                    *original = copy;
                }
            }
        }
    }
    for (value, at) in req.headers_mut().values_mut().zip(value_at) {
        // Every value hyper accepted is accepted again.
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(head.slice(at)) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
    req
}

/// Appends `bytes` to `head`; where they are.
fn push(head: &mut Vec<u8>, bytes: &[u8]) -> Range<usize> {
    let start = head.len();
    head.extend_from_slice(bytes);
    start..head.len()
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn an_original_uri_other_than_the_uri_is_kept() {
        let req = Request::builder()
            .uri("/?EIO=4")
            .extension(OriginalUri(Uri::from_static("/ws/?EIO=4")))
            .header(header::COOKIE, "a=b")
            .body(())
            .unwrap();
        let req = detach(req);
        assert_eq!(req.uri(), "/?EIO=4");
        assert_eq!(
            req.extensions().get::<OriginalUri>().unwrap().0,
            "/ws/?EIO=4"
        );
        assert_eq!(req.headers()[header::COOKIE], "a=b");
    }

    #[test]
    fn a_request_without_headers_is_fine() {
        let req = Request::builder().uri("/ws/").body(()).unwrap();
        let req = detach(req);
        assert_eq!(req.uri(), "/ws/");
        assert!(req.headers().is_empty());
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
