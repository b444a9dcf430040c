//! The live page in headless Chromium, driven over WebDriver (chromedriver):
//! the counters change after orders are posted, without a reload.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{Stack, eventually};

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Take the browser chromedriver started down with it, pass or fail
        // (its children, matched by parent pid; Chromium's helpers follow).
        let _ = Command::new("pkill")
            .args(["-9", "-P", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver runs (Debian package `chromium-driver`; `make deps` installs it)");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    eventually(Duration::from_secs(20), "chromedriver ready", || async {
        match reqwest::get(&status).await {
            Ok(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == true),
            Err(_) => false,
        }
    })
    .await;
    driver
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
    client: reqwest::Client,
}

impl Session<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver.url, self.id);
        let mut req = self.client.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn text_of(&self, element_id: &str) -> String {
        let script = format!("return document.getElementById('{element_id}').textContent");
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": script, "args": []})),
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }
}

#[tokio::test]
async fn the_live_page_updates_without_a_reload() {
    let mut s = Stack::start().await;
    s.world.set_stock("mag-safe-phone-case", 12).await;
    let driver = start_driver().await;
    let profile = tempdir();
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/session", driver.url))
        .json(&json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
        .to_owned();
    let session = Session {
        driver: &driver,
        id,
        client,
    };
    session
        .call(
            reqwest::Method::POST,
            "/url",
            Some(json!({"url": s.dashboard})),
        )
        .await;
    eventually(
        Duration::from_secs(20),
        "the page to show live figures",
        || async {
            session.text_of("accepted").await == "0" && session.text_of("live").await == "live"
        },
    )
    .await;

    for i in 0..3 {
        let body = format!(r#"{{"id":"page-{i}","sku":"mag-safe-phone-case","qty":1}}"#);
        assert_eq!(s.post(&body).await, 202);
    }
    // Same page, no reload: the counters follow the pipeline.
    eventually(
        Duration::from_secs(30),
        "the page to count 3 notified orders",
        || async {
            session.text_of("accepted").await == "3" && session.text_of("notified").await == "3"
        },
    )
    .await;
    let inventory = session.text_of("inventory").await;
    assert!(
        inventory.contains("mag-safe-phone-case") && inventory.contains('9'),
        "{inventory}"
    );
    let recent = session.text_of("recent").await;
    assert!(recent.contains("page-2"), "{recent}");

    let shot = session
        .call(reqwest::Method::GET, "/screenshot", None)
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().expect("a screenshot"))
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-live-page.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());

    session.call(reqwest::Method::DELETE, "", None).await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    s.stop().await;
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dashboard-chromium-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), pipeline::messages::now_ms())
}
