//! The web UI, in a real browser (headless Chromium over WebDriver) on a berth started by the test, with
//! images pushed by skopeo (a multi-arch index and a single image) and a referrer: browsing, search,
//! image pages, deleting, htpasswd and token-server sign-in, rights, an XSS corpus, and screenshots in
//! both themes (written to `target/ui-screenshots`).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use super::support::browser::{Browser, Theme};
use super::support::clients::{skopeo_copy, write_multi_arch_layout, write_single_arch_layout};
use super::support::{digest, http_client, reader_admin_acl, StoreKind, TestServer, TestStore};

/// Markup and script in everything a client can push; none of it may run or become an element.
const XSS: [&str; 6] = [
    "<script>window.__xss=1;alert(1)</script>",
    "\"><img src=x onerror=\"window.__xss=2;alert(2)\">",
    "'><svg onload=alert(3)>",
    "javascript:alert(4)",
    "</td></tr></table><b class=\"injected\">x</b>",
    "<iframe src=\"javascript:alert(5)\"></iframe>{{7*7}}",
];

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots")
}

fn yaml(store: &TestStore, extra: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: '{}'\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:0\n  draintimeout: 10s\n{extra}",
        store.root.display()
    )
}

/// Copies an OCI layout's image into the registry with skopeo (off the runtime's threads).
async fn skopeo_push(src: String, dest: String) {
    tokio::task::spawn_blocking(move || skopeo_copy(&src, &dest))
        .await
        .unwrap();
}

/// Pushes skopeo's multi-arch image as `repo:tags[0]` (and the other tags), and a single-arch one.
async fn push_images(server: &TestServer, repo: &str, tags: &[&str]) -> String {
    let host = server.base.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let multi = dir.path().join("multi");
    let index = write_multi_arch_layout(&multi, "1.0", repo);
    for tag in tags {
        skopeo_push(
            format!("oci:{}:1.0", multi.display()),
            format!("docker://{host}/{repo}:{tag}"),
        )
        .await;
    }
    index
}

async fn push_single(server: &TestServer, repo: &str, tag: &str) {
    let host = server.base.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    write_single_arch_layout(&single, "v1", repo);
    skopeo_push(
        format!("oci:{}:v1", single.display()),
        format!("docker://{host}/{repo}:{tag}"),
    )
    .await;
}

/// A signature-like artifact whose subject is `subject`, pushed over the API.
async fn push_referrer(server: &TestServer, repo: &str, subject: &str, note: &str) -> String {
    let client = server.client();
    let empty = client.push_blob(repo, b"{}").await;
    let payload = client
        .push_blob(repo, format!("signature of {subject}").as_bytes())
        .await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": payload,
                    "size": format!("signature of {subject}").len()}],
        "subject": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": subject, "size": 1},
        "annotations": {"org.opencontainers.image.created": "2024-05-01T10:00:00Z", "note": note},
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let d = digest(&body);
    client
        .put_manifest(repo, &d, OCI_MANIFEST, &body)
        .await
        .assert_status(201);
    // Also under cosign's tag for a signature of `subject`.
    let sidecar = format!("{}.sig", subject.replace(':', "-"));
    client
        .put_manifest(repo, &sidecar, OCI_MANIFEST, &body)
        .await
        .assert_status(201);
    d
}

/// An image whose configuration (author, env, labels, history) and annotations carry the XSS corpus.
async fn push_xss_image(server: &TestServer, repo: &str, tag: &str) -> String {
    let client = server.client();
    let layer = client.push_blob(repo, b"not really a layer").await;
    let labels: serde_json::Map<String, Value> = XSS
        .iter()
        .enumerate()
        .map(|(i, x)| (format!("label{i}{x}"), json!(x)))
        .collect();
    let config = json!({
        "architecture": "amd64", "os": "linux", "created": XSS[0], "author": XSS[1],
        "config": {"Env": XSS, "Cmd": XSS, "Entrypoint": [XSS[2]], "Labels": labels,
                   "ExposedPorts": {XSS[4]: {}}},
        "history": XSS.iter().map(|x| json!({"created_by": x, "created": x})).collect::<Vec<_>>(),
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = client.push_blob(repo, &config).await;
    let annotations: serde_json::Map<String, Value> = XSS
        .iter()
        .enumerate()
        .map(|(i, x)| (format!("a{i}{x}"), json!(x)))
        .collect();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 18}],
        "annotations": annotations,
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    client
        .put_manifest(repo, tag, OCI_MANIFEST, &body)
        .await
        .assert_status(201);
    digest(&body)
}

/// Nothing of the corpus ran or became an element, and its text is on the page as it was pushed.
async fn assert_inert(b: &Browser, page: &str) {
    assert!(!b.has_dialog().await, "{page}: a dialog opened");
    assert_eq!(
        b.js("return window.__xss === undefined").await,
        json!(true),
        "{page}: a payload ran"
    );
    for css in [
        "img",
        "svg",
        "iframe",
        ".injected",
        "script:not([src])",
        "[onerror]",
        "[onload]",
    ] {
        assert_eq!(b.count(css).await, 0, "{page}: `{css}` was injected");
    }
    assert_eq!(b.count("script").await, 1, "{page}: only the copy script");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_browse_search_inspect_delete() {
    let store = TestStore::new(StoreKind::Fs);
    let server = TestServer::from_yaml(&store, &yaml(&store, "")).await;
    let index = push_images(&server, "apps/web", &["1.0", "latest"]).await;
    push_single(&server, "tools/cli", "v1").await;
    let sig = push_referrer(&server, "apps/web", &index, "signed").await;
    push_xss_image(&server, "xss/evil", "t1").await;
    server.wait_index_ready().await;

    // The pages' headers, without a browser.
    let http = http_client(reqwest::Client::builder());
    let home = http.get(format!("{}/", server.base)).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let h = home.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    // Nothing under /v2/ changed.
    let v2 = http
        .get(format!("{}/v2/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(v2.headers()["content-type"], "application/json");
    assert!(v2.headers().get("content-security-policy").is_none());

    let b = Browser::start().await;
    let shots = screenshots();
    b.theme(Theme::Light).await;

    // Home: every repository, grouped by namespace, with its tag count.
    b.goto(&format!("{}/", server.base)).await;
    let text = b.text().await;
    for repo in ["apps/web", "tools/cli", "xss/evil"] {
        assert!(text.contains(repo), "home lacks {repo}: {text}");
    }
    assert_eq!(b.count("#repositories tr.repo").await, 3);
    assert_eq!(b.count("#repositories tr.ns").await, 3);
    b.screenshot(&shots, "home-light").await;

    // Search, from the box.
    let q = b.client.find(fantoccini::Locator::Css("#q")).await.unwrap();
    q.send_keys("web").await.unwrap();
    b.client
        .find(fantoccini::Locator::Css("form.search button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_until("location.search.includes('q=web')").await;
    let text = b.text().await;
    assert!(
        text.contains("apps/web") && !text.contains("tools/cli"),
        "search: {text}"
    );
    assert_eq!(b.count("#repositories tr.repo").await, 1);

    // The repository: its tags, with digest, size and platforms.
    b.goto(&format!("{}/r/apps/web", server.base)).await;
    assert_eq!(
        b.count("#tags tr.tag").await,
        3,
        "1.0, latest and the signature's tag"
    );
    let text = b.text().await;
    assert!(
        text.contains("linux/amd64") && text.contains("linux/arm64"),
        "{text}"
    );
    assert!(text.contains("3 tags"), "{text}");
    assert_eq!(
        b.count("#tags tr.tag .badge").await,
        2,
        "1.0 and latest are signed"
    );
    b.screenshot(&shots, "repository-light").await;

    // The image: platforms, the referrer, the pull commands.
    b.goto(&format!("{}/i/apps/web:1.0", server.base)).await;
    assert_eq!(b.count("#platforms tr.platform").await, 2);
    assert_eq!(b.count("#referrers tr.referrer").await, 1);
    let text = b.text().await;
    let host = server.base.trim_start_matches("http://");
    assert!(
        text.contains(&format!("docker pull {host}/apps/web:1.0")),
        "{text}"
    );
    assert!(
        text.contains(&format!("podman pull {host}/apps/web@{index}")),
        "{text}"
    );
    assert!(
        text.contains("application/vnd.dev.cosign.artifact.sig.v1+json"),
        "{text}"
    );
    assert!(b.count("button.copy").await >= 2, "the copy buttons");
    b.screenshot(&shots, "image-light").await;
    // A platform opens its image, with layers and configuration; the referrer opens too.
    let child = b
        .js("return document.querySelector('#platforms tr.platform a').getAttribute('href')")
        .await;
    b.goto(&format!("{}{}", server.base, child.as_str().unwrap()))
        .await;
    assert_eq!(b.count("#layers tbody tr").await, 2);
    assert!(b.text().await.contains("linux/amd64"));
    b.goto(&format!("{}/i/apps/web@{sig}", server.base)).await;
    assert!(
        b.text().await.contains(&index),
        "the referrer names its subject"
    );

    // The XSS corpus is shown as text and never runs.
    b.goto(&format!("{}/i/xss/evil:t1", server.base)).await;
    assert_inert(&b, "image").await;
    let text = b.text().await;
    for x in XSS {
        assert!(text.contains(x), "`{x}` is not shown as text");
    }
    b.goto(&format!("{}/r/xss/evil", server.base)).await;
    assert_inert(&b, "repository").await;
    b.goto(&format!(
        "{}/?q=%3Cscript%3Ealert(1)%3C/script%3E",
        server.base
    ))
    .await;
    assert_inert(&b, "search").await;

    // Delete a tag: the confirmation says when the space returns, then the tag is gone.
    b.goto(&format!("{}/r/apps/web", server.base)).await;
    let link = b
        .js("return [...document.querySelectorAll('#tags tr.tag')].find(r => r.innerText.includes('latest')).querySelector('a.danger').getAttribute('href')")
        .await;
    b.goto(&format!("{}{}", server.base, link.as_str().unwrap()))
        .await;
    assert!(b.text().await.contains("next garbage collection"));
    b.client
        .find(fantoccini::Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for_text("Deleted latest").await;
    assert_eq!(b.count("#tags tr.tag").await, 2);
    let tags = server.client().get("/v2/apps/web/tags/list").await;
    let sidecar = format!("{}.sig", index.replace(':', "-"));
    assert_eq!(tags.json()["tags"], json!(["1.0", sidecar]));

    // The same pages in the dark theme.
    b.theme(Theme::Dark).await;
    b.goto(&format!("{}/", server.base)).await;
    let bg = b
        .js("return getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(bg, json!("rgb(15, 19, 24)"), "the dark theme");
    b.screenshot(&shots, "home-dark").await;
    b.goto(&format!("{}/r/apps/web", server.base)).await;
    b.screenshot(&shots, "repository-dark").await;
    b.goto(&format!("{}/i/apps/web:1.0", server.base)).await;
    b.screenshot(&shots, "image-dark").await;
    b.close().await;
}

/// A POST that deletes, as a page's form sends it.
async fn post_delete(
    base: &str,
    cookie: Option<&str>,
    auth: Option<&str>,
    repo: &str,
    reference: &str,
    csrf: &str,
) -> u16 {
    let http = http_client(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()));
    let mut req = http
        .post(format!("{base}/delete"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", base)
        .body(format!("repo={repo}&ref={reference}&csrf={csrf}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_htpasswd_asks_the_browser() {
    let store = TestStore::new(StoreKind::Fs);
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        berth::auth::htpasswd::entry("alice", "alice-pw", 4).unwrap(),
    )
    .unwrap();
    let extra = format!(
        "auth:\n  htpasswd:\n    realm: berth-ui\n    path: '{}'\n",
        htpasswd.display()
    );
    let server = TestServer::from_yaml(&store, &yaml(&store, &extra)).await;
    let http = http_client(reqwest::Client::builder());
    // The home page answers probes of `/` with 200 and a way to sign in; a browser, and the other pages,
    // are asked for a password.
    let anon = http.get(format!("{}/", server.base)).send().await.unwrap();
    assert_eq!(anon.status(), 200);
    assert!(anon.text().await.unwrap().contains("href=\"/login\""));
    let browser = http
        .get(format!("{}/", server.base))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 401, "a browser is asked");
    for page in ["/login", "/r/team/app", "/i/team/app:v1"] {
        let anon = http
            .get(format!("{}{page}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(anon.status(), 401, "{page}");
        assert_eq!(
            anon.headers()["www-authenticate"],
            "Basic realm=\"berth-ui\""
        );
    }
    let wrong = http
        .get(format!("{}/", server.base))
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Push as alice, then sign in from the browser (credentials in the URL answer its Basic prompt).
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-pw")
    );
    let client = server.client();
    let layer = client
        .call(
            "POST",
            &format!("/v2/team/app/blobs/uploads/?digest={}", digest(b"x")),
            &[("authorization", &basic)],
            b"x".to_vec(),
        )
        .await;
    assert_eq!(layer.status, 201, "{layer:?}");
    server.wait_index_ready().await;
    let config = br#"{"architecture":"amd64","os":"linux","created":"2024-02-03T04:05:06Z"}"#;
    let cd = digest(config);
    client
        .call(
            "POST",
            &format!("/v2/team/app/blobs/uploads/?digest={cd}"),
            &[("authorization", &basic)],
            config.to_vec(),
        )
        .await
        .assert_status(201);
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(b"x"), "size": 1}]});
    client
        .call(
            "PUT",
            "/v2/team/app/manifests/v1",
            &[("authorization", &basic), ("content-type", OCI_MANIFEST)],
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .assert_status(201);

    let b = Browser::start().await;
    let host = server.base.trim_start_matches("http://");
    b.goto(&format!("http://alice:alice-pw@{host}/")).await;
    let text = b.text().await;
    assert!(
        text.contains("team/app") && text.contains("Signed in as alice"),
        "{text}"
    );
    b.goto(&format!("http://alice:alice-pw@{host}/r/team/app"))
        .await;
    let text = b.text().await;
    assert!(
        text.contains("2024-02-03 04:05 UTC"),
        "the creation time: {text}"
    );
    assert_eq!(b.count("a.danger").await, 1, "alice may delete");
    b.close().await;
    // A delete without the form's token is refused.
    assert_eq!(
        post_delete(&server.base, None, Some(&basic), "team/app", "v1", "forged").await,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_token_server_sign_in_and_rights() {
    let store = TestStore::new(StoreKind::Fs);
    let extra = format!(
        r#"auth:
  token:
    realm: http://registry.invalid/auth/token
    service: berth-ui
    issuer: berth-ui-issuer
berth:
  tokenserver:
    token:
      issuer: berth-ui-issuer
      expiration: 300
{acl}"#,
        acl = reader_admin_acl(),
    );
    let server = TestServer::from_yaml(&store, &yaml(&store, &extra)).await;
    for repo in ["shared/app", "private/db", "public/www"] {
        push_direct(&server, &server.base, "berth-ui", repo).await;
    }
    server.wait_index_ready().await;

    let b = Browser::start().await;
    // Anonymous: only public/*, and a way to sign in.
    b.goto(&format!("{}/", server.base)).await;
    let text = b.text().await;
    assert!(
        text.contains("public/www") && !text.contains("shared/app") && !text.contains("private/db"),
        "{text}"
    );
    b.sign_in(&server.base, "reader", "wrong").await;
    b.wait_for_text("is wrong").await;
    b.sign_in(&server.base, "reader", "reader-pw").await;
    b.wait_for_text("Signed in as reader").await;
    let text = b.text().await;
    assert!(text.contains("Signed in as reader"), "{text}");
    assert!(
        text.contains("shared/app") && !text.contains("private/db"),
        "{text}"
    );
    // A repository beyond the ACL is not there for reader.
    b.goto(&format!("{}/r/private/db", server.base)).await;
    assert!(b.text().await.contains("no such repository"));
    // reader may pull shared/app, not delete: no delete button, and the POST is refused.
    b.goto(&format!("{}/i/shared/app:v1", server.base)).await;
    assert!(b.text().await.contains("docker pull"));
    assert_eq!(b.count("a.danger").await, 0, "no delete button for reader");
    let cookie = b.client.get_named_cookie("berth_session").await.unwrap();
    let cookie = format!("berth_session={}", cookie.value());
    let csrf = b
        .js("return document.querySelector('form.inline input[name=csrf]').value")
        .await;
    let csrf = csrf.as_str().unwrap();
    assert_eq!(
        post_delete(&server.base, Some(&cookie), None, "shared/app", "v1", csrf).await,
        403
    );
    // Sign out, then in as admin: delete buttons, and the delete goes through.
    b.sign_out().await;
    assert!(
        b.client.get_named_cookie("berth_session").await.is_err(),
        "signed out"
    );
    b.sign_in(&server.base, "admin", "admin-pw").await;
    b.wait_for_text("Signed in as admin").await;
    assert!(b.text().await.contains("private/db"));
    b.goto(&format!("{}/r/shared/app", server.base)).await;
    assert_eq!(b.count("a.danger").await, 1, "admin may delete");
    let cookie = b.client.get_named_cookie("berth_session").await.unwrap();
    let cookie = format!("berth_session={}", cookie.value());
    let csrf = b
        .js("return document.querySelector('form.inline input[name=csrf]').value")
        .await;
    // reader's token is not admin's.
    assert_eq!(
        post_delete(&server.base, Some(&cookie), None, "shared/app", "v1", "00").await,
        403
    );
    assert_eq!(
        post_delete(
            &server.base,
            Some(&cookie),
            None,
            "shared/app",
            "v1",
            csrf.as_str().unwrap()
        )
        .await,
        303
    );
    // The same delete again finds nothing, and a form naming no valid tag is refused.
    let csrf = csrf.as_str().unwrap();
    assert_eq!(
        post_delete(&server.base, Some(&cookie), None, "shared/app", "v1", csrf).await,
        404
    );
    assert_eq!(
        post_delete(
            &server.base,
            Some(&cookie),
            None,
            "shared/app",
            "no%20tag",
            csrf
        )
        .await,
        400
    );
    b.goto(&format!("{}/r/shared/app", server.base)).await;
    assert_eq!(b.count("#tags tr.tag").await, 0, "the tag is gone");
    b.close().await;
}

/// An image pushed over the API as admin, with a token from the token server at `ts` for `service`.
async fn push_direct(server: &TestServer, ts: &str, service: &str, repo: &str) {
    let http = http_client(reqwest::Client::builder());
    let token = http
        .get(format!(
            "{ts}/auth/token?service={service}&scope=repository:{repo}:pull,push"
        ))
        .basic_auth("admin", Some("admin-pw"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let token: Value = serde_json::from_slice(&token).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let auth = [("authorization", bearer.as_str())];
    let client = server.client();
    let config =
        br#"{"architecture":"arm64","os":"linux","created":"2024-03-04T05:06:07Z"}"#.to_vec();
    let layer = format!("layer of {repo}").into_bytes();
    for blob in [&config, &layer] {
        client
            .call(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={}", digest(blob)),
                &auth,
                blob.clone(),
            )
            .await
            .assert_status(201);
    }
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}]});
    client
        .call(
            "PUT",
            &format!("/v2/{repo}/manifests/v1"),
            &[auth[0], ("content-type", OCI_MANIFEST)],
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .assert_status(201);
}

#[tokio::test]
async fn ui_off_or_under_a_prefix() {
    let http = http_client(reqwest::Client::builder());
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, ct, r.text().await.unwrap())
        }
    };
    // Off: the root answers as registry:2's does, and nothing else is there.
    let store = TestStore::new(StoreKind::Fs);
    let off =
        TestServer::from_yaml(&store, &yaml(&store, "berth:\n  ui:\n    enabled: false\n")).await;
    assert_eq!(
        get(format!("{}/", off.base)).await,
        (200, String::new(), String::new())
    );
    assert_eq!(get(format!("{}/static/ui.css", off.base)).await.0, 404);
    // Under /ui/: the pages are there, the root is registry:2's, /v2/ is the API's.
    let store = TestStore::new(StoreKind::Fs);
    let extra = "berth:\n  ui:\n    prefix: /ui\n    title: Acme <registry>\n";
    let on = TestServer::from_yaml(&store, &yaml(&store, extra)).await;
    let (status, ct, body) = get(format!("{}/ui/", on.base)).await;
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(
        body.contains("Acme &lt;registry&gt;"),
        "the title, escaped: {body}"
    );
    assert!(body.contains("href=\"/ui/static/ui.css\""));
    assert_eq!(
        get(format!("{}/", on.base)).await,
        (200, String::new(), String::new())
    );
    let (status, ct, _) = get(format!("{}/ui/static/ui.css", on.base)).await;
    assert_eq!((status, ct.as_str()), (200, "text/css; charset=utf-8"));
    assert_eq!(get(format!("{}/ui/r/nope", on.base)).await.0, 404);
    assert_eq!(get(format!("{}/ui/i/nope:latest", on.base)).await.0, 404);
    assert_eq!(get(format!("{}/ui/nothing-here", on.base)).await.0, 404);
    let (status, ct, body) = get(format!("{}/v2/", on.base)).await;
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (200, "application/json", "{}")
    );
}

#[tokio::test]
async fn ui_overview_shows_the_last_collection() {
    let store = TestStore::new(StoreKind::Fs);
    let extra = "berth:\n  gc:\n    enabled: true\n    interval: 1s\n    graceperiod: 0s\n";
    let server = TestServer::from_yaml(&store, &yaml(&store, extra)).await;
    let client = server.client();
    client.push_image("kept/app", "v1", "kept").await;
    let (_, gone) = client.push_image("gone/app", "v1", "gone").await;
    client
        .delete(&format!("/v2/gone/app/manifests/{gone}"))
        .await
        .assert_status(202);
    server.wait_index_ready().await;
    let http = http_client(reqwest::Client::builder());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let body = http
            .get(format!("{}/", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("every 1s"), "the schedule: {body}");
        if body.contains("reclaiming") && !body.contains("reclaiming 0 B") {
            // gone/app stays in the catalog (its `_manifests` directory), as in registry:2.
            assert!(body.contains("<dt>Repositories</dt><dd>2</dd>"), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no collection shown: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A cache of an upstream offers no delete (the API refuses deletes there); a local repository beside it
/// does.
#[tokio::test]
async fn ui_offers_no_delete_in_a_cached_repository() {
    let http = http_client(reqwest::Client::builder());
    let up_store = TestStore::new(StoreKind::Fs);
    let up = TestServer::from_yaml(&up_store, &yaml(&up_store, "")).await;
    up.client().push_image("lib/app", "1", "cached").await;
    let store = TestStore::new(StoreKind::Fs);
    let extra = format!(
        "berth:\n  proxy:\n    upstreams:\n      - name: up\n        url: {}\n",
        up.base
    );
    let cache = TestServer::from_yaml(&store, &yaml(&store, &extra)).await;
    let c = cache.client();
    c.get("/v2/up/lib/app/manifests/1").await.assert_status(200);
    c.push_image("team/app", "1", "local").await;
    let page = |path: &str| {
        let http = http.clone();
        let url = format!("{}{path}", cache.base);
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let local = page("/r/team/app").await;
    assert!(local.contains("Delete"), "{local}");
    let cached = page("/r/up/lib/app").await;
    assert!(cached.contains("1"), "{cached}");
    assert!(
        !cached.contains("Delete"),
        "a delete is offered in a cached repository: {cached}"
    );
}

/// The home page's size of tagged images and last push, the overview's stored totals (as the last
/// collection counted them) and uploads in progress, tags sorted by name and by push time, and a badge
/// for a referrer found through the referrers API (no cosign tag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_sizes_push_times_sorting_and_referrer_badges() {
    let store = TestStore::new(StoreKind::Fs);
    let extra = "berth:\n  gc:\n    enabled: true\n    interval: 1s\n    graceperiod: 1h\n";
    let server = TestServer::from_yaml(&store, &yaml(&store, extra)).await;
    server.wait_index_ready().await;
    let client = server.client();
    // Pushed b, c, a: by name a, b, c; newest first a, c, b.
    let mut subject = String::new();
    let mut size = 0;
    for seed in ["b", "c", "a"] {
        let (_, d) = client.push_image("team/app", seed, seed).await;
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        size += config.len() + format!("layer of {seed}").len();
        if seed == "b" {
            subject = d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // An SBOM of b by its subject only, as `oras attach` pushes one.
    let empty = client.push_blob("team/app", b"{}").await;
    let sbom = client
        .push_blob("team/app", b"{\"spdxVersion\":\"SPDX-2.3\"}")
        .await;
    let extra = format!(
        r#","artifactType":"application/spdx+json","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1}}"#
    );
    let referrer = super::support::image_manifest(&empty, 2, &[(&sbom, 26)], &extra);
    client
        .put_manifest("team/app", &digest(&referrer), OCI_MANIFEST, &referrer)
        .await
        .assert_status(201);
    // An upload started and left open.
    client.start_upload("team/app").await;

    let b = Browser::start().await;
    b.goto(&format!("{}/", server.base)).await;
    let row = "document.querySelector('#repositories tr.repo')";
    assert_eq!(
        b.js(&format!("return {row}.querySelector('td.size').innerText"))
            .await,
        json!(format!("{size} B")),
        "the size of the tagged images, each blob once"
    );
    let pushed = b
        .js(&format!(
            "return {row}.querySelector('td.pushed').innerText"
        ))
        .await;
    assert!(
        pushed.as_str().unwrap().ends_with(" UTC"),
        "the last push: {pushed}"
    );
    let text = b.text().await;
    assert!(text.contains("Size of tagged images"), "{text}");
    assert!(
        b.js("return document.querySelector('#uploads').innerText")
            .await
            .as_str()
            .unwrap()
            .starts_with("1 "),
        "one upload in progress: {text}"
    );
    // The overview's totals, once a collection has counted them: 4 manifests; 3 configurations, 3
    // layers, 4 manifests, the empty configuration and the SBOM.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        b.goto(&format!("{}/", server.base)).await;
        let stored = b
            .js("return document.querySelector('#stored').innerText")
            .await;
        let stored = stored.as_str().unwrap().to_owned();
        if stored.contains("as the last collection") {
            assert!(stored.contains(" in 12 blobs, 4 manifests"), "{stored}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no totals: {stored}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    // The tags by name, with the SBOM badge on b from the referrers API.
    let order =
        "return [...document.querySelectorAll('#tags tr.tag a.tagname')].map(a => a.innerText)";
    b.goto(&format!("{}/r/team/app", server.base)).await;
    assert_eq!(b.js(order).await, json!(["a", "b", "c"]));
    assert_eq!(
        b.js("return [...document.querySelectorAll('#tags tr.tag')].map(r => [...r.querySelectorAll('.badge')].map(s => s.innerText).join(','))")
            .await,
        json!(["", "SBOM", ""]),
        "b has an SBOM by the referrers API"
    );
    assert_eq!(b.count("#tags td.pushed time").await, 3, "push times");
    // By push time, newest first, from the header's link.
    b.client
        .find(fantoccini::Locator::Css("#sort-time"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_until("location.search.includes('sort=time')").await;
    assert_eq!(b.js(order).await, json!(["a", "c", "b"]));
    assert!(
        b.count("#sort-name").await == 1,
        "a way back to the name order"
    );
    b.close().await;
}

/// Sign-in through an external token server: a second berth, whose built-in token server signs with a
/// key whose certificate the UI's berth trusts (`auth.token.rootcertbundle`). The form's password goes to
/// its realm; the pages show what its tokens grant, anonymous visitors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_external_token_server_sign_in_and_rights() {
    external_sign_in(true).await;
}

/// The same against a token server without docker's OAuth2 API: POSTs get 405, so the UI asks with GET
/// and Basic credentials, as docker does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_external_token_server_without_oauth_sign_in_and_rights() {
    external_sign_in(false).await;
}

/// What reaches an external token server from the UI: through a forwarder that counts POSTs and GETs
/// with Basic credentials, and answers POSTs with 405 when `oauth` is off.
struct TokenForwarder {
    base: String,
    posts: Arc<std::sync::atomic::AtomicUsize>,
    basic_gets: Arc<std::sync::atomic::AtomicUsize>,
}

async fn token_forwarder(upstream: String, oauth: bool) -> TokenForwarder {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let posts = Arc::new(AtomicUsize::new(0));
    let basic_gets = Arc::new(AtomicUsize::new(0));
    let (p, g) = (posts.clone(), basic_gets.clone());
    let http = http_client(reqwest::Client::builder());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (p, g, http, upstream) = (p.clone(), g.clone(), http.clone(), upstream.clone());
        async move {
            let (parts, body) = req.into_parts();
            let post = parts.method == axum::http::Method::POST;
            let auth = parts.headers.get("authorization").cloned();
            if post {
                p.fetch_add(1, Ordering::SeqCst);
                if !oauth {
                    return (axum::http::StatusCode::METHOD_NOT_ALLOWED, Vec::new());
                }
            } else if auth.is_some() {
                g.fetch_add(1, Ordering::SeqCst);
            }
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let url = format!("{upstream}{}", parts.uri);
            let mut out = http.request(parts.method.as_str().parse().unwrap(), url);
            for name in ["authorization", "content-type"] {
                if let Some(v) = parts.headers.get(name) {
                    out = out.header(name, v.to_str().unwrap());
                }
            }
            let resp = out.body(body.to_vec()).send().await.unwrap();
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
            (status, resp.bytes().await.unwrap().to_vec())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    TokenForwarder {
        base,
        posts,
        basic_gets,
    }
}

async fn external_sign_in(oauth: bool) {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["token-signer".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (key_path, cert_path) = (dir.path().join("token.key"), dir.path().join("token.crt"));
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    let ts_store = TestStore::new(StoreKind::Fs);
    let ts_extra = format!(
        r#"auth:
  token:
    realm: http://token.invalid/auth/token
    service: berth-ext
    issuer: ext-issuer
berth:
  tokenserver:
    token:
      issuer: ext-issuer
      expiration: 300
      key: '{key}'
      certificate: '{cert}'
{acl}"#,
        key = key_path.display(),
        cert = cert_path.display(),
        acl = reader_admin_acl(),
    );
    let ts = TestServer::from_yaml(&ts_store, &yaml(&ts_store, &ts_extra)).await;
    let fwd = token_forwarder(ts.base.clone(), oauth).await;
    let store = TestStore::new(StoreKind::Fs);
    let extra = format!(
        "auth:\n  token:\n    realm: {}/auth/token\n    service: berth-ext\n    issuer: ext-issuer\n    rootcertbundle: '{}'\n",
        fwd.base,
        cert_path.display()
    );
    let server = TestServer::from_yaml(&store, &yaml(&store, &extra)).await;
    for repo in ["shared/app", "private/db", "public/www"] {
        push_direct(&server, &ts.base, "berth-ext", repo).await;
    }
    server.wait_index_ready().await;

    let b = Browser::start().await;
    // Anonymous: what the token server grants anonymous, and a way to sign in.
    b.goto(&format!("{}/", server.base)).await;
    let text = b.text().await;
    assert!(
        text.contains("public/www") && !text.contains("shared/app") && !text.contains("private/db"),
        "{text}"
    );
    assert!(text.contains("Sign in"), "{text}");
    b.sign_in(&server.base, "reader", "wrong").await;
    b.wait_for_text("is wrong").await;
    b.sign_in(&server.base, "reader", "reader-pw").await;
    b.wait_for_text("Signed in as reader").await;
    let text = b.text().await;
    assert!(
        text.contains("shared/app") && !text.contains("private/db") && !text.contains("public/www"),
        "reader sees what the token server grants reader: {text}"
    );
    b.goto(&format!("{}/r/private/db", server.base)).await;
    assert!(b.text().await.contains("no such repository"));
    b.goto(&format!("{}/r/shared/app", server.base)).await;
    assert_eq!(b.count("#tags tr.tag").await, 1);
    assert_eq!(b.count("a.danger").await, 0, "no delete button for reader");
    let cookie = b.client.get_named_cookie("berth_session").await.unwrap();
    let cookie = format!("berth_session={}", cookie.value());
    let csrf = b
        .js("return document.querySelector('form.inline input[name=csrf]').value")
        .await;
    assert_eq!(
        post_delete(
            &server.base,
            Some(&cookie),
            None,
            "shared/app",
            "v1",
            csrf.as_str().unwrap()
        )
        .await,
        403
    );
    // Signed out, the session is gone, also for a copy of its cookie.
    b.sign_out().await;
    let http = http_client(reqwest::Client::builder());
    let after = http
        .get(format!("{}/", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!after.contains("shared/app"), "{after}");
    // admin: everything, with delete buttons.
    b.sign_in(&server.base, "admin", "admin-pw").await;
    b.wait_for_text("Signed in as admin").await;
    let text = b.text().await;
    for repo in ["shared/app", "private/db", "public/www"] {
        assert!(text.contains(repo), "admin sees {repo}: {text}");
    }
    b.goto(&format!("{}/r/private/db", server.base)).await;
    assert_eq!(b.count("a.danger").await, 1, "admin may delete");
    b.close().await;
    // With the OAuth2 API, sign-ins are password grants and later pages use the refresh token: the
    // password is sent once per sign-in, never with a GET. Without it, every ask is a GET with Basic.
    let (posts, basic) = (
        fwd.posts.load(std::sync::atomic::Ordering::SeqCst),
        fwd.basic_gets.load(std::sync::atomic::Ordering::SeqCst),
    );
    if oauth {
        assert!(
            posts >= 3 && basic == 0,
            "posts {posts}, basic GETs {basic}"
        );
    } else {
        assert!(
            posts >= 3 && basic >= 3,
            "posts {posts}, basic GETs {basic}"
        );
    }
}

/// With `storage.delete.enabled: false`, the confirmation page and the POST both say that deleting is
/// disabled (405), and the tag stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_delete_is_refused_when_deleting_is_disabled() {
    let store = TestStore::new(StoreKind::Fs);
    let config = yaml(&store, "").replace(
        "  delete:\n    enabled: true\n",
        "  delete:\n    enabled: false\n",
    );
    assert!(config.contains("enabled: false"), "{config}");
    let server = TestServer::from_yaml(&store, &config).await;
    push_images(&server, "team/app", &["v1"]).await;
    let http = http_client(reqwest::Client::builder());
    let page = http
        .get(format!("{}/delete?repo=team/app&ref=v1", server.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 405);
    let text = page.text().await.unwrap();
    assert!(text.contains("Deleting is disabled"), "{text}");
    // A POST with a forged token is refused (403) before anything else is looked at.
    assert_eq!(
        post_delete(&server.base, None, None, "team/app", "v1", "forged").await,
        403
    );
    let r = http
        .head(format!("{}/v2/team/app/manifests/v1", server.base))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the tag is still there");
}
