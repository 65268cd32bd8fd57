//! The pages' HTML, with maud: every value spliced in is escaped, so that nothing a client pushed (names,
//! tags, annotations, labels, history) can become markup. Links are built only from names, tags and
//! digests the grammar accepted; no pushed value ever becomes a URL.

use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};

use super::access::{Viewer, Who};
use super::facts::{human_size, human_time, ConfigView, Detail, TagRow};
use super::{encode, Ui};
use crate::oci::manifest::Kind;
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::index::Listed;

/// A time for people, to the minute: `2024-05-01 12:34 UTC`.
fn at(t: std::time::SystemTime) -> String {
    human_time(&humantime::format_rfc3339_seconds(t).to_string())
}

/// The registry at a glance, on the home page: only what is known without reading the store.
pub(crate) struct Overview {
    /// Repositories (all of them, not only the viewer's), from the listing index.
    pub repositories: Option<usize>,
    pub gc_interval: Option<std::time::Duration>,
    pub last_collection: Option<crate::registry::gc::Collected>,
    /// The pull-through cache's blob bytes and `maxsize`.
    pub cache: Option<(u64, Option<u64>)>,
    /// Uploads this process started and has not finished.
    pub uploads: usize,
}

/// A catalog page as the home page shows it.
pub(crate) struct Listing {
    pub repos: Vec<Listed>,
    /// The size of each repository's tagged images, where known.
    pub sizes: Vec<Option<u64>>,
    pub next: Option<String>,
    /// Answered from the listing index (else there is none yet, or the store is shared).
    pub indexed: bool,
}

fn short_digest(d: &Digest) -> String {
    let s = d.to_string();
    let hex = s.split_once(':').map_or(s.as_str(), |(_, h)| h);
    hex.chars().take(12).collect()
}

fn layout(ui: &Ui, viewer: Option<&Viewer<'_>>, title: &str, search: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · " (ui.cfg.title) }
                link rel="stylesheet" href=(ui.path("static/ui.css"));
                script src=(ui.path("static/copy.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(ui.cfg.prefix) { (ui.cfg.title) }
                    form.search role="search" action=(ui.cfg.prefix) method="get" {
                        label.hidden for="q" { "Search repositories" }
                        input #q type="search" name="q" value=(search) placeholder="Search repositories";
                        button type="submit" { "Search" }
                    }
                    @if let Some(v) = viewer {
                        nav.user {
                            @if v.who == Who::User {
                                span { "Signed in as " strong { (v.user) } }
                                @if v.can_sign_in {
                                    form.inline method="post" action=(ui.path("logout")) {
                                        input type="hidden" name="csrf" value=(ui.keys.csrf(&v.user));
                                        button #signout type="submit" { "Sign out" }
                                    }
                                }
                            } @else if v.can_sign_in {
                                a href=(ui.path("login")) { "Sign in" }
                            }
                        }
                    }
                }
                main #main { (body) }
                footer { "berth " (env!("CARGO_PKG_VERSION")) }
            }
        }
    }
}

pub(crate) fn error(
    ui: &Ui,
    viewer: Option<&Viewer<'_>>,
    status: StatusCode,
    message: &str,
) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    layout(
        ui,
        viewer,
        title,
        "",
        html! {
            h1 { (status.as_u16()) " " (title) }
            p { (message) }
            p { a href=(ui.cfg.prefix) { "All repositories" } }
        },
    )
}

/// The namespace of a repository: everything before its last `/`.
fn namespace(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(ns, _)| ns)
}

fn overview(o: &Overview, show_count: bool) -> Markup {
    html! {
        section #overview aria-label="Overview" {
            dl.facts {
                @if let (Some(n), true) = (o.repositories, show_count) { dt { "Repositories" } dd { (n) } }
                dt { "Online collection" }
                dd { @match o.gc_interval { Some(every) => { "every " (humantime::format_duration(every)) } None => { "off" } } }
                dt { "Last collection" }
                dd {
                    @match &o.last_collection {
                        Some(c) => {
                            (humantime::format_rfc3339_seconds(c.finished)) ": "
                            @if c.dry_run { "a dry run, would have removed " } @else { "removed " }
                            (c.manifests) " manifests and " (c.blobs) " blobs, reclaiming " (human_size(c.bytes))
                        }
                        None => { "none since start-up" }
                    }
                }
                @if show_count {
                    dt { "Stored" }
                    dd #stored {
                        @match &o.last_collection {
                            Some(c) => {
                                (human_size(c.stored_bytes)) " in " (c.stored_blobs) " blobs, " (c.stored_manifests) " manifests"
                                " (as the last collection, " (at(c.finished)) ", counted them)"
                            }
                            None => { span.none { "—" } " (counted by each garbage collection; none has run since start-up)" }
                        }
                    }
                }
                dt { "Uploads in progress" }
                dd #uploads { (o.uploads) " (started through this process and not yet finished or cancelled)" }
                @if let Some((held, max)) = o.cache {
                    dt { "Pull-through cache" }
                    dd { (human_size(held)) @if let Some(m) = max { " of " (human_size(m)) } }
                }
            }
        }
    }
}

pub(crate) fn home(
    ui: &Ui,
    viewer: &Viewer<'_>,
    needle: &str,
    listing: &Listing,
    summary: &Overview,
) -> Markup {
    type Row<'r> = (&'r Listed, Option<u64>);
    let mut groups: Vec<(&str, Vec<Row<'_>>)> = Vec::new();
    for (i, repo) in listing.repos.iter().enumerate() {
        let entry = (repo, listing.sizes.get(i).copied().flatten());
        let ns = namespace(&repo.name);
        match groups.last_mut() {
            Some((last, items)) if *last == ns => items.push(entry),
            _ => groups.push((ns, vec![entry])),
        }
    }
    let body = html! {
        h1 {
            "Repositories"
            @if !needle.is_empty() { " matching " q { (needle) } }
        }
        @if needle.is_empty() {
            (overview(summary, viewer.sees_all()))
        }
        @if viewer.blind() && viewer.can_sign_in {
            p.note { "This registry needs a user name and a password: " a href=(ui.path("login")) { "sign in" } "." }
        } @else if viewer.blind() {
            p.note { "This registry's tokens come from an external token server: the web UI cannot tell which repositories you may see." }
        }
        @if !listing.indexed {
            p.note { "The listing index is not ready (it is being built, or the store is shared with other instances): repositories cannot be listed yet." }
        }
        @if viewer.blind() {
        } @else if listing.repos.is_empty() && listing.indexed && listing.next.is_some() {
            p.empty { "Nothing here matches among the repositories looked at so far." }
        } @else if listing.repos.is_empty() && listing.indexed {
            p.empty { @if needle.is_empty() { "No repositories yet." } @else { "No repository matches." } }
        } @else if !listing.repos.is_empty() {
            table.list #repositories {
                thead { tr {
                    th scope="col" { "Repository" } th.num scope="col" { "Tags" }
                    th.num scope="col" title="Configuration and layers of the tagged images, each blob counted once" { "Size of tagged images" }
                    th scope="col" { "Last push" }
                } }
                @for (ns, items) in &groups {
                    tbody {
                        tr.ns { th colspan="4" scope="rowgroup" { @if ns.is_empty() { "(top level)" } @else { (ns) "/" } } }
                        @for (repo, size) in items {
                            tr.repo {
                                td { a href=(ui.path(&format!("r/{}", repo.name))) { (repo.name) } }
                                td.num { (repo.tags) }
                                td.num.size {
                                    @match size {
                                        Some(s) => { (human_size(*s)) }
                                        None => { span.none title=(format!("Not added up: more than {} tags, or a manifest cannot be read", super::repos::SIZE_TAGS)) { "—" } }
                                    }
                                }
                                td.pushed { @match repo.last_push { Some(t) => { time { (at(t)) } } None => { span.none { "—" } } } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = &listing.next {
            nav.pages {
                a rel="next" href=(format!("{}?q={}&last={}", ui.cfg.prefix, encode(needle), encode(next))) { "Next page →" }
            }
        }
    };
    layout(ui, Some(viewer), "Repositories", needle, body)
}

fn platforms(facts: &super::facts::Facts) -> Markup {
    html! {
        @if facts.kind == Kind::Index {
            ul.platforms {
                @for c in &facts.children {
                    li { @if c.platform.is_empty() { (c.artifact_type.as_deref().unwrap_or("artifact")) } @else { (c.platform) } }
                }
            }
        }
    }
}

/// How a tag list is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sort {
    Name,
    /// Newest push first, from the `skip`th tag.
    Time {
        skip: usize,
    },
}

pub(crate) struct RepoPage<'a> {
    pub repo: &'a RepoName,
    pub count: Option<usize>,
    pub rows: &'a [TagRow],
    pub sort: Sort,
    /// Push times are known (the listing index), so the list can sort by them.
    pub times: bool,
    /// The repository's referrers were looked up (it is not too large for that).
    pub referrers: bool,
    pub next: Option<&'a str>,
    pub deletable: bool,
    pub deleted: Option<&'a str>,
}

pub(crate) fn repo(ui: &Ui, viewer: &Viewer<'_>, page: &RepoPage<'_>) -> Markup {
    let repo = page.repo;
    let body = html! {
        nav.crumbs { a href=(ui.cfg.prefix) { "Repositories" } " / " }
        h1 { (repo.as_str()) }
        @if let Some(count) = page.count { p.meta { (count) @if count == 1 { " tag" } @else { " tags" } } }
        @let here = ui.path(&format!("r/{repo}"));
        @if page.times {
            nav.sort aria-label="Sort tags" {
                "Sort by: "
                @if page.sort == Sort::Name { strong aria-current="true" { "name" } } @else { a #sort-name href=(format!("{here}?sort=name")) { "name" } }
                " · "
                @if page.sort == Sort::Name { a #sort-time href=(format!("{here}?sort=time")) { "push time" } } @else { strong aria-current="true" { "push time" } }
            }
        } @else {
            p.note { "Sorting by push time needs the listing index (not kept on a shared store, or not built yet)." }
        }
        @if !page.referrers {
            p.note { "This repository has more than " (super::repos::REFERRER_REVISIONS) " manifests: its tag list marks only signatures and SBOMs stored under cosign's tags; an image's page lists its referrers." }
        }
        @if let Some(deleted) = page.deleted {
            p.done role="status" { "Deleted " code { (deleted) } ". The space it used returns at the next garbage collection." }
        }
        @if page.rows.is_empty() {
            p.empty { "No tags." }
        } @else {
            table.list #tags {
                thead { tr {
                    th scope="col" { "Tag" } th scope="col" { "Digest" } th.num scope="col" { "Size" }
                    th scope="col" { "Created" } th scope="col" { "Pushed" } th scope="col" { "Platforms" }
                    @if page.deletable { th scope="col" { span.hidden { "Actions" } } }
                } }
                tbody {
                    @for row in page.rows {
                        tr.tag {
                            td {
                                a.tagname href=(ui.path(&format!("i/{repo}:{}", row.tag))) { (row.tag) }
                                @for m in &row.marks { " " span.badge { (m) } }
                            }
                            td { @if let Some(d) = &row.digest {
                                a.digest href=(ui.path(&format!("i/{repo}@{d}"))) title=(d.to_string()) { code { (short_digest(d)) } }
                            } }
                            td.num { @if let Some(f) = &row.facts { (human_size(f.size)) } }
                            td { @if let Some(c) = row.facts.as_ref().and_then(|f| f.created.as_deref()) { time { (human_time(c)) } } }
                            td.pushed { @match row.pushed { Some(t) => { time { (at(t)) } } None => { span.none { "—" } } } }
                            td { @if let Some(f) = &row.facts { (platforms(f)) } }
                            @if page.deletable {
                                td { a.danger href=(format!("{}?repo={}&ref={}", ui.path("delete"), encode(repo.as_str()), encode(&row.tag))) { "Delete" } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = page.next {
            nav.pages {
                @match page.sort {
                    Sort::Name => { a rel="next" href=(format!("{here}?last={}", encode(next))) { "Next page →" } }
                    Sort::Time { .. } => { a rel="next" href=(format!("{here}?sort=time&skip={}", encode(next))) { "Next page →" } }
                }
            }
        }
    };
    layout(ui, Some(viewer), repo.as_str(), "", body)
}

fn list(items: &[String]) -> Markup {
    html! {
        @if items.is_empty() { span.none { "—" } } @else {
            code.args { @for (i, a) in items.iter().enumerate() { @if i > 0 { " " } span.arg { (a) } } }
        }
    }
}

fn config_section(c: &ConfigView) -> Markup {
    html! {
        section #config {
            h2 { "Configuration" }
            @if c.unreadable {
                p.note { "The image configuration cannot be read (it is missing or larger than the page shows)." }
            } @else {
                dl.facts {
                    @if let Some(d) = &c.digest { dt { "Digest" } dd { code { (d.to_string()) } } }
                    @if let Some(p) = &c.platform { dt { "Platform" } dd { (p) } }
                    @if let Some(t) = &c.created { dt { "Created" } dd { time { (human_time(t)) } } }
                    @if let Some(a) = &c.author { dt { "Author" } dd { (a) } }
                    dt { "Entrypoint" } dd { (list(&c.entrypoint)) }
                    dt { "Cmd" } dd { (list(&c.cmd)) }
                    dt { "Exposed ports" } dd { @if c.ports.is_empty() { span.none { "—" } } @else { (c.ports.join(", ")) } }
                }
                @if !c.env.is_empty() {
                    h3 { "Environment" }
                    ul.env { @for e in &c.env { li { code { (e) } } } }
                }
                @if !c.labels.is_empty() {
                    h3 { "Labels" }
                    table.kv #labels { tbody { @for (k, v) in &c.labels { tr { th scope="row" { (k) } td { (v) } } } } }
                }
                @if !c.history.is_empty() {
                    h3 { "History" }
                    table.list #history {
                        thead { tr { th scope="col" { "Created" } th scope="col" { "Command" } } }
                        tbody { @for (created, by, empty) in &c.history {
                            tr.nolayer[*empty] { td { (human_time(created)) } td { code { (by) } } }
                        } }
                    }
                }
            }
        }
    }
}

pub(crate) fn image(
    ui: &Ui,
    viewer: &Viewer<'_>,
    repo: &RepoName,
    reference: &Reference,
    d: &Detail,
    host: &str,
    deletable: bool,
) -> Markup {
    let shown = match reference {
        Reference::Tag(t) => format!("{repo}:{t}"),
        Reference::Digest(dg) => format!("{repo}@{}", short_digest(dg)),
    };
    let pull_ref = match reference {
        Reference::Tag(t) => format!("{host}/{repo}:{t}"),
        Reference::Digest(dg) => format!("{host}/{repo}@{dg}"),
    };
    let by_digest = format!("{host}/{repo}@{}", d.digest);
    let delete_href = |r: &str| {
        format!(
            "{}?repo={}&ref={}",
            ui.path("delete"),
            encode(repo.as_str()),
            encode(r)
        )
    };
    let body = html! {
        nav.crumbs {
            a href=(ui.cfg.prefix) { "Repositories" } " / "
            a href=(ui.path(&format!("r/{repo}"))) { (repo.as_str()) } " / "
        }
        h1 { (shown) }
        dl.facts #summary {
            dt { "Digest" } dd { code { (d.digest.to_string()) } }
            dt { "Media type" } dd { code { (d.media_type) } }
            @if let Some(t) = &d.artifact_type { dt { "Artifact type" } dd { code { (t) } } }
            dt { "Size" } dd { (human_size(d.size)) @if d.kind == Kind::Image { " (configuration and layers)" } @else { " (all platforms)" } }
            dt { "Manifest" } dd { (human_size(d.manifest_size)) }
            @if let Some(s) = &d.subject {
                dt { "Refers to" } dd { a href=(ui.path(&format!("i/{repo}@{s}"))) { code { (s.to_string()) } } }
            }
        }
        section #pull {
            h2 { "Pull" }
            pre.cmd { code { "docker pull " (pull_ref) } }
            pre.cmd { code { "podman pull " (by_digest) } }
        }
        @if deletable {
            section #delete {
                h2 { "Delete" }
                p {
                    @if let Reference::Tag(t) = reference {
                        a.danger href=(delete_href(t)) { "Delete tag " code { (t) } } " "
                    }
                    a.danger href=(delete_href(&d.digest.to_string())) { "Delete this manifest and its tags" }
                }
            }
        }
        @if d.kind == Kind::Index {
            section #platforms {
                h2 { "Platforms" }
                table.list {
                    thead { tr { th scope="col" { "Platform" } th scope="col" { "Digest" } th.num scope="col" { "Size" } } }
                    tbody { @for c in &d.children {
                        tr.platform {
                            td { @if c.platform.is_empty() { (c.artifact_type.as_deref().unwrap_or("—")) } @else { (c.platform) } }
                            td { a href=(ui.path(&format!("i/{repo}@{}", c.digest))) { code { (short_digest(&c.digest)) } } }
                            td.num { (human_size(c.size)) }
                        }
                    } }
                }
            }
        }
        @if let Some(c) = &d.config { (config_section(c)) }
        @if !d.layers.is_empty() {
            section #layers {
                h2 { "Layers" }
                table.list {
                    thead { tr { th.num scope="col" { "#" } th scope="col" { "Digest" } th scope="col" { "Media type" } th.num scope="col" { "Size" } } }
                    tbody { @for (i, l) in d.layers.iter().enumerate() {
                        tr { td.num { (i + 1) } td { code title=(l.digest.to_string()) { (short_digest(&l.digest)) } } td { code { (l.media_type) } } td.num { (human_size(l.size)) } }
                    } }
                }
            }
        }
        @if !d.annotations.is_empty() {
            section #annotations {
                h2 { "Annotations" }
                table.kv { tbody { @for (k, v) in &d.annotations { tr { th scope="row" { (k) } td { (v) } } } } }
            }
        }
        section #referrers {
            h2 { "Referrers" }
            @if d.referrers.is_empty() {
                p.empty { "No signatures, SBOMs or attestations refer to this manifest." }
            } @else {
                table.list {
                    thead { tr { th scope="col" { "Artifact type" } th scope="col" { "Digest" } th.num scope="col" { "Size" } th scope="col" { "Created" } } }
                    tbody { @for r in &d.referrers {
                        tr.referrer {
                            td { code { (r.summary.artifact_type.as_deref().unwrap_or("—")) } }
                            td { a href=(ui.path(&format!("i/{repo}@{}", r.digest))) { code { (short_digest(&r.digest)) } } }
                            td.num { (human_size(r.summary.size)) }
                            td { @if let Some(c) = r.summary.annotations.as_ref().and_then(|a| a.get("org.opencontainers.image.created")).and_then(|v| v.as_str()) { (human_time(c)) } }
                        }
                    } }
                }
                @if d.more_referrers { p.note { "More referrers than shown here: list them with the referrers API." } }
            }
        }
    };
    layout(ui, Some(viewer), &shown, "", body)
}

pub(crate) fn confirm_delete(
    ui: &Ui,
    viewer: &Viewer<'_>,
    repo: &RepoName,
    reference: &Reference,
    csrf: &str,
) -> Markup {
    let what = match reference {
        Reference::Tag(t) => html! { "the tag " code { (t) } " of " code { (repo.as_str()) } },
        Reference::Digest(d) => {
            html! { "the manifest " code { (d.to_string()) } " of " code { (repo.as_str()) } " and every tag pointing at it" }
        }
    };
    let back = match reference {
        Reference::Tag(_) => ui.path(&format!("r/{repo}")),
        Reference::Digest(d) => ui.path(&format!("i/{repo}@{d}")),
    };
    let body = html! {
        h1 { "Delete?" }
        p { "This deletes " (what) " now." }
        p.note {
            "Deleting frees no space by itself: the blobs it used are removed at the next garbage collection. "
            @match ui.cfg.gc_interval {
                Some(every) => { "The online collection runs every " (humantime::format_duration(every)) "." }
                None => { "Online collection is off here: run " code { "berth garbage-collect" } " to reclaim the space." }
            }
        }
        form.confirm method="post" action=(ui.path("delete")) {
            input type="hidden" name="repo" value=(repo.as_str());
            input type="hidden" name="ref" value=(reference.to_string());
            input type="hidden" name="csrf" value=(csrf);
            button.danger #confirm type="submit" { "Delete" }
            " "
            a href=(back) { "Cancel" }
        }
    };
    layout(ui, Some(viewer), "Delete", "", body)
}

pub(crate) fn login(ui: &Ui, problem: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(p) = problem { p.problem role="alert" { (p) } }
        form.login method="post" action=(ui.path("login")) {
            label for="user" { "User" }
            input #user type="text" name="user" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password" required;
            button #signin type="submit" { "Sign in" }
        }
    };
    layout(ui, None, "Sign in", "", body)
}
