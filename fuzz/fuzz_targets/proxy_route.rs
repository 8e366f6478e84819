//! The proxy's route parser (`attestor/src/proxy/route.rs`, compiled here as is): it never
//! panics; normalising is idempotent; a metered route is routed only for its exact path;
//! and a path forwarded as free can never become a metered path, however aggressively the
//! upstream normalises it again (decoding every escape repeatedly, folding case, turning
//! `\` into `/`, cutting at `?`, `#` and `;`, collapsing slashes, resolving dot segments).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub)]
#[path = "../../attestor/src/proxy/route.rs"]
mod route;

use route::{FreeRoute, Metered, Resolved, Routes};

/// What the most permissive upstream could make of `path`.
fn aggressive(path: &str) -> String {
    let mut bytes = path.as_bytes().to_vec();
    // Decode until nothing changes (double encoding included).
    for _ in 0..8 {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        if out == bytes {
            break;
        }
        bytes = out;
    }
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase().replace('\\', "/");
    let text = text.split(['?', '#']).next().unwrap_or("");
    let mut segments: Vec<&str> = Vec::new();
    for s in text.split('/') {
        let s = s.split(';').next().unwrap_or("");
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let mut free = FreeRoute::defaults();
    free.extend(["PUT /files/{id}", "GET /x/{a}/{*rest}"].iter().filter_map(|s| FreeRoute::parse(s).ok()));
    let routes = Routes::new(free);
    if let Ok(segments) = route::normalize(path) {
        let joined = format!("/{}", segments.join("/"));
        assert_eq!(route::normalize(&joined).as_ref(), Ok(&segments), "not idempotent");
    }
    // The fast path (a path already normal is split, not decoded) agrees with normalising.
    if route::is_normal(path) {
        let split: Vec<String> =
            path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        assert_eq!(route::normalize(path), Ok(split), "fast path disagrees");
    }
    for method in ["GET", "POST", "PUT"] {
        match routes.resolve(method, path) {
            Resolved::Metered(m) => {
                assert_eq!(method, "POST");
                let segments = route::normalize(path).unwrap();
                assert!(format!("/{}", segments.join("/")).eq_ignore_ascii_case(m.path()));
            }
            Resolved::Free(upstream) => {
                assert_eq!(routes.resolve(method, &upstream), Resolved::Free(upstream.clone()));
                let seen = aggressive(&upstream);
                for (_, metered) in Metered::ALL {
                    assert_ne!(seen, metered, "{path:?} forwarded free as {upstream:?}");
                }
            }
            Resolved::MethodNotAllowed(_) | Resolved::NotFound | Resolved::Invalid(_) => {}
        }
    }
    // A free-route specification never panics, and one accepted never covers a metered path.
    if let Ok(spec) = FreeRoute::parse(path) {
        let routes = Routes::new(vec![spec]);
        for (_, metered) in Metered::ALL {
            assert!(!matches!(routes.resolve("POST", metered), Resolved::Free(_)));
        }
    }
});
