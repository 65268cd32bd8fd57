//! A real browser for the web UI's tests: Debian's `chromium`, headless, driven over WebDriver by
//! `chromedriver` on 127.0.0.1 and a free port. The driver runs in a process group of its own, which is
//! killed on drop with the browsers it started.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use tempfile::TempDir;

use super::clients::require;
use super::reference::free_port;

/// How long any one browser operation may take.
const STEP: Duration = Duration::from_secs(30);

pub struct Browser {
    pub client: Client,
    driver_url: String,
    driver: Child,
    _profile: TempDir,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Theme {
    Light,
    Dark,
}

impl Browser {
    /// A headless Chromium with a fresh profile, a 1280×900 window and bounded timeouts.
    pub async fn start() -> Browser {
        let chromedriver = require("chromedriver", "chromium-driver");
        let chromium = require("chromium", "chromium");
        let port = free_port().port();
        let mut cmd = Command::new(chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("start chromedriver");
        let driver_url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--hide-scrollbars", "--no-first-run",
                    "--disable-background-networking", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&driver_url),
        )
        .await
        .expect("the browser did not start in 60 s")
        .expect("start a browser session");
        Browser {
            client,
            driver_url,
            driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        tokio::time::timeout(STEP, self.client.goto(url))
            .await
            .unwrap_or_else(|_| panic!("loading {url} took over {STEP:?}"))
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    /// Signs in through `base`'s sign-in form (what follows is for the caller to wait for).
    pub async fn sign_in(&self, base: &str, user: &str, password: &str) {
        self.goto(&format!("{base}/login")).await;
        let form = self
            .client
            .form(fantoccini::Locator::Css("form.login"))
            .await
            .unwrap();
        form.set_by_name("user", user).await.unwrap();
        form.set_by_name("password", password).await.unwrap();
        form.submit().await.unwrap();
    }

    /// Signs out with the page's button and waits for the signed-out page.
    pub async fn sign_out(&self) {
        self.client
            .find(fantoccini::Locator::Css("#signout"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for_text("Sign in").await;
    }

    /// The page's text.
    pub async fn text(&self) -> String {
        self.js("return document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        tokio::time::timeout(STEP, self.client.execute(script, Vec::new()))
            .await
            .expect("a script took too long")
            .unwrap_or_else(|e| panic!("script `{script}`: {e}"))
    }

    /// Waits until `condition` (a script expression) is true in the page, at most 10 s.
    pub async fn wait_until(&self, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let script = format!("try {{ return !!({condition}); }} catch (e) {{ return false; }}");
        loop {
            if let Ok(Ok(Value::Bool(true))) =
                tokio::time::timeout(STEP, self.client.execute(&script, Vec::new())).await
            {
                return;
            }
            assert!(Instant::now() < deadline, "`{condition}` never held");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page's text contains `text`.
    pub async fn wait_for_text(&self, text: &str) {
        self.wait_until(&format!(
            "document.body.innerText.includes({})",
            json!(text)
        ))
        .await;
    }

    /// The elements matching a CSS selector: their count.
    pub async fn count(&self, css: &str) -> usize {
        let script = format!("return document.querySelectorAll({}).length", json!(css));
        self.js(&script).await.as_u64().unwrap_or(0) as usize
    }

    /// Whether an alert, confirm or prompt dialog is open.
    pub async fn has_dialog(&self) -> bool {
        self.client.get_alert_text().await.is_ok()
    }

    /// Switches `prefers-color-scheme` (Chrome DevTools' media emulation, through chromedriver).
    pub async fn theme(&self, theme: Theme) {
        let id = self.client.session_id().await.unwrap().unwrap();
        let value = match theme {
            Theme::Light => "light",
            Theme::Dark => "dark",
        };
        let body = json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": {"features": [{"name": "prefers-color-scheme", "value": value}]},
        });
        let resp = reqwest::Client::new()
            .post(format!("{}/session/{id}/goog/cdp/execute", self.driver_url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(STEP)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "emulating {value}: {}",
            resp.text().await.unwrap()
        );
    }

    /// A screenshot of the whole page, written to `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let png = tokio::time::timeout(STEP, self.client.screenshot())
            .await
            .expect("a screenshot took too long")
            .unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the session (closing the browser), then the driver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(STEP, self.client.clone().close()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's group holds the browsers it started.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
