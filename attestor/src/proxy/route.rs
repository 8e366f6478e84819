//! Which route a request is for: its path normalised **once**, then matched against the
//! metered routes and the host's allow-list of free routes. Anything else is refused and
//! never reaches the upstream, so a spelling the upstream would normalise (`/V1/…`,
//! `//v1/…`, `/v1/./…`, `%63`, a trailing slash) cannot slip past the meter.
//!
//! The rules (`docs/protocol.md` §10.1):
//! - the path must start with `/`; empty segments (`//`, a trailing `/`) are dropped;
//! - `%XX` of an unreserved character (`A–Z a–z 0–9 - _ ~`) is decoded; an encoded `.`,
//!   `/`, `\`, `%`, `;`, `?` or `#`, a control character, or a malformed escape is refused
//!   (400), since servers disagree on whether they decode it before or after resolving
//!   segments (or decode twice, or cut `;` parameters); any other escape is kept, with
//!   upper-case hex;
//! - a raw `\`, `;` or control character is refused; `.` segments are dropped and `..`
//!   removes the previous segment (one that would climb above the root is refused);
//! - route literals match ASCII case-insensitively, and the upstream gets the route's own
//!   spelling of them (parameters keep the client's spelling).
//!
//! This file depends only on `std`: the fuzz target `proxy_route` compiles it as is.

use std::fmt;

/// The metered routes, each with its own usage extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metered {
    /// `POST /v1/chat/completions`: JSON or SSE.
    Chat,
    /// `POST /v1/completions`: JSON or SSE.
    Completions,
    /// `POST /v1/embeddings`: JSON only; its usage has no completion tokens.
    Embeddings,
    /// `POST /v1/responses` (the Responses API): JSON or SSE with typed events.
    Responses,
}

impl Metered {
    /// Every metered route with its path, in the spelling sent upstream.
    pub(crate) const ALL: [(Metered, &'static str); 4] = [
        (Metered::Chat, "/v1/chat/completions"),
        (Metered::Completions, "/v1/completions"),
        (Metered::Embeddings, "/v1/embeddings"),
        (Metered::Responses, "/v1/responses"),
    ];

    /// The route's path segments.
    fn segments(self) -> &'static [&'static str] {
        match self {
            Metered::Chat => &["v1", "chat", "completions"],
            Metered::Completions => &["v1", "completions"],
            Metered::Embeddings => &["v1", "embeddings"],
            Metered::Responses => &["v1", "responses"],
        }
    }

    /// The route's path.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Metered::Chat => "/v1/chat/completions",
            Metered::Completions => "/v1/completions",
            Metered::Embeddings => "/v1/embeddings",
            Metered::Responses => "/v1/responses",
        }
    }
}

/// Why a path was refused before routing (a 400: it is ambiguous, not merely unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// An encoded `.`, `/`, `\`, `%`, `;`, `?` or `#`, which servers resolve differently.
    EncodedSeparator,
    /// A raw `\` or `;`, or a control character (raw or encoded).
    ForbiddenCharacter,
    /// A `..` segment climbing above the root.
    AboveRoot,
}

impl PathError {
    /// What is wrong, for the error body.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the path does not start with /",
            PathError::BadEscape => "a % is not followed by two hex digits",
            PathError::EncodedSeparator => {
                "the path encodes a '.', '/', '\\', '%', ';', '?' or '#'"
            }
            PathError::ForbiddenCharacter => "the path holds a '\\', a ';' or a control character",
            PathError::AboveRoot => "a '..' segment climbs above the root",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The most segments a path may have after normalisation; longer ones match no route.
const MAX_SEGMENTS: usize = 64;

/// A path's segments after normalisation (see the module docs). Never empty strings.
pub(crate) fn normalize(path: &str) -> Result<Vec<String>, PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments: Vec<String> = Vec::new();
    for raw in rest.split('/') {
        let segment = decode_segment(raw)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            _ => segments.push(segment),
        }
    }
    Ok(segments)
}

/// Whether `path` is already normal: `/`, or `/`-separated non-empty segments of
/// unreserved characters and `.` that are not `.` or `..`. [`normalize`] leaves such a path
/// as it is, so its segments can be used without decoding (the common case, no copies).
pub(crate) fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.is_empty()
        || rest.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes().all(|b| is_unreserved(b) || b == b'.')
        })
}

/// One segment with its unreserved escapes decoded (the others kept, upper-cased).
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '%' {
            let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
            let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            // Both digits are ASCII: skip exactly two characters.
            chars.nth(1);
            let decoded = hi << 4 | lo;
            if matches!(decoded, b'.' | b'/' | b'\\' | b'%' | b';' | b'?' | b'#') {
                return Err(PathError::EncodedSeparator);
            }
            if decoded.is_ascii_control() {
                return Err(PathError::ForbiddenCharacter);
            }
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(hi)]));
                out.push(char::from(HEX_UPPER[usize::from(lo)]));
            }
        } else if c == '\\' || c == ';' || c.is_control() {
            return Err(PathError::ForbiddenCharacter);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3 unreserved characters, without `.` (refused when encoded).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Matches this text, ASCII case-insensitively; sent upstream in this spelling.
    Literal(String),
    /// `{name}`: any one segment.
    Param,
    /// `{*name}`: one or more segments (the pattern's last part).
    Rest,
}

/// A free route: forwarded without an authorisation and without a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeRoute {
    method: String,
    parts: Vec<Part>,
    spec: String,
}

/// Why a free-route specification was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteSpecError {
    /// Not `METHOD /path`, with an upper-case method and a path of unreserved characters
    /// and `{name}` / `{*name}` segments (`{*name}` last).
    Syntax(String),
    /// The route would also match a metered route: the meter could be bypassed.
    OverlapsMetered {
        /// The free route as given.
        route: String,
        /// The metered path it matches.
        metered: &'static str,
    },
}

impl fmt::Display for RouteSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteSpecError::Syntax(spec) => write!(
                f,
                "free route {spec:?} is not `METHOD /path` (segments: letters, digits, \
                 '-', '_', '~', '.', or {{name}} / {{*name}} last)"
            ),
            RouteSpecError::OverlapsMetered { route, metered } => write!(
                f,
                "free route {route:?} would match the metered route {metered}: refused"
            ),
        }
    }
}

impl std::error::Error for RouteSpecError {}

impl FreeRoute {
    /// Parses `METHOD /path`, e.g. `GET /v1/models/{id}`. A free route may not match any
    /// metered path, whatever its method.
    pub fn parse(spec: &str) -> Result<FreeRoute, RouteSpecError> {
        let syntax = || RouteSpecError::Syntax(spec.to_owned());
        let (method, path) = spec.trim().split_once(' ').ok_or_else(syntax)?;
        let path = path.trim();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(syntax());
        }
        let rest = path.strip_prefix('/').ok_or_else(syntax)?;
        let mut parts = Vec::new();
        if !rest.is_empty() {
            let segments: Vec<&str> = rest.split('/').collect();
            for (i, s) in segments.iter().enumerate() {
                let last = i + 1 == segments.len();
                let part = if let Some(name) =
                    s.strip_prefix("{*").and_then(|s| s.strip_suffix('}'))
                {
                    if !last || !is_name(name) {
                        return Err(syntax());
                    }
                    Part::Rest
                } else if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if !is_name(name) {
                        return Err(syntax());
                    }
                    Part::Param
                } else if !s.is_empty()
                    && *s != "."
                    && *s != ".."
                    && s.bytes().all(|b| is_unreserved(b) || b == b'.')
                {
                    Part::Literal((*s).to_owned())
                } else {
                    return Err(syntax());
                };
                parts.push(part);
            }
        }
        let route = FreeRoute {
            method: method.to_owned(),
            parts,
            spec: format!("{method} {path}"),
        };
        for (_, metered) in Metered::ALL {
            let segments = normalize(metered).map_err(|_| syntax())?;
            if route.matches(&segments).is_some() {
                return Err(RouteSpecError::OverlapsMetered {
                    route: route.spec,
                    metered,
                });
            }
        }
        Ok(route)
    }

    /// The route as given (`GET /v1/models`).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The default allow-list: `GET /v1/models`, `GET /v1/models/{*id}` (model ids may
    /// hold `/`), `GET /health`.
    pub fn defaults() -> Vec<FreeRoute> {
        ["GET /v1/models", "GET /v1/models/{*id}", "GET /health"]
            .into_iter()
            .filter_map(|s| FreeRoute::parse(s).ok())
            .collect()
    }

    /// The upstream path if `segments` match this route's path (whatever the method).
    fn matches<S: AsRef<str>>(&self, segments: &[S]) -> Option<String> {
        let mut path = String::new();
        let mut i = 0;
        for part in &self.parts {
            match part {
                Part::Literal(text) => {
                    if !segments.get(i)?.as_ref().eq_ignore_ascii_case(text) {
                        return None;
                    }
                    path.push('/');
                    path.push_str(text);
                    i += 1;
                }
                Part::Param => {
                    path.push('/');
                    path.push_str(segments.get(i)?.as_ref());
                    i += 1;
                }
                Part::Rest => {
                    if i >= segments.len() {
                        return None;
                    }
                    for s in &segments[i..] {
                        path.push('/');
                        path.push_str(s.as_ref());
                    }
                    i = segments.len();
                }
            }
        }
        if i != segments.len() {
            return None;
        }
        if path.is_empty() {
            path.push('/');
        }
        Some(path)
    }
}

/// A `{name}`: letters, digits and `_`, not empty.
fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// A metered route (the upstream path is [`Metered::path`]).
    Metered(Metered),
    /// A free route, with the normalised path to send upstream.
    Free(String),
    /// A known path with another method: 405, with these methods in `allow`.
    MethodNotAllowed(Vec<String>),
    /// No route: 404.
    NotFound,
    /// A path that cannot be normalised without ambiguity: 400.
    Invalid(PathError),
}

/// The route table: the fixed metered routes and the host's free routes.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    free: Vec<FreeRoute>,
}

impl Routes {
    /// A table with these free routes besides the metered ones.
    pub(crate) fn new(free: Vec<FreeRoute>) -> Routes {
        Routes { free }
    }

    /// Where a request with `method` (upper case, as on the wire) and `path` (the URI's
    /// path, without the query) goes.
    pub(crate) fn resolve(&self, method: &str, path: &str) -> Resolved {
        if is_normal(path) {
            let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            return self.resolve_segments(method, &segments);
        }
        match normalize(path) {
            Ok(segments) => self.resolve_segments(method, &segments),
            Err(e) => Resolved::Invalid(e),
        }
    }

    /// [`Routes::resolve`] for a path's normalised segments.
    fn resolve_segments<S: AsRef<str>>(&self, method: &str, segments: &[S]) -> Resolved {
        if segments.len() > MAX_SEGMENTS {
            return Resolved::NotFound;
        }
        for (route, _) in Metered::ALL {
            let literal = route.segments();
            if literal.len() == segments.len()
                && literal
                    .iter()
                    .zip(segments)
                    .all(|(l, s)| s.as_ref().eq_ignore_ascii_case(l))
            {
                return if method == "POST" {
                    Resolved::Metered(route)
                } else {
                    Resolved::MethodNotAllowed(vec!["POST".to_owned()])
                };
            }
        }
        let mut allow: Vec<String> = Vec::new();
        for route in &self.free {
            if let Some(upstream) = route.matches(segments) {
                if route.method == method {
                    return Resolved::Free(upstream);
                }
                if !allow.contains(&route.method) {
                    allow.push(route.method.clone());
                }
            }
        }
        if allow.is_empty() {
            Resolved::NotFound
        } else {
            Resolved::MethodNotAllowed(allow)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, expected: Resolved) {
        let routes = Routes::new(FreeRoute::defaults());
        assert_eq!(routes.resolve(method, path), expected, "{method} {path}");
    }

    #[test]
    fn every_spelling_of_a_metered_path_is_metered() {
        for path in [
            "/v1/chat/completions",
            "/v1/chat/completions/",
            "/v1/chat/%63ompletions",
            "/v1/chat/%63OMPLETIONS",
            "//v1/chat/completions",
            "/V1/CHAT/Completions",
            "/v1/./chat/completions",
            "/v1/chat/x/../completions",
            "/v1//chat///completions//",
        ] {
            check("POST", path, Resolved::Metered(Metered::Chat));
        }
        check(
            "POST",
            "/v1/responses",
            Resolved::Metered(Metered::Responses),
        );
        check(
            "POST",
            "/v1/embeddings",
            Resolved::Metered(Metered::Embeddings),
        );
        check(
            "POST",
            "/v1/%63ompletions",
            Resolved::Metered(Metered::Completions),
        );
        check(
            "GET",
            "/v1/chat/completions",
            Resolved::MethodNotAllowed(vec!["POST".into()]),
        );
    }

    #[test]
    fn metered_segments_spell_their_paths() {
        for (route, path) in Metered::ALL {
            assert_eq!(format!("/{}", route.segments().join("/")), path);
            assert_eq!(route.path(), path);
        }
    }

    #[test]
    fn a_normal_path_is_its_own_normal_form() {
        for path in [
            "/",
            "/v1/chat/completions",
            "/v1/models/Qwen2.5-7B",
            "/a/.b/c..",
        ] {
            assert!(is_normal(path), "{path}");
            let split: Vec<String> = path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            assert_eq!(normalize(path), Ok(split), "{path}");
        }
        for path in [
            "", "//v1", "/v1/", "/v1/./x", "/v1/../x", "/V1/%63", "/a;b", "/a b",
        ] {
            assert!(!is_normal(path), "{path}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (path, e) in [
            ("/v1/chat%2Fcompletions", PathError::EncodedSeparator),
            ("/v1/chat%2fcompletions", PathError::EncodedSeparator),
            ("/v1/%2E/chat/completions", PathError::EncodedSeparator),
            ("/v1/chat%5Ccompletions", PathError::EncodedSeparator),
            (
                "/v1/models/%252E%252E/chat/completions",
                PathError::EncodedSeparator,
            ),
            ("/v1/chat\\completions", PathError::ForbiddenCharacter),
            ("/v1/chat/completions;x", PathError::ForbiddenCharacter),
            ("/x/..;y/v1/chat/completions", PathError::ForbiddenCharacter),
            ("/x/..%3By/v1/chat/completions", PathError::EncodedSeparator),
            ("/v1/chat/completions%00", PathError::ForbiddenCharacter),
            ("/v1/chat/completions%", PathError::BadEscape),
            ("/v1/chat/completions%6", PathError::BadEscape),
            ("/v1/chat/completions%zz", PathError::BadEscape),
            ("/../v1/chat/completions", PathError::AboveRoot),
            ("/v1/../../chat", PathError::AboveRoot),
            ("v1/chat/completions", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ] {
            check("POST", path, Resolved::Invalid(e));
        }
    }

    #[test]
    fn only_the_allow_list_is_free() {
        check("GET", "/v1/models", Resolved::Free("/v1/models".into()));
        check("GET", "/V1/Models/", Resolved::Free("/v1/models".into()));
        check(
            "GET",
            "/v1/models/meta-llama/Llama-3%2B",
            Resolved::Free("/v1/models/meta-llama/Llama-3%2B".into()),
        );
        check("GET", "/health", Resolved::Free("/health".into()));
        check(
            "POST",
            "/v1/models",
            Resolved::MethodNotAllowed(vec!["GET".into()]),
        );
        for path in [
            "/invocations",
            "/v1/responses/resp_1",
            "/v1/audio/transcriptions",
            "/",
            "/v1",
            "/v1/chat/completions/extra",
            "/v1/chat/completions%20",
        ] {
            check("POST", path, Resolved::NotFound);
        }
        let long = "/a".repeat(MAX_SEGMENTS + 1);
        check("GET", &long, Resolved::NotFound);
    }

    #[test]
    fn free_routes_are_parsed_and_may_not_cover_a_metered_one() {
        let r = FreeRoute::parse("PUT /files/{id}").unwrap();
        let routes = Routes::new(vec![r]);
        assert_eq!(
            routes.resolve("PUT", "/FILES/Ab%7E"),
            Resolved::Free("/files/Ab~".into())
        );
        assert_eq!(routes.resolve("PUT", "/files/a/b"), Resolved::NotFound);
        for bad in [
            "get /x",
            "GET x",
            "GET /{*a}/b",
            "GET /a b",
            "GET /{}",
            "GET /..",
            "GET",
        ] {
            assert!(
                matches!(FreeRoute::parse(bad), Err(RouteSpecError::Syntax(_))),
                "{bad}"
            );
        }
        for overlapping in ["GET /v1/{*rest}", "POST /v1/chat/{x}", "GET /{a}/responses"] {
            assert!(
                matches!(
                    FreeRoute::parse(overlapping),
                    Err(RouteSpecError::OverlapsMetered { .. })
                ),
                "{overlapping}"
            );
        }
        assert_eq!(
            FreeRoute::parse("GET /").unwrap().matches::<&str>(&[]),
            Some("/".into())
        );
    }
}
