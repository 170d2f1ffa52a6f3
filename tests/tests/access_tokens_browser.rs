//! Access tokens in a real browser (Debian's headless Chromium over WebDriver, tests/src/
//! browser.rs), through every entry, as a person opening a sandbox's web app would use them:
//!
//! * a page from a test origin opens a WebSocket to a sandbox with the query token and
//!   exchanges messages;
//! * a navigation with the query token is redirected to the same address without it, the
//!   browser keeps the HttpOnly cookie (path-scoped to the sandbox and port), and the page's
//!   own sub-requests (a fetch, a WebSocket) then load with the cookie alone;
//! * a page from a foreign origin (same site: the cookie rides along) cannot open a WebSocket
//!   with it;
//! * a token for demo-a opens nothing on demo-b, and sets no cookie there.

use sandgate_tests::browser::{Browser, serve_page};
use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use serde_json::{Value, json};

/// Opens a WebSocket to `arguments[0]`, sends "ping", and answers `{ok: reply}` or
/// `{error}`; for execute_async (the callback is the last argument).
const WS_ROUND_TRIP: &str = r#"
const done = arguments[arguments.length - 1];
let settled = false;
const finish = (v) => { if (!settled) { settled = true; done(v); } };
const ws = new WebSocket(arguments[0]);
ws.onopen = () => ws.send("ping");
ws.onmessage = (e) => { finish({ok: e.data}); ws.close(); };
ws.onerror = () => finish({error: "error"});
ws.onclose = (e) => finish({error: "closed " + e.code});
setTimeout(() => finish({error: "timeout"}), 10000);
"#;

/// Fetches `arguments[0]` from the current page (its cookies included as the browser sends
/// them) and answers `{status, body}`.
const FETCH: &str = r#"
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: "same-origin"})
  .then(async (r) => done({status: r.status, body: await r.text()}))
  .catch((e) => done({error: String(e)}));
"#;

const PAGE: &str = "<!doctype html><title>test origin</title><p>a page that is not the gateway's";

async fn a_browser_carries_a_token_as_a_person_would(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let a = gw.sandbox("acme", "pod-a", "demo-a", "127.0.0.11").await;
    let b = gw.sandbox("globex", "pod-b", "demo-b", "127.0.0.12").await;
    let token = gw.mint("demo-a", &[a]).await;
    let gateway = format!("http://{}", gw.envoy.addr);
    let ws_gateway = format!("ws://{}", gw.envoy.addr);
    let browser = Browser::start().await.expect("start the browser");
    let (test_origin, _test_page) = serve_page(PAGE).await.unwrap();
    let (foreign_origin, _foreign_page) = serve_page(PAGE).await.unwrap();
    let round_trip = |url: String| {
        let browser = &browser;
        async move {
            browser
                .execute_async(WS_ROUND_TRIP, vec![json!(url)])
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", browser.log()))
        }
    };

    // A page from a test origin: a WebSocket with the query token.
    browser.goto(&test_origin).await.unwrap();
    let got = round_trip(format!(
        "{ws_gateway}/sandboxes/demo-a/{a}/ws?sandgate_token={token}"
    ))
    .await;
    assert_eq!(
        got,
        json!({"ok": "ping"}),
        "query-token WebSocket from {test_origin}"
    );

    // A navigation with the query token: redirected without it, into the cookie.
    let page = format!("{gateway}/sandboxes/demo-a/{a}/app/index.html");
    browser
        .goto(&format!("{page}?lang=en&sandgate_token={token}"))
        .await
        .unwrap();
    assert_eq!(
        browser.current_url().await.unwrap(),
        format!("{page}?lang=en")
    );
    let text = browser
        .execute("return document.body.innerText", vec![])
        .await
        .unwrap();
    let shown: Value = serde_json::from_str(text.as_str().unwrap_or_default())
        .expect("the echo's JSON on the page");
    assert_eq!(shown["sandbox"], "demo-a");
    assert_eq!(shown["path"], "/app/index.html?lang=en");
    assert!(
        shown["headers"].get("cookie").is_none(),
        "the token cookie reached the sandbox: {shown}"
    );
    let cookies = browser.cookies().await.unwrap();
    let cookie = cookies
        .iter()
        .find(|c| c["name"] == "sandgate_token")
        .unwrap_or_else(|| panic!("no token cookie: {cookies:?}"));
    assert_eq!(cookie["value"], token.as_str());
    assert_eq!(cookie["path"], format!("/sandboxes/demo-a/{a}"));
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Lax");
    let script_sees = browser.execute("return document.cookie", vec![]).await;
    assert_eq!(
        script_sees.unwrap(),
        json!(""),
        "HttpOnly: no script reads it"
    );

    // The page's own sub-requests, with the cookie alone.
    let sub = browser
        .execute_async(
            FETCH,
            vec![json!(format!("/sandboxes/demo-a/{a}/data.json"))],
        )
        .await
        .unwrap();
    assert_eq!(sub["status"], 200, "{sub}");
    let seen: Value = serde_json::from_str(sub["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["path"], "/data.json");
    let got = round_trip(format!("{ws_gateway}/sandboxes/demo-a/{a}/ws")).await;
    assert_eq!(
        got,
        json!({"ok": "ping"}),
        "cookie WebSocket from the gateway's origin"
    );

    // A token for demo-a opens nothing on demo-b: the cookie is not sent there (its path),
    // and the query token is refused, with no cookie set.
    let other = browser
        .execute_async(FETCH, vec![json!(format!("/sandboxes/demo-b/{b}/"))])
        .await
        .unwrap();
    assert_eq!(other["status"], 401, "{other}");
    browser
        .goto(&format!(
            "{gateway}/sandboxes/demo-b/{b}/?sandgate_token={token}"
        ))
        .await
        .unwrap();
    let source = browser.page_source().await.unwrap();
    assert!(source.contains("access_token_out_of_scope"), "{source}");
    let cookies = browser.cookies().await.unwrap();
    assert!(
        cookies.iter().all(|c| c["name"] != "sandgate_token"),
        "a cookie was set for demo-b: {cookies:?}"
    );

    // A page from a foreign origin on the same site: the browser sends the cookie with its
    // WebSocket, and the gateway refuses it for the Origin (the raw test shows the 403).
    browser.goto(&foreign_origin).await.unwrap();
    let got = round_trip(format!("{ws_gateway}/sandboxes/demo-a/{a}/ws")).await;
    assert!(
        got.get("error").is_some(),
        "foreign origin rode the cookie: {got}"
    );
    // The same page may still use a token it was given in the query.
    let got = round_trip(format!(
        "{ws_gateway}/sandboxes/demo-a/{a}/ws?sandgate_token={token}"
    ))
    .await;
    assert_eq!(got, json!({"ok": "ping"}));
}

every_entry!(a_browser_carries_a_token_as_a_person_would);
