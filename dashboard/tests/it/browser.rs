//! The live page in headless Chromium, driven over WebDriver (chromedriver):
//! the counters change after orders are posted, without a reload; the
//! suppliers panel lists the gateway's suppliers; a long SKU name never hides
//! its units, at two window widths.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{Options, Stack, eventually};

/// A SKU name long enough to have pushed the units out of sight.
const LONG_SKU: &str = "extra-long-sku-name-for-layout-01";

/// Where the inventory's units cell of the SKU `arguments[0]` sits against
/// its panel and the window, and whether anything on the page needs a
/// horizontal scrollbar or cuts a figure short. `null` until the SKU is
/// listed.
const LAYOUT: &str = r##"
const sku = arguments[0];
const page = document.documentElement;
const name = [...document.querySelectorAll("#inventory td")].find((td) => td.title === sku);
if (!name) return null;
const units = name.parentElement.querySelector("td.num");
const u = units.getBoundingClientRect();
const section = units.closest("section");
const box = section.getBoundingClientRect(), css = getComputedStyle(section);
const inset = (side) => parseFloat(css["padding" + side]) + parseFloat(css["border" + side + "Width"]);
return {
  viewport: page.clientWidth,
  units: units.textContent,
  units_left: u.left, units_right: u.right, units_width: u.width,
  panel_left: box.left + inset("Left"), panel_right: box.right - inset("Right"),
  units_cut: units.scrollWidth > units.clientWidth,
  page_scrolls: page.scrollWidth > page.clientWidth,
  scrollers: [...document.querySelectorAll("main *")]
    .filter((e) => ["auto", "scroll"].includes(getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth)
    .map((e) => e.id || e.tagName),
  overflowing_tables: [...document.querySelectorAll("section table")]
    .filter((t) => t.getBoundingClientRect().right > t.closest("section").getBoundingClientRect().right + 0.5)
    .map((t) => t.tBodies[0].id),
  cut_figures: [...document.querySelectorAll("td.num")]
    .filter((td) => td.offsetParent !== null && td.scrollWidth > td.clientWidth)
    .map((td) => td.textContent),
};
"##;

/// The long SKU's units are in sight, whole, inside their panel's content
/// box; nothing scrolls sideways and no figure is cut.
fn assert_figures_in_sight(layout: &Value) {
    let at = |k: &str| {
        layout[k]
            .as_f64()
            .unwrap_or_else(|| panic!("no {k} in {layout}"))
    };
    let digits: String = layout["units"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert_eq!(digits, "1234", "the long SKU's units: {layout}");
    assert!(at("units_width") > 0.0, "{layout}");
    assert!(
        at("units_left") >= at("panel_left") - 0.5 && at("units_right") <= at("panel_right") + 0.5,
        "the units cell is not inside its panel: {layout}"
    );
    assert!(
        at("units_right") <= at("viewport") + 0.5,
        "the units cell is outside the window: {layout}"
    );
    assert_eq!(layout["units_cut"], false, "{layout}");
    assert_eq!(layout["page_scrolls"], false, "{layout}");
    assert_eq!(layout["scrollers"], json!([]), "{layout}");
    assert_eq!(layout["overflowing_tables"], json!([]), "{layout}");
    assert_eq!(layout["cut_figures"], json!([]), "{layout}");
}

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

    async fn layout(&self) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": LAYOUT, "args": [LONG_SKU]})),
        )
        .await
    }

    async fn screenshot(&self, file: &str) {
        let shot = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().expect("a screenshot"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(file);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
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

    /// The units cell of each inventory row whose SKU cell is `sku`.
    async fn units_of(&self, sku: &str) -> Vec<String> {
        let script = "return [...document.querySelectorAll('#inventory tr')]\
             .filter((r) => r.cells.length === 2 && r.cells[0].textContent === arguments[0])\
             .map((r) => r.cells[1].textContent)";
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": script, "args": [sku]})),
            )
            .await;
        serde_json::from_value(v).unwrap_or_default()
    }
}

#[tokio::test]
async fn the_live_page_updates_without_a_reload() {
    let mut s = Stack::start_with(Options {
        suppliers: vec!["acme", "globex", "initech"],
        ..Options::default()
    })
    .await;
    s.world.set_stock("mag-safe-phone-case", 12).await;
    s.world.set_stock(LONG_SKU, 1234).await;
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
            Some(json!({"url": s.dashboard_signed_in()})),
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
    // 12 in stock, 3 reserved: one row for the SKU, showing 9.
    eventually(
        Duration::from_secs(30),
        "the inventory row to show 9 units",
        || async { session.units_of("mag-safe-phone-case").await == ["9"] },
    )
    .await;
    let recent = session.text_of("recent").await;
    assert!(recent.contains("page-2"), "{recent}");

    // The gateway's suppliers, never asked: each closed, no figures yet.
    eventually(
        Duration::from_secs(20),
        "the suppliers panel to list the gateway's suppliers",
        || async {
            let panel = session.text_of("suppliers").await;
            session.text_of("suppliers-state").await == "gateway up"
                && ["acme", "globex", "initech"]
                    .iter()
                    .all(|name| panel.contains(name))
                && panel.matches("closed").count() == 3
        },
    )
    .await;
    let foot = session.text_of("suppliers-foot").await;
    assert!(
        foot.contains("pending requests") && foot.contains("reply consumer"),
        "{foot}"
    );

    // A ~30-character SKU name: its units stay in sight, whole, with no
    // horizontal scrollbar anywhere.
    eventually(Duration::from_secs(20), "the long SKU listed", || async {
        !session.layout().await.is_null()
    })
    .await;
    assert_figures_in_sight(&session.layout().await);
    session.screenshot("dashboard-live-page.png").await;

    // Narrower (at 1000 px the old layout hid the units behind a scrollbar):
    // the panels rearrange, the long name may be cut short, the figures
    // still show whole.
    for width in [1000, 760] {
        session
            .call(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({"width": width, "height": 1000})),
            )
            .await;
        eventually(Duration::from_secs(10), "the window to narrow", || async {
            session.layout().await["viewport"]
                .as_f64()
                .is_some_and(|w| w <= f64::from(width))
        })
        .await;
        assert_figures_in_sight(&session.layout().await);
    }
    session.screenshot("dashboard-live-page-narrow.png").await;

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
