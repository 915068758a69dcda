//! The web client the node serves: its assets and headers, and the browser tests
//! (`tests/browser/web.mjs` for chat, `voice.mjs` for voice channels) driving it in headless
//! Chromium against a real node.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::TestNode;

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_served_with_strict_headers() {
    let node = TestNode::start().await;
    let http = reqwest::Client::new();
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/invite/some-code", "text/html; charset=utf-8"),
        ("/channels/a/b", "text/html; charset=utf-8"),
        ("/app/style.css", "text/css; charset=utf-8"),
        ("/app/js/main.js", "text/javascript; charset=utf-8"),
        ("/app/js/markdown.js", "text/javascript; charset=utf-8"),
    ] {
        let res = http
            .get(format!("{}{path}", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    }
    let index = http
        .get(&node.base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(index.contains(r#"<script type="module" src="/app/js/main.js"></script>"#));
    assert!(
        !index.contains("<script>"),
        "the CSP allows no inline scripts"
    );

    // Every file in web/ must be embedded: a module left out of web.rs would break the client.
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let mut files = vec![web.join("style.css")];
    files.extend(
        std::fs::read_dir(web.join("js"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    for file in files {
        let rel = file
            .strip_prefix(&web)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let res = http
            .get(format!("{}/app/{rel}", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "web/{rel} is not served");
        assert_eq!(
            res.text().await.unwrap(),
            std::fs::read_to_string(&file).unwrap(),
            "web/{rel}"
        );
    }

    let missing = http
        .get(format!("{}/app/nope.js", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    for api in ["/api/v1/nope", "/api/nope", "/api"] {
        let res = http
            .get(format!("{}{api}", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{api}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["code"], "unknown_endpoint", "{api}");
    }
    let post = http
        .post(format!("{}/somewhere", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}

/// Runs `tests/browser/<script>` with Node.js against the node at `base`, after `npm ci` if
/// playwright-core is not installed yet, and fails with the script's output if it fails.
async fn run_browser_script(script: &'static str, base: &str) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser tests need Debian's chromium. \
         Run ./test.sh (it installs it) or `apt-get install -y chromium`."
    );
    run_node(vec![script.to_owned(), base.to_owned()], true).await;
}

/// Runs `node <args>` in tests/browser (one run at a time; `npm ci` first if `playwright` is
/// wanted and not installed) and fails with its output if it fails.
async fn run_node(args: Vec<String>, playwright: bool) {
    let dir = browser_dir();
    let what = args.join(" ");
    let output = tokio::task::spawn_blocking(move || {
        // One script at a time: two `npm ci` must not share node_modules, and two browsers on
        // a small machine would slow each other past their watchdogs.
        let _one = BROWSER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if playwright && !dir.join("node_modules/playwright-core").exists() {
            let npm = Command::new("npm")
                .arg("ci")
                .current_dir(&dir)
                .output()
                .expect("npm runs (Node.js 20 or newer is needed for the browser tests)");
            assert!(
                npm.status.success(),
                "npm ci in tests/browser failed:\n{}",
                String::from_utf8_lossy(&npm.stderr)
            );
        }
        Command::new("node")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("node runs (Node.js 20 or newer is needed for the browser tests)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node {what} failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}

static BROWSER: Mutex<()> = Mutex::new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and the npm packages of tests/browser: ./test.sh runs it"]
async fn two_users_chat_in_the_browser() {
    // The script seeds 500 messages over REST as one user; the default burst would slow it down.
    let node = TestNode::start_with(|c| c.user_burst = 10_000.0).await;
    run_browser_script("web.mjs", &node.base).await;
}

/// The web client's DM crypto (web/js/xchacha.js, dmcrypto.js) reproduces the RFC 8439 and
/// XChaCha vectors and every byte of spec/vectors/dm.json (tests/browser/dm-crypto.test.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_dm_crypto_matches_the_vectors() {
    run_node(vec!["--test".into(), "dm-crypto.test.mjs".into()], false).await;
}

/// Encrypted DMs in the browser: three users unlock DMs, talk 1:1 and in a group (replies,
/// edits, reactions, deletes), reload, and the node's copy holds no plaintext
/// (tests/browser/dm.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and the npm packages of tests/browser: ./test.sh runs it"]
async fn users_exchange_encrypted_dms_in_the_browser() {
    let node = TestNode::start().await;
    run_browser_script("dm.mjs", &node.base).await;
}

/// Three browsers in one voice channel through the node's SFU: each hears the two others;
/// muting, a disconnect, SPEAK denied and a moderator's server mute each stop exactly the
/// streams they should (tests/browser/voice.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium and the npm packages of tests/browser: ./test.sh runs it"]
async fn three_users_talk_in_a_voice_channel() {
    let node = TestNode::start_with(|_| {}).await.with_voice();
    run_browser_script("voice.mjs", &node.base).await;
}
