//! What the browser tests share: serving a made-up cluster, headless Chromium (the DOM
//! after the scripts ran, screenshots), and reading numbers out of the DOM.
//!
//! Chromium and promtool come from Debian (`ci/setup-daemons.sh` installs them); without
//! them the tests say they cannot run, and fail instead when RASK_REQUIRE_DAEMONS is set.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rask_dashboard::Source;

/// Serves `source` on a thread of its own, sampled as the scheduler's dashboard samples;
/// its address.
pub fn serve(source: Arc<dyn Source>) -> String {
    serve_sampled(source, rask_dashboard::SAMPLE)
}

/// Serves `source` on a thread of its own, sampled at most every `every`; its address.
/// (Chromium's virtual time runs polls closer together than the real sampling period.)
pub fn serve_sampled(source: Arc<dyn Source>, every: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().to_string()).unwrap();
            let app = rask_dashboard::router_sampled(source, every);
            axum::serve(l, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Says why a test cannot run (and fails when RASK_REQUIRE_DAEMONS is set).
pub fn cannot_run(reason: &str) {
    if std::env::var_os("RASK_REQUIRE_DAEMONS").is_some() {
        panic!("cannot run (RASK_REQUIRE_DAEMONS is set): {reason}");
    }
    println!("SKIPPED: {reason}");
}

/// `program` is on the path.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Headless Chromium letting a page's scripts run `budget_ms` of virtual time, killed
/// after 120 s of real time (a hang fails the test).
fn chromium(budget_ms: u32) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "120",
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
    ])
    .arg(format!("--virtual-time-budget={budget_ms}"));
    c
}

/// The DOM of `url` after its scripts ran for 4 s of virtual time (several polls).
pub fn dom(url: &str) -> String {
    dom_after(url, 4000)
}

/// The DOM of `url` after its scripts ran for `budget_ms` of virtual time.
pub fn dom_after(url: &str, budget_ms: u32) -> String {
    let out = chromium(budget_ms)
        .args(["--dump-dom", url])
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A screenshot of `url` at `target/dashboard/NAME.png`, `height` pixels tall.
pub fn screenshot(url: &str, name: &str, height: u32) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    let out = chromium(4000)
        .arg(format!("--window-size=1280,{height}"))
        .arg("--hide-scrollbars")
        .arg(format!("--screenshot={}", file.display()))
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::metadata(&file).unwrap().len() > 10_000,
        "an empty screenshot"
    );
}

/// How many times the page drew (the body's `data-draws`).
pub fn draws(dom: &str) -> u64 {
    body_data(dom, "draws").parse().unwrap()
}

/// How long the page's last redraw took, in milliseconds (the body's `data-draw-ms`).
pub fn draw_ms(dom: &str) -> f64 {
    body_data(dom, "draw-ms").parse().unwrap()
}

/// The value of the body's `data-NAME`.
fn body_data<'a>(dom: &'a str, name: &str) -> &'a str {
    let body = tag_with(dom, "<body");
    let key = format!("data-{name}=\"");
    assert!(body.contains(&key), "the page never drew: {body}");
    attr(body, &format!("data-{name}"))
}

/// How many elements of `dom` have a class attribute starting with `class`.
pub fn count(dom: &str, class: &str) -> usize {
    dom.matches(&format!("class=\"{class}")).count()
}

/// The opening tag of the element carrying `attr` (an exact `name="value"`).
pub fn tag_with<'a>(dom: &'a str, attr: &str) -> &'a str {
    let at = dom
        .find(attr)
        .unwrap_or_else(|| panic!("no {attr} in\n{dom}"));
    let start = dom[..=at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The value of attribute `name` in the opening tag `tag`.
pub fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[at..at + tag[at..].find('"').unwrap()]
}

/// `promtool check metrics` finds `body` valid (its lint included).
pub fn promtool(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The body of a GET.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}
