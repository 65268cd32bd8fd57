//! Property tests of every parser that sees client bytes (routes, Range and Content-Range, digests, names,
//! tags and references, manifests, Authorization headers, token scopes and the token endpoint) and of
//! configuration loading: arbitrary and near-valid input never panics, accepted input is what the grammars
//! allow, and round trips hold. Only the crate's public API is used. Cases are kept few so that the module
//! runs in seconds in a debug build; failures are not persisted (shrunk inputs are printed instead).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use proptest::prelude::*;
use regex::Regex;
use serde_json::json;
use serde_norway::{Mapping, Value as Yaml};
use sha2::Digest as _;

use berth::api::route::{percent_decode, Route, RouteError};
use berth::api::{parse_content_range, parse_range, RangeRequest};
use berth::auth::tokenserver::{TokenRequest, TokenServer};
use berth::auth::{Credentials, Scope};
use berth::config::{AclMatch, AclRule, Config, UserEntry};
use berth::oci::name::{is_valid_tag, NAME_MAX_LEN};
use berth::oci::{Digest, Manifest, Reference, RepoName};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------------------------------------
// Grammars (distribution's reference package), as regular expressions
// ------------------------------------------------------------------------------------------------

const COMPONENT_RE: &str = "[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*";

fn name_grammar() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&format!("^{COMPONENT_RE}(?:/{COMPONENT_RE})*$")).expect("a valid regex")
    })
}

fn tag_grammar() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new("^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$").expect("a valid regex"))
}

fn digest_grammar() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new("^sha256:[0-9a-f]{64}$").expect("a valid regex"))
}

/// What a token or a storage path may carry: the grammar, the length limit, nothing that walks paths.
fn assert_grammatical_name(name: &str) {
    assert!(
        name_grammar().is_match(name),
        "{name:?} is not in the grammar"
    );
    assert!(name.len() <= NAME_MAX_LEN, "{name:?} is too long");
    for bad in ["..", ":", "//"] {
        assert!(!name.contains(bad), "{name:?} contains {bad:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// Strategies
// ------------------------------------------------------------------------------------------------

/// A valid name component, separators of every kind included.
fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(([._]|__|-{1,3})[a-z0-9]{1,6}){0,2}"
}

fn repo_name() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..4).prop_map(|c| c.join("/"))
}

fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
}

fn digest_text() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}"))
}

/// Strings close to names: the name alphabet with the characters that must be refused mixed in.
fn name_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._/-]{0,24}",
        "(\\.\\.|//|__|___|--|[a-z0-9]|[._/:A-Z-]|%2[fF]|\\x00){0,16}",
        any::<String>(),
    ]
}

fn tag_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._-]{0,130}",
        "[A-Za-z0-9._:/@+ -]{0,20}",
        any::<String>()
    ]
}

/// Every byte as `%XX` where `encode` says so, in either case of hex digits.
fn percent_encode(s: &str, encode: &[bool], upper: bool) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        if encode
            .get(i % encode.len().max(1))
            .copied()
            .unwrap_or(false)
            || !b.is_ascii()
        {
            if upper {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push_str(&format!("%{b:02x}"));
            }
        } else {
            out.push(b as char);
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Names, tags, references, digests
// ------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn names_accepted_are_exactly_the_grammar(s in name_ish()) {
        let accepted = RepoName::parse(&s);
        let grammatical = name_grammar().is_match(&s) && s.len() <= NAME_MAX_LEN;
        prop_assert_eq!(accepted.is_ok(), grammatical, "{:?}: {:?}", s, accepted);
        if let Ok(name) = accepted {
            assert_grammatical_name(name.as_str());
            prop_assert_eq!(name.as_str(), s.as_str());
        }
    }

    #[test]
    fn generated_names_round_trip(s in repo_name()) {
        let name = RepoName::parse(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(name.to_string(), s.clone());
        prop_assert_eq!(RepoName::parse(&name.to_string()), Ok(name));
    }

    #[test]
    fn names_are_refused_past_255_characters(parts in prop::collection::vec("[a-z]{1,100}", 1..5)) {
        let s = parts.join("/");
        prop_assert_eq!(RepoName::parse(&s).is_ok(), s.len() <= NAME_MAX_LEN, "{} characters", s.len());
    }

    #[test]
    fn tags_accepted_are_exactly_the_grammar(s in tag_ish()) {
        prop_assert_eq!(is_valid_tag(&s), tag_grammar().is_match(&s), "{:?}", s);
    }

    #[test]
    fn references_parse_to_what_they_print(s in prop_oneof![tag_ish(), digest_text(), "sha256:[0-9a-fA-F:]{0,70}"]) {
        match Reference::parse(&s) {
            Ok(Reference::Tag(t)) => {
                prop_assert!(tag_grammar().is_match(&t) && !t.contains(':'), "{:?}", t);
                prop_assert_eq!(&t, &s);
            }
            Ok(Reference::Digest(d)) => prop_assert_eq!(d.to_string(), s.clone()),
            Err(_) => prop_assert!(!tag_grammar().is_match(&s) || s.contains(':')),
        }
        if let Ok(r) = Reference::parse(&s) {
            prop_assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn generated_references_round_trip(t in tag(), d in digest_text()) {
        prop_assert_eq!(Reference::parse(&t), Ok(Reference::Tag(t.clone())));
        let parsed = Reference::parse(&d);
        prop_assert!(matches!(&parsed, Ok(Reference::Digest(x)) if x.to_string() == d), "{:?}", parsed);
    }

    #[test]
    fn digests_accepted_are_sha256_lowercase_hex(
        s in prop_oneof![
            any::<String>(),
            "(sha256|sha512|SHA256|sha256\\+b64|sha-256|)(:|::)?[0-9a-fA-F=_./-]{0,70}",
            "sha256:[0-9a-f]{63,65}",
        ]
    ) {
        if let Ok(d) = s.parse::<Digest>() {
            prop_assert!(digest_grammar().is_match(&s), "accepted {:?}", s);
            prop_assert_eq!(d.to_string(), s.clone());
            prop_assert_eq!(d.hex(), &s["sha256:".len()..]);
        } else {
            prop_assert!(!digest_grammar().is_match(&s), "refused {:?}", s);
        }
    }

    #[test]
    fn digests_round_trip(s in digest_text(), data in prop::collection::vec(any::<u8>(), 0..256)) {
        let d: Digest = s.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(d.to_string(), s);
        let of = Digest::of(&data);
        prop_assert_eq!(of.hex(), hex::encode(sha2::Sha256::digest(&data)));
        prop_assert_eq!(of.to_string().parse::<Digest>(), Ok(of));
    }
}

// ------------------------------------------------------------------------------------------------
// Routes
// ------------------------------------------------------------------------------------------------

/// A route, its name, the fixed segments after the name, and the last segment if it is a variable.
fn route_parts() -> impl Strategy<Value = (Route, String, &'static str, Option<String>)> {
    (
        0..6u8,
        repo_name(),
        prop_oneof![tag(), digest_text()],
        digest_text(),
        "[A-Za-z0-9-]{1,36}",
        any::<bool>(),
    )
        .prop_map(|(kind, n, reference, digest, id, slash)| {
            let name = RepoName::parse(&n).expect("a generated name is valid");
            match kind {
                0 => (Route::Tags(name), n, "tags/list", None),
                1 => (
                    Route::Manifest(name, Reference::parse(&reference)),
                    n,
                    "manifests",
                    Some(reference),
                ),
                2 => (Route::Blob(name, digest.parse()), n, "blobs", Some(digest)),
                3 => (
                    Route::UploadStart(name),
                    n,
                    if slash {
                        "blobs/uploads/"
                    } else {
                        "blobs/uploads"
                    },
                    None,
                ),
                4 => (
                    Route::Upload(name, id.clone()),
                    n,
                    "blobs/uploads",
                    Some(id),
                ),
                _ => (
                    Route::Referrers(name, digest.parse()),
                    n,
                    "referrers",
                    Some(digest),
                ),
            }
        })
}

fn api_path_ish() -> impl Strategy<Value = String> {
    let segment = "[a-zA-Z0-9._%:-]{0,10}";
    let tail = prop_oneof![
        Just("tags/list".to_owned()),
        Just("blobs/uploads/".to_owned()),
        "manifests/[A-Za-z0-9._:%-]{0,20}",
        "blobs/[A-Za-z0-9._:%-]{0,20}",
        "blobs/uploads/[A-Za-z0-9._:%/-]{0,20}",
        "referrers/[A-Za-z0-9._:%-]{0,20}",
        "[a-z/]{0,12}",
    ];
    (
        prop_oneof![
            Just("/v2/"),
            Just("/v2"),
            Just("/v2//"),
            Just("/v3/"),
            Just("")
        ],
        prop::collection::vec(segment, 0..4),
        tail,
    )
        .prop_map(|(head, segs, tail)| format!("{head}{}/{tail}", segs.join("/")))
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn routes_never_panic_and_carry_valid_names(p in prop_oneof![any::<String>(), api_path_ish()]) {
        match Route::parse(&p) {
            Ok(Route::Base | Route::Catalog) | Err(RouteError::NotFound | RouteError::Name(_)) => {}
            Ok(
                Route::Tags(n)
                | Route::UploadStart(n)
                | Route::Manifest(n, _)
                | Route::Blob(n, _)
                | Route::Upload(n, _)
                | Route::Referrers(n, _),
            ) => assert_grammatical_name(n.as_str()),
        }
    }

    #[test]
    fn routes_built_from_valid_parts_parse_to_them(
        (route, name, fixed, last) in route_parts(),
        encode in prop::collection::vec(prop::bool::weighted(0.2), 1..8),
        upper in any::<bool>(),
    ) {
        let path = |name: &str, last: Option<&str>| match last {
            Some(l) => format!("/v2/{name}/{fixed}/{l}"),
            None => format!("/v2/{name}/{fixed}"),
        };
        let plain = path(&name, last.as_deref());
        prop_assert_eq!(Route::parse(&plain), Ok(route.clone()), "{}", plain);
        // Clients may percent-encode the name and the last segment (`sha256%3A...`).
        let encoded = path(
            &percent_encode(&name, &encode, upper),
            last.map(|l| percent_encode(&l, &encode, !upper)).as_deref(),
        );
        prop_assert_eq!(Route::parse(&encoded), Ok(route), "{}", encoded);
    }

    #[test]
    fn percent_decoding_inverts_encoding(s in any::<String>(), raw in "[a-z%0-9A-F]{0,12}") {
        prop_assert_eq!(percent_decode(&percent_encode(&s, &[true], true)), s.clone());
        prop_assert_eq!(percent_decode(&percent_encode(&s, &[true], false)), s.clone());
        let _ = percent_decode(&raw);
        if !s.contains('%') {
            prop_assert_eq!(percent_decode(&s), s);
        }
    }
}

#[test]
fn fixed_routes() {
    assert_eq!(Route::parse("/v2/"), Ok(Route::Base));
    assert_eq!(Route::parse("/v2"), Ok(Route::Base));
    assert_eq!(Route::parse("/v2/_catalog"), Ok(Route::Catalog));
}

// ------------------------------------------------------------------------------------------------
// Range and Content-Range
// ------------------------------------------------------------------------------------------------

/// RFC 9110 §14 for one `bytes=` range whose positions are digits: what a server must answer.
/// `None` when the range is invalid (first-pos after last-pos), where 416 and ignoring the header are
/// both allowed.
fn rfc9110(first: &str, last: &str, size: u64) -> Option<RangeRequest> {
    // A position too large for u64 is still a position: past the end of any blob.
    let num = |s: &str| s.parse::<u128>().unwrap_or(u128::MAX);
    let size128 = u128::from(size);
    let end_of = |last: u128| (last.min(size128 - 1)) as u64;
    Some(match (first.is_empty(), last.is_empty()) {
        (false, false) if num(first) > num(last) => return None,
        (false, _) if num(first) >= size128 => RangeRequest::Unsatisfiable,
        (false, true) => RangeRequest::Part {
            start: num(first) as u64,
            end: size - 1,
        },
        (false, false) => RangeRequest::Part {
            start: num(first) as u64,
            end: end_of(num(last)),
        },
        // A suffix range with a zero length is unsatisfiable; any other is satisfiable, and for an empty
        // blob the only answer is the whole (empty) blob.
        (true, false) if num(last) == 0 => RangeRequest::Unsatisfiable,
        (true, false) if size == 0 => RangeRequest::Whole,
        (true, false) => RangeRequest::Part {
            start: size - (num(last).min(size128) as u64),
            end: size - 1,
        },
        (true, true) => return None,
    })
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![0..4u64, 0..2000u64, any::<u64>()]
}

fn position() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,4}",
        "[0-9]{1,22}",
        any::<u64>().prop_map(|n| n.to_string())
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn ranges_lie_within_the_blob(
        value in prop::option::of(prop_oneof![
            any::<String>(),
            "(bytes|Bytes|items)?=? ?[0-9]{0,6} ?-? ?[0-9]{0,6}(,[0-9]{0,3}-[0-9]{0,3})?",
        ]),
        size in size(),
    ) {
        match parse_range(value.as_deref(), size) {
            RangeRequest::Part { start, end } => {
                prop_assert!(start <= end && end < size, "{:?} of {}: {}-{}", value, size, start, end)
            }
            RangeRequest::Whole | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn ranges_agree_with_rfc9110(
        first in prop_oneof![Just(String::new()), position()],
        last in prop_oneof![Just(String::new()), position()],
        size in size(),
    ) {
        let header = format!("bytes={first}-{last}");
        let got = parse_range(Some(&header), size);
        match rfc9110(&first, &last, size) {
            Some(want) => prop_assert_eq!(got, want, "{} of {}", header, size),
            None => prop_assert!(!matches!(got, RangeRequest::Part { .. }), "{} of {}: {:?}", header, size, got),
        }
    }

    #[test]
    fn content_ranges_never_panic(v in prop_oneof![any::<String>(), "(bytes[ =])?[0-9]{0,21}-[0-9]{0,21}(/[0-9*]{0,4})?"]) {
        if let Some((a, b)) = parse_content_range(&v) {
            // What the upload handler computes from it must not overflow.
            prop_assert!(a <= b && (b - a).checked_add(1).is_some(), "{:?}: {}-{}", v, a, b);
        }
    }

    #[test]
    fn content_ranges_parse_to_their_bounds(a in any::<u64>(), len in prop_oneof![0..1000u64, any::<u64>()], form in 0..4u8) {
        let b = a.saturating_add(len);
        let text = match form {
            0 => format!("{a}-{b}"),
            1 => format!("bytes {a}-{b}/*"),
            2 => format!("bytes {a}-{b}/{}", b.saturating_add(1)),
            _ => format!("bytes={a}-{b}"),
        };
        let want = (b - a).checked_add(1).map(|_| (a, b));
        prop_assert_eq!(parse_content_range(&text), want, "{}", text);
        if a > 0 {
            prop_assert_eq!(parse_content_range(&format!("{a}-{}", a - 1)), None);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Authorization headers and scopes
// ------------------------------------------------------------------------------------------------

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn scope_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (
            prop_oneof![
                Just("repository"),
                Just("repository(plugin)"),
                Just("registry"),
                Just("Repository"),
                Just("")
            ],
            name_ish(),
            "(pull|push|delete|\\*|,|[a-z]{1,3}){0,4}",
        )
            .prop_map(|(k, n, a)| format!("{k}:{n}:{a}")),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn authorization_headers_never_panic(v in prop::option::of(prop_oneof![
        any::<String>(),
        "(Basic|basic|BASIC|Bearer|bearer|Digest)? {0,2}[A-Za-z0-9+/=]{0,24} ?",
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(b))),
    ])) {
        match Credentials::from_header(v.as_deref()) {
            Credentials::None => prop_assert!(v.is_none()),
            Credentials::Bearer(t) => prop_assert!(!t.is_empty() && t.trim() == t),
            Credentials::Basic { .. } | Credentials::Malformed => {}
        }
    }

    #[test]
    fn basic_credentials_round_trip(
        user in "[^:]{0,16}",
        password in any::<String>(),
        scheme in prop_oneof![Just("Basic"), Just("basic"), Just("BASIC")],
        pad in " {0,2}",
    ) {
        let header = format!("{pad}{scheme} {pad}{}{pad}", b64(&format!("{user}:{password}")));
        prop_assert_eq!(
            Credentials::from_header(Some(&header)),
            Credentials::Basic { user, password }
        );
    }

    #[test]
    fn bearer_credentials_round_trip(token in "[A-Za-z0-9._~+/-]{1,64}=*", scheme in prop_oneof![Just("Bearer"), Just("bearer")]) {
        prop_assert_eq!(
            Credentials::from_header(Some(&format!("{scheme} {token}"))),
            Credentials::Bearer(token)
        );
    }

    #[test]
    fn scopes_print_what_they_parse(s in scope_ish()) {
        if let Some(scope) = Scope::parse(&s) {
            prop_assert!(!scope.kind.is_empty() && !scope.name.is_empty());
            prop_assert_eq!(Scope::parse(&scope.to_string()), Some(scope));
        }
    }

    #[test]
    fn generated_scopes_round_trip(
        kind in "[a-z]{1,10}(\\([a-z]{1,6}\\))?",
        host in prop::option::of("[a-z]{1,8}:[0-9]{1,5}"),
        name in repo_name(),
        actions in prop::collection::vec("pull|push|delete|\\*|[a-z]{1,6}", 0..4),
    ) {
        let name = match host { Some(h) => format!("{h}/{name}"), None => name };
        let scope = Scope { kind, name, actions };
        prop_assert_eq!(Scope::parse(&scope.to_string()), Some(scope));
    }

    #[test]
    fn cidrs_accepted_have_a_valid_prefix(s in prop_oneof![
        any::<String>(),
        "([0-9]{1,3}\\.){3}[0-9]{1,3}(/[0-9]{0,3})?",
        "[0-9a-f:]{2,12}(/[0-9]{0,3})?",
    ]) {
        if let Ok((ip, len)) = berth::config::parse_cidr(&s) {
            prop_assert!(len <= if ip.is_ipv4() { 32 } else { 128 }, "{}", s);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The token server
// ------------------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn token_server_config(acl: Vec<AclRule>) -> berth::config::TokenServer {
    let mut users = std::collections::BTreeMap::new();
    // Anonymous requests may ask for tokens.
    users.insert(String::new(), UserEntry { password: None });
    berth::config::TokenServer {
        path: "/auth/token".into(),
        issuer: "berth".into(),
        expiration: Duration::from_secs(300),
        key: None,
        certificate: None,
        users,
        acl,
    }
}

/// A token server that grants anonymous requests everything they ask for.
fn generous_token_server() -> &'static TokenServer {
    static TS: OnceLock<TokenServer> = OnceLock::new();
    TS.get_or_init(|| {
        let acl = vec![AclRule {
            matches: AclMatch {
                account: Some(String::new()),
                ..AclMatch::default()
            },
            actions: vec!["*".into()],
            comment: None,
        }];
        TokenServer::new(&token_server_config(acl)).expect("a token server")
    })
}

/// The `access` claim of a token, read without checking its signature.
fn access_of(token: &str) -> Vec<serde_json::Value> {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&raw).expect("JSON claims");
    claims["access"].as_array().cloned().unwrap_or_default()
}

fn credentials() -> impl Strategy<Value = Credentials> {
    prop_oneof![
        4 => Just(Credentials::None),
        1 => ("[a-z:]{0,6}", "[a-z]{0,6}").prop_map(|(user, password)| Credentials::Basic { user, password }),
        1 => "[a-z.]{1,12}".prop_map(Credentials::Bearer),
        1 => Just(Credentials::Malformed),
    ]
}

fn token_params() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        3 => Just("scope"),
        1 => Just("service"),
        1 => Just("account"),
        1 => Just("offline_token"),
        1 => Just("grant_type"),
        1 => Just("username"),
        1 => Just("password"),
        1 => Just("refresh_token"),
        1 => Just("client_id"),
    ];
    let value = prop_oneof![
        3 => scope_ish(),
        1 => prop::collection::vec(scope_ish(), 0..3).prop_map(|s| s.join(" ")),
        1 => Just("registry".to_owned()),
        1 => Just("password".to_owned()),
        1 => Just("refresh_token".to_owned()),
        1 => Just("true".to_owned()),
        1 => "[a-zA-Z0-9._-]{0,40}",
    ];
    (
        prop::collection::vec((key, value), 0..6),
        prop::option::of(Just(())),
    )
        .prop_map(|(mut params, service)| {
            if service.is_some() {
                params.push(("service", "registry".to_owned()));
            }
            params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        })
}

proptest! {
    #![proptest_config(cases(128))]

    /// Whatever a client sends, the endpoint answers, and a token never names a repository the grammar
    /// rejects (`a/../b`, `a/x:b`), even from a server whose ACL grants anything.
    #[test]
    fn token_requests_never_carry_invalid_names(
        post in prop::bool::weighted(0.25),
        creds in credentials(),
        params in token_params(),
        client in prop::option::of(any::<[u8; 4]>()),
    ) {
        let ts = generous_token_server();
        let req = TokenRequest {
            post,
            creds,
            params: &params,
            client: client.map(IpAddr::from),
        };
        let reply = runtime().block_on(ts.handle(req));
        prop_assert!(matches!(reply.status, 200 | 400 | 401), "{:?}", reply);
        prop_assert_eq!(reply.challenge.is_some(), reply.status == 401);
        if reply.status != 200 {
            return Ok(());
        }
        let token = reply.body["token"].as_str().unwrap_or_default();
        prop_assert_eq!(reply.body["access_token"].as_str(), Some(token));
        for entry in access_of(token) {
            let kind = entry["type"].as_str().unwrap_or_default();
            let name = entry["name"].as_str().unwrap_or_default();
            if kind.starts_with("repository") {
                prop_assert!(RepoName::parse(name).is_ok(), "token for {:?}", name);
                assert_grammatical_name(name);
            }
        }
        // Every repository scope asked for was a valid name, or the request was refused.
        for (_, v) in params.iter().filter(|(k, _)| k == "scope") {
            for s in v.split(' ').filter(|s| !s.is_empty()) {
                let scope = Scope::parse(s);
                prop_assert!(scope.is_some(), "{:?} accepted", s);
                if let Some(scope) = scope.filter(|s| s.kind.starts_with("repository")) {
                    assert_grammatical_name(&scope.name);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// The other side: valid names are granted as asked, so the property above is not vacuous.
    #[test]
    fn token_requests_for_valid_names_are_granted(
        names in prop::collection::btree_set(repo_name(), 1..4),
        actions in prop::sample::subsequence(vec!["pull", "push", "delete"], 1..3),
    ) {
        let scopes: Vec<String> = names
            .iter()
            .map(|n| format!("repository:{n}:{}", actions.join(",")))
            .collect();
        let params = vec![
            ("service".to_owned(), "registry".to_owned()),
            ("scope".to_owned(), scopes.join(" ")),
        ];
        let req = TokenRequest { post: false, creds: Credentials::None, params: &params, client: None };
        let reply = runtime().block_on(generous_token_server().handle(req));
        prop_assert_eq!(reply.status, 200, "{:?}", reply.body);
        let token = reply.body["token"].as_str().unwrap_or_default();
        let granted: BTreeSet<String> = access_of(token)
            .iter()
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect();
        prop_assert_eq!(granted, names);
    }
}

fn pattern() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just(String::new()),
        Just("*".to_owned()),
        Just("${account}/*".to_owned()),
        Just("/.+/".to_owned()),
        Just("/(a|b)+/".to_owned()),
        Just("/${account}/".to_owned()),
        "[a-z*?/.${}]{0,8}",
    ])
}

fn acl_rule() -> impl Strategy<Value = AclRule> {
    (
        pattern(),
        pattern(),
        pattern(),
        pattern(),
        prop::option::of(prop_oneof![
            Just("10.0.0.0/8".to_owned()),
            Just("0.0.0.0/0".to_owned()),
            Just("::1".to_owned()),
            Just("::/0".to_owned()),
            Just("192.0.2.1/32".to_owned()),
        ]),
        prop::sample::subsequence(vec!["pull", "push", "delete", "*"], 0..3),
    )
        .prop_map(|(account, name, kind, service, ip, actions)| AclRule {
            matches: AclMatch {
                account,
                name,
                kind,
                service,
                ip,
            },
            actions: actions.into_iter().map(str::to_owned).collect(),
            comment: None,
        })
}

proptest! {
    #![proptest_config(cases(32))]

    /// ACL patterns (globs, `/regex/`, `${account}` filled in with any account) never panic, and the
    /// actions granted are among those asked for.
    #[test]
    fn acl_grants_a_subset_of_the_request(
        acl in prop::collection::vec(acl_rule(), 0..4),
        asks in prop::collection::vec(("[a-z*?.${}()|\\\\\\[]{0,6}", "[a-z]{0,8}", scope_ish(), prop::option::of(any::<[u8; 16]>())), 1..8),
    ) {
        let ts = TokenServer::new(&token_server_config(acl)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (account, service, scope, client) in asks {
            let Some(scope) = Scope::parse(&scope) else { continue };
            let client = client.map(|b| if b[0] % 2 == 0 { IpAddr::from(b) } else { IpAddr::from([b[1], b[2], b[3], b[4]]) });
            let granted = ts.allowed(&account, client, &service, &scope);
            let asked: BTreeSet<&String> = scope.actions.iter().collect();
            prop_assert!(granted.iter().all(|a| asked.contains(a)), "{:?} of {:?}", granted, scope);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Manifests
// ------------------------------------------------------------------------------------------------

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn json_scalar() -> BoxedStrategy<serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e9f64..1e9).prop_map(serde_json::Value::from),
        prop_oneof![
            Just(OCI_MANIFEST.to_owned()),
            Just(OCI_INDEX.to_owned()),
            Just(DOCKER_MANIFEST.to_owned()),
            Just("application/vnd.docker.distribution.manifest.v1+json".to_owned()),
            digest_text(),
            "[a-z/.+:]{0,12}",
        ]
        .prop_map(serde_json::Value::from),
    ]
    .boxed()
}

fn descriptor_json() -> BoxedStrategy<serde_json::Value> {
    (
        prop::option::of(json_scalar()),
        prop::option::of(prop_oneof![
            digest_text().prop_map(serde_json::Value::from),
            json_scalar()
        ]),
        prop::option::of(prop_oneof![
            (0..1u64 << 40).prop_map(serde_json::Value::from),
            json_scalar()
        ]),
        prop::option::of(prop_oneof![
            Just(json!({"os": "linux", "architecture": "amd64"})),
            Just(json!({"os": 1})),
            json_scalar(),
        ]),
        prop::option::of(prop_oneof![Just(json!(["http://x/l"])), json_scalar()]),
        prop::option::of(prop_oneof![
            Just(json!({"a": "b"})),
            Just(json!({"a": 1})),
            json_scalar()
        ]),
    )
        .prop_map(|(mt, digest, size, platform, urls, annotations)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("mediaType", mt),
                ("digest", digest),
                ("size", size),
                ("platform", platform),
                ("urls", urls),
                ("annotations", annotations),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            serde_json::Value::Object(m)
        })
        .boxed()
}

fn manifest_json() -> BoxedStrategy<serde_json::Value> {
    (
        prop::option::of(prop_oneof![Just(json!(2)), Just(json!(1)), json_scalar()]),
        prop::option::of(json_scalar()),
        prop::option::of(prop_oneof![descriptor_json(), json_scalar()]),
        prop::option::of(prop_oneof![
            prop::collection::vec(descriptor_json(), 0..3).prop_map(serde_json::Value::from),
            json_scalar()
        ]),
        prop::option::of(prop_oneof![
            prop::collection::vec(descriptor_json(), 0..3).prop_map(serde_json::Value::from),
            json_scalar()
        ]),
        prop::option::of(prop_oneof![descriptor_json(), json_scalar()]),
        prop::option::of(json_scalar()),
    )
        .prop_map(
            |(version, mt, config, layers, manifests, subject, artifact)| {
                let mut m = serde_json::Map::new();
                for (k, v) in [
                    ("schemaVersion", version),
                    ("mediaType", mt),
                    ("config", config),
                    ("layers", layers),
                    ("manifests", manifests),
                    ("subject", subject),
                    ("artifactType", artifact),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                serde_json::Value::Object(m)
            },
        )
        .boxed()
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just(OCI_MANIFEST.to_owned()),
        Just(format!("{OCI_INDEX}; charset=utf-8")),
        Just(DOCKER_MANIFEST.to_owned()),
        Just(DOCKER_LIST.to_owned()),
        Just("application/vnd.docker.distribution.manifest.v1+prettyjws".to_owned()),
        Just("application/json".to_owned()),
        "[ -~]{0,20}",
    ])
}

/// The config blob every generated image manifest points at.
const CONFIG_BLOB: &[u8] = b"{}";

/// A manifest the registry accepts: an index with no children or an image whose config is
/// [`CONFIG_BLOB`] and whose layers are foreign, with random annotations, subject and layout.
fn pushable_manifest() -> impl Strategy<Value = (Vec<u8>, Option<String>)> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::btree_map("[a-z.]{1,8}", "[ -~]{0,8}", 0..3),
        prop::option::of(digest_text()),
        prop::option::of("[a-z]{1,8}/[a-z.+]{1,8}"),
        prop::collection::vec(digest_text(), 0..3),
        0..3u8,
        any::<bool>(),
    )
        .prop_map(
            |(index, docker, annotations, subject, artifact, layers, layout, send_type)| {
                let config = Digest::of(CONFIG_BLOB).to_string();
                let (mt, mut m) = match (index, docker) {
                    (true, false) => (OCI_INDEX, json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})),
                    (true, true) => (DOCKER_LIST, json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": []})),
                    (false, d) => {
                        let mt = if d { DOCKER_MANIFEST } else { OCI_MANIFEST };
                        let layers: Vec<_> = layers
                            .iter()
                            .map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": 7, "urls": ["https://example.com/l"]}))
                            .collect();
                        (mt, json!({"schemaVersion": 2, "mediaType": mt, "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": CONFIG_BLOB.len()}, "layers": layers}))
                    }
                };
                if !annotations.is_empty() {
                    m["annotations"] = json!(annotations);
                }
                if let Some(s) = subject {
                    m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": s, "size": 3});
                }
                if let Some(a) = artifact {
                    m["artifactType"] = json!(a);
                }
                let body = match layout {
                    0 => serde_json::to_vec(&m),
                    1 => serde_json::to_vec_pretty(&m),
                    _ => serde_json::to_vec(&m).map(|mut b| {
                        b.extend_from_slice(b"\n");
                        b
                    }),
                }
                .expect("JSON");
                (body, send_type.then(|| mt.to_owned()))
            },
        )
}

fn registry_with_config_blob(rt: &tokio::runtime::Runtime) -> berth::registry::Registry {
    let registry =
        berth::registry::Registry::new(Arc::new(berth::storage::memory::MemoryDriver::new()));
    let repo = RepoName::parse("props/app").expect("a valid name");
    let body: berth::storage::ByteStream = Box::pin(futures_util::stream::once(async {
        Ok(Bytes::from_static(CONFIG_BLOB))
    }));
    let check = berth::registry::ChunkCheck {
        start: None,
        len: Some(CONFIG_BLOB.len() as u64),
    };
    rt.block_on(registry.put_blob(&repo, &Digest::of(CONFIG_BLOB), check, body))
        .expect("the config blob is stored");
    registry
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn manifests_never_panic(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            manifest_json().prop_map(|v| serde_json::to_vec(&v).expect("JSON")),
            // Nesting deeper than any parser's stack.
            (1..20_000usize, prop_oneof![Just("["), Just("{\"config\":")])
                .prop_map(|(n, open)| open.repeat(n).into_bytes()),
        ],
        ct in content_type(),
    ) {
        if let Ok(m) = Manifest::parse(&body, ct.as_deref()) {
            let is_index = matches!(m.media_type.as_str(), OCI_INDEX | DOCKER_LIST);
            prop_assert_eq!(m.config.is_none(), is_index);
            prop_assert!(is_index || m.manifests.is_empty());
            prop_assert!(!is_index || m.layers.is_empty());
        }
        let _ = berth::oci::manifest::references(&body);
    }
}

proptest! {
    #![proptest_config(cases(48))]

    /// A manifest that parses is stored as the exact bytes pushed, under the sha256 of those bytes.
    #[test]
    fn pushed_manifests_keep_their_bytes_and_digest((body, ct) in pushable_manifest(), t in tag()) {
        prop_assert!(Manifest::parse(&body, ct.as_deref()).is_ok());
        let rt = runtime();
        let registry = registry_with_config_blob(&rt);
        let repo = RepoName::parse("props/app").expect("a valid name");
        let want = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        let pushed = rt
            .block_on(registry.put_manifest(&repo, &Reference::Tag(t.clone()), Bytes::from(body.clone()), ct.as_deref()))
            .map_err(|e| TestCaseError::fail(format!("push: {e}")))?;
        prop_assert_eq!(pushed.digest.to_string(), want.clone());
        for reference in [Reference::Tag(t), Reference::Digest(pushed.digest.clone())] {
            let got = rt
                .block_on(registry.get_manifest(&repo, &reference))
                .map_err(|e| TestCaseError::fail(format!("fetch {reference}: {e}")))?;
            prop_assert_eq!(&got.body[..], &body[..]);
            prop_assert_eq!(got.digest.to_string(), want.clone());
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------------

/// Keys of the real schema (distribution's and berth's); `0` is a list index.
const CONFIG_KEYS: &[&str] = &[
    "log.level",
    "log.formatter",
    "log.fields.service",
    "log.accesslog.disabled",
    "loglevel",
    "storage",
    "storage.filesystem.rootdirectory",
    "storage.filesystem.maxthreads",
    "storage.inmemory",
    "storage.s3.region",
    "storage.s3.bucket",
    "storage.s3.accesskey",
    "storage.s3.secretkey",
    "storage.s3.chunksize",
    "storage.s3.regionendpoint",
    "storage.s3.v4auth",
    "storage.s3.multipartcopythresholdsize",
    "storage.delete.enabled",
    "storage.redirect.disable",
    "storage.maintenance.uploadpurging.enabled",
    "storage.maintenance.uploadpurging.age",
    "storage.maintenance.uploadpurging.interval",
    "storage.maintenance.readonly.enabled",
    "storage.cache.blobdescriptor",
    "storage.tag.concurrencylimit",
    "http.addr",
    "http.net",
    "http.prefix",
    "http.host",
    "http.secret",
    "http.relativeurls",
    "http.draintimeout",
    "http.headers.X-Content-Type-Options",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.clientcas",
    "http.tls.clientauth",
    "http.tls.minimumtls",
    "http.tls.letsencrypt.cachefile",
    "http.tls.letsencrypt.email",
    "http.tls.letsencrypt.hosts",
    "http.http2.disabled",
    "http.h2c.enabled",
    "http.debug.addr",
    "http.debug.prometheus.enabled",
    "http.debug.prometheus.path",
    "catalog.maxentries",
    "tags.maxtags",
    "auth",
    "auth.htpasswd.realm",
    "auth.htpasswd.path",
    "auth.token.realm",
    "auth.token.service",
    "auth.token.issuer",
    "auth.token.rootcertbundle",
    "auth.token.autoredirect",
    "auth.silly.realm",
    "health.storagedriver.enabled",
    "health.storagedriver.interval",
    "health.storagedriver.threshold",
    "health.file.0.file",
    "health.file.0.interval",
    "health.http.0.uri",
    "health.http.0.statuscode",
    "health.http.0.headers.Authorization",
    "health.tcp.0.addr",
    "health.tcp.0.timeout",
    "notifications.endpoints.0.name",
    "notifications.endpoints.0.url",
    "notifications.endpoints.0.timeout",
    "notifications.endpoints.0.threshold",
    "notifications.endpoints.0.disabled",
    "notifications.endpoints.0.headers.Authorization",
    "notifications.endpoints.0.ignore.actions",
    "notifications.endpoints.1.url",
    "berth.gc.enabled",
    "berth.gc.interval",
    "berth.gc.graceperiod",
    "berth.http.headertimeout",
    "berth.http.maxconnections",
    "berth.cache.manifestbytes",
    "berth.notifications.queuedir",
    "berth.letsencrypt.directoryca",
    "berth.tokenserver.path",
    "berth.tokenserver.token.issuer",
    "berth.tokenserver.token.expiration",
    "berth.tokenserver.users.admin.password",
    "berth.tokenserver.acl.0.match.account",
    "berth.tokenserver.acl.0.match.ip",
    "berth.tokenserver.acl.0.actions",
    "proxy.remoteurl",
    "redis.addr",
    "middleware.registry",
    "validation.disabled",
    "version",
];

/// Values of every YAML type, shaped like what the keys take. None has the form `host:port` with a
/// host name, which loading would resolve.
fn yaml_scalar() -> impl Strategy<Value = Yaml> {
    let text = prop_oneof![
        Just(""),
        Just("0"),
        Just("0.1"),
        Just("10s"),
        Just("1h30m"),
        Just("-5s"),
        Just("1.5ms"),
        Just("true"),
        Just("yes"),
        Just("off"),
        Just("inmemory"),
        Just("filesystem"),
        Just("info"),
        Just("json"),
        Just("/var/lib/x"),
        Just("http://h/x"),
        Just("https://r.example.com"),
        Just(":5000"),
        Just("127.0.0.1:0"),
        Just("[::1]:5001"),
        Just("localhost:5002"),
        Just("10.0.0.0/8"),
        Just("${account}"),
        Just("*"),
        Just("/[a-/"),
        Just("$2y$05$abcdefghijklmnopqrstuuE4uWv6mJXQ3nQkNn4bYQx3eC8yYd5W2"),
    ]
    .prop_map(str::to_owned);
    prop_oneof![
        Just(Yaml::Null),
        any::<bool>().prop_map(Yaml::Bool),
        any::<i64>().prop_map(|n| Yaml::Number(n.into())),
        (0..100_000u64).prop_map(|n| Yaml::Number(n.into())),
        (-1e6f64..1e6).prop_map(|f| Yaml::Number(f.into())),
        text.prop_map(Yaml::String),
        "[a-zA-Z0-9 ./_*-]{0,12}".prop_map(Yaml::String),
        prop::collection::vec("[a-z/:.]{0,6}", 0..3)
            .prop_map(|v| Yaml::Sequence(v.into_iter().map(Yaml::String).collect())),
        Just(Yaml::Mapping(Mapping::new())),
    ]
}

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_owned())
}

/// Sets `path` (dotted, `0`/`1` as list indexes) in `root`, replacing what is in the way.
fn set(root: &mut Yaml, path: &str, value: Yaml) {
    let mut node = root;
    for seg in path.split('.') {
        if let Ok(i) = seg.parse::<usize>() {
            if !node.is_sequence() {
                *node = Yaml::Sequence(Vec::new());
            }
            let Yaml::Sequence(items) = node else {
                unreachable!()
            };
            while items.len() <= i {
                items.push(Yaml::Mapping(Mapping::new()));
            }
            node = &mut items[i];
        } else {
            if !node.is_mapping() {
                *node = Yaml::Mapping(Mapping::new());
            }
            let Yaml::Mapping(m) = node else {
                unreachable!()
            };
            node = m.entry(key(seg)).or_insert(Yaml::Null);
        }
    }
    *node = value;
}

fn random_config() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.9),
        prop::collection::vec((prop::sample::select(CONFIG_KEYS), yaml_scalar()), 0..12),
    )
        .prop_map(|(versioned, entries)| {
            let mut root = Yaml::Mapping(Mapping::new());
            if versioned {
                set(&mut root, "version", Yaml::String("0.1".into()));
                set(&mut root, "storage.inmemory", Yaml::Null);
            }
            for (k, v) in entries {
                set(&mut root, k, v);
            }
            serde_norway::to_string(&root).expect("YAML")
        })
}

fn env_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        4 => prop::sample::select(CONFIG_KEYS).prop_map(|k| format!("REGISTRY_{}", k.replace('.', "_").to_uppercase())),
        1 => "REGISTRY_[A-Z0-9_]{0,16}",
        1 => "[A-Z_]{1,10}",
    ];
    let value = prop_oneof![
        yaml_scalar().prop_map(|v| serde_norway::to_string(&v)
            .unwrap_or_default()
            .trim_end()
            .to_owned()),
        "[ -~]{0,12}",
        Just("[a, b]".to_owned()),
        Just("{x: 1}".to_owned()),
    ];
    prop::collection::vec((name, value), 0..4)
}

fn duration_text() -> impl Strategy<Value = Yaml> {
    // Go durations are int64 nanoseconds: written as a number of nanoseconds or as text.
    (1..(i64::MAX as u64), 0..4u8).prop_map(|(nanos, form)| {
        let d = Duration::from_nanos(nanos);
        match form {
            0 => Yaml::Number(nanos.into()),
            1 => Yaml::String(format!("{}s", d.as_secs().max(1))),
            2 => Yaml::String(format!("{}ms", d.as_millis().clamp(1, 1 << 40))),
            _ => Yaml::String(format!(
                "{}h{}m",
                d.as_secs() / 3600 % 10_000,
                d.as_secs() / 60 % 60 + 1
            )),
        }
    })
}

fn flag() -> impl Strategy<Value = Yaml> {
    any::<bool>().prop_map(Yaml::Bool)
}

fn count(range: std::ops::Range<u64>) -> impl Strategy<Value = Yaml> {
    range.prop_map(|n| Yaml::Number(n.into()))
}

fn text(re: &'static str) -> impl Strategy<Value = Yaml> {
    re.prop_map(Yaml::String)
}

/// Log field names and header names that are not among the keys whose values the renderer masks.
fn unmasked_key(re: &'static str) -> impl Strategy<Value = String> {
    re.prop_filter("masked key", |k| {
        ![
            "password",
            "secretkey",
            "accesskey",
            "sessiontoken",
            "secret",
            "authorization",
        ]
        .contains(&k.to_ascii_lowercase().as_str())
    })
}

/// A valid configuration with a random subset of the storage, http, log, auth, health, notifications
/// and berth keys set to valid values (no secrets: the renderer masks them).
fn valid_config() -> impl Strategy<Value = String> {
    let storage = prop_oneof![
        text("/[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,2}")
            .prop_map(|r| vec![("storage.filesystem.rootdirectory", r)]),
        Just(vec![("storage.inmemory", Yaml::Null)]),
        (
            text("[a-z0-9-]{1,10}"),
            text("[a-z0-9.-]{3,12}"),
            prop::option::of(text("/?[a-z]{1,6}(/[a-z]{1,6})?/?")),
            prop::option::of(prop_oneof![
                text("http://127\\.0\\.0\\.1:[0-9]{4}"),
                Just(Yaml::String("https://s3.eu-west-1.amazonaws.com".into())),
            ]),
            prop::option::of(count(5 << 20..5 << 30)),
            prop::option::of(prop_oneof![
                Just(Yaml::String("STANDARD".into())),
                Just(Yaml::String("NONE".into())),
                Just(Yaml::String("REDUCED_REDUNDANCY".into())),
            ]),
            prop::option::of(flag()),
            prop::option::of(count(0..1 << 40)),
        )
            .prop_map(
                |(region, bucket, root, endpoint, chunk, class, secure, threshold)| {
                    let mut out =
                        vec![("storage.s3.region", region), ("storage.s3.bucket", bucket)];
                    let optional = [
                        ("storage.s3.rootdirectory", root),
                        ("storage.s3.regionendpoint", endpoint),
                        ("storage.s3.chunksize", chunk),
                        ("storage.s3.storageclass", class),
                        ("storage.s3.secure", secure),
                        ("storage.s3.multipartcopythresholdsize", threshold),
                    ];
                    out.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
                    out
                }
            ),
    ];
    let optional: Vec<(&'static str, BoxedStrategy<Yaml>)> = vec![
        (
            "log.level",
            prop::sample::select(vec![
                "error", "warn", "info", "debug", "trace", "warning", "fatal",
            ])
            .prop_map(|s| Yaml::String(s.into()))
            .boxed(),
        ),
        (
            "log.formatter",
            prop::sample::select(vec!["text", "json", "logstash"])
                .prop_map(|s| Yaml::String(s.into()))
                .boxed(),
        ),
        ("log.accesslog.disabled", flag().boxed()),
        ("storage.delete.enabled", flag().boxed()),
        ("storage.redirect.disable", flag().boxed()),
        ("storage.maintenance.uploadpurging.enabled", flag().boxed()),
        (
            "storage.maintenance.uploadpurging.age",
            duration_text().boxed(),
        ),
        (
            "storage.maintenance.uploadpurging.interval",
            duration_text().boxed(),
        ),
        ("storage.maintenance.uploadpurging.dryrun", flag().boxed()),
        ("storage.maintenance.readonly.enabled", flag().boxed()),
        (
            "http.addr",
            prop::sample::select(vec![
                ":5000",
                "127.0.0.1:0",
                "[::1]:5001",
                "localhost:5002",
                "0.0.0.0:80",
            ])
            .prop_map(|s| Yaml::String(s.into()))
            .boxed(),
        ),
        ("http.prefix", text("/?[a-z]{1,6}/?").boxed()),
        (
            "http.host",
            text("https?://[a-z]{1,8}\\.example\\.com(:[0-9]{2,5})?").boxed(),
        ),
        ("http.relativeurls", flag().boxed()),
        ("http.draintimeout", duration_text().boxed()),
        ("http.http2.disabled", flag().boxed()),
        (
            "http.debug.addr",
            Just(Yaml::String(":5001".into())).boxed(),
        ),
        ("http.debug.prometheus.enabled", flag().boxed()),
        ("http.debug.prometheus.path", text("/?[a-z]{1,8}").boxed()),
        ("catalog.maxentries", count(0..100_000).boxed()),
        ("tags.maxtags", count(0..10_000).boxed()),
        ("health.storagedriver.enabled", flag().boxed()),
        ("health.storagedriver.interval", duration_text().boxed()),
        ("health.storagedriver.threshold", count(0..10).boxed()),
        ("health.tcp.0.addr", text("[a-z]{1,8}:[0-9]{1,4}").boxed()),
        ("health.tcp.0.timeout", duration_text().boxed()),
        (
            "health.http.0.uri",
            text("https?://[a-z]{1,8}/[a-z]{0,8}").boxed(),
        ),
        ("health.http.0.statuscode", count(100..600).boxed()),
        ("health.file.0.file", text("/[a-z]{1,8}").boxed()),
        ("notifications.endpoints.0.name", text("[a-z]{1,8}").boxed()),
        ("notifications.endpoints.0.timeout", duration_text().boxed()),
        ("notifications.endpoints.0.threshold", count(0..20).boxed()),
        ("notifications.endpoints.0.backoff", duration_text().boxed()),
        (
            "notifications.endpoints.0.ignore.actions",
            prop::sample::subsequence(vec!["pull", "push", "mount", "delete"], 0..4)
                .prop_map(|a| {
                    Yaml::Sequence(a.into_iter().map(|s| Yaml::String(s.into())).collect())
                })
                .boxed(),
        ),
        ("berth.gc.enabled", flag().boxed()),
        ("berth.gc.interval", duration_text().boxed()),
        ("berth.gc.deleteuntagged", flag().boxed()),
        ("berth.gc.graceperiod", duration_text().boxed()),
        ("berth.gc.dryrun", flag().boxed()),
        ("berth.http.headertimeout", duration_text().boxed()),
        ("berth.http.bodytimeout", duration_text().boxed()),
        ("berth.http.idletimeout", duration_text().boxed()),
        ("berth.http.maxconnections", count(1..100_000).boxed()),
        ("berth.cache.manifestbytes", count(0..1 << 30).boxed()),
        ("berth.cache.summarybytes", count(0..1 << 30).boxed()),
        ("berth.notifications.queuedir", text("/[a-z]{1,8}").boxed()),
        (
            "berth.letsencrypt.directoryca",
            text("/[a-z]{1,8}\\.pem").boxed(),
        ),
    ];
    let (keys, values): (Vec<&'static str>, Vec<BoxedStrategy<Yaml>>) =
        optional.into_iter().unzip();
    let values: Vec<BoxedStrategy<Option<Yaml>>> = values
        .into_iter()
        .map(|v| prop::option::weighted(0.3, v).boxed())
        .collect();
    (
        storage,
        values,
        prop::collection::btree_map(unmasked_key("[a-z]{1,8}"), "[ -~]{0,12}", 0..3),
        prop::collection::btree_map(
            unmasked_key("X-[A-Z][a-z]{1,8}"),
            prop::collection::vec("[!-~]([ -~]{0,8}[!-~])?", 0..3),
            0..3,
        ),
        prop::option::of(("[A-Za-z ]{1,10}", "/[a-z]{1,8}")),
        prop::option::of(prop::sample::select(vec![
            "",
            "https://ops.example.com/ready",
        ])),
    )
        .prop_map(
            move |(storage, values, fields, headers, htpasswd, endpoint)| {
                let mut root = Yaml::Mapping(Mapping::new());
                set(&mut root, "version", Yaml::String("0.1".into()));
                for (k, v) in storage {
                    set(&mut root, k, v);
                }
                for (k, v) in keys.iter().zip(values) {
                    if let Some(v) = v {
                        set(&mut root, k, v);
                    }
                }
                for (k, v) in fields {
                    set(&mut root, &format!("log.fields.{k}"), Yaml::String(v));
                }
                for (k, v) in headers {
                    set(
                        &mut root,
                        &format!("http.headers.{k}"),
                        Yaml::Sequence(v.into_iter().map(Yaml::String).collect()),
                    );
                }
                if let Some((realm, path)) = htpasswd {
                    set(&mut root, "auth.htpasswd.realm", Yaml::String(realm));
                    set(&mut root, "auth.htpasswd.path", Yaml::String(path));
                }
                // An endpoint's URL is required once any of its keys is set.
                match endpoint.filter(|u| !u.is_empty()) {
                    Some(url) => set(
                        &mut root,
                        "notifications.endpoints.0.url",
                        Yaml::String(url.into()),
                    ),
                    None => {
                        if let Yaml::Mapping(top) = &mut root {
                            top.remove("notifications");
                        }
                    }
                }
                // A health check's target is required once any of its keys is set.
                for (list, target, value) in [
                    ("tcp", "addr", "db:5432"),
                    ("http", "uri", "http://h/ready"),
                ] {
                    let path = format!("health.{list}.0");
                    let has = root
                        .get("health")
                        .and_then(|h| h.get(list))
                        .and_then(|l| l.get(0))
                        .is_some();
                    let has_target = root
                        .get("health")
                        .and_then(|h| h.get(list))
                        .and_then(|l| l.get(0))
                        .and_then(|e| e.get(target))
                        .is_some();
                    if has && !has_target {
                        set(
                            &mut root,
                            &format!("{path}.{target}"),
                            Yaml::String(value.into()),
                        );
                    }
                }
                serde_norway::to_string(&root).expect("YAML")
            },
        )
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn configuration_text_never_panics(text in prop_oneof![
        any::<String>(),
        "(version: 0\\.1\n)?([a-z]{1,8}:( [a-z0-9:/]{0,8})?\n( {2,4}[a-z]{1,8}: [a-z0-9]{0,6}\n){0,3}){0,4}",
    ]) {
        let _ = Config::load(Some(("config.yml", &text)), Vec::new());
    }

    #[test]
    fn configuration_from_schema_keys_never_panics(text in random_config(), env in env_pairs()) {
        if let Ok((config, _)) = Config::load(Some(("config.yml", &text)), env.clone()) {
            let _ = config.render_effective();
        }
        let _ = Config::load(None, env);
    }

    /// What `berth config check` prints loads again to the same configuration.
    #[test]
    fn effective_configuration_loads_again(text in valid_config()) {
        let (config, _) = Config::load(Some(("config.yml", &text)), Vec::new())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let out = config.render_effective();
        let (again, warnings) = Config::load(Some(("effective", &out)), Vec::new())
            .map_err(|e| TestCaseError::fail(format!("reload: {e}\n{out}")))?;
        prop_assert!(warnings.is_empty(), "{:?}\n{}", warnings, out);
        prop_assert_eq!(&again, &config, "{}", out);
        prop_assert_eq!(again.render_effective(), out);
    }
}
