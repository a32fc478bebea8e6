//! The demo page: a small browser client served by the server itself at `GET /`.
//!
//! Three static files (`demo/index.html`, `demo/app.js`, `demo/style.css`: plain HTML, CSS and
//! JavaScript, no build step, nothing fetched from elsewhere) and the client library's ES modules
//! (`clients/js`, served under `/demo/client/`, which `app.js` imports) are built into the binary
//! with `include_str!`. On the page you sign in as any user name (a dev-mode token from
//! `POST /v1/dev/token`), add contacts, and watch their presence live over `/v1/ws`
//! (`docs/DEMO.md`). The page is served in every mode; the server tells it whether dev tokens
//! exist, and without them it asks for a pasted token instead of a name.
//!
//! Every response is `Cache-Control: no-cache` (the files have fixed names, so a browser must
//! revalidate to see a new binary's page) with `X-Content-Type-Options: nosniff`; the HTML also
//! carries a Content-Security-Policy allowing only this origin (and WebSockets).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::Response;

const INDEX_HTML: &str = include_str!("demo/index.html");
const APP_JS: &str = include_str!("demo/app.js");
const STYLE_CSS: &str = include_str!("demo/style.css");

/// The client library's modules (`clients/js`), by their path under `/demo/client/`: the page uses
/// the library every app uses, unchanged.
const CLIENT_MODULES: [(&str, &str); 5] = [
    ("/demo/client/index.js", include_str!("../../clients/js/index.js")),
    ("/demo/client/src/client.js", include_str!("../../clients/js/src/client.js")),
    ("/demo/client/src/errors.js", include_str!("../../clients/js/src/errors.js")),
    ("/demo/client/src/lastseen.js", include_str!("../../clients/js/src/lastseen.js")),
    ("/demo/client/src/token.js", include_str!("../../clients/js/src/token.js")),
];

/// Replaced in `index.html` by `true` or `false`: whether this server hands out dev tokens.
const DEV_TOKENS_MARK: &str = "{{DEV_TOKENS}}";

/// The page's path: the URL to open is `http://<listen address>/`.
pub const PAGE_PATH: &str = "/";

const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The response to `GET path` if `path` is one of the demo's files (`/`, `/demo/`, `/demo/app.js`,
/// `/demo/style.css`, the library's modules under `/demo/client/`), else `None`. `dev_tokens`: whether `POST /v1/dev/token` is served.
pub fn response(path: &str, dev_tokens: bool) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match path {
        "/" | "/demo" | "/demo/" | "/demo/index.html" => {
            let html = INDEX_HTML.replace(DEV_TOKENS_MARK, if dev_tokens { "true" } else { "false" });
            (Bytes::from(html), "text/html; charset=utf-8")
        }
        "/demo/app.js" => (Bytes::from_static(APP_JS.as_bytes()), "text/javascript; charset=utf-8"),
        "/demo/style.css" => (Bytes::from_static(STYLE_CSS.as_bytes()), "text/css; charset=utf-8"),
        _ => {
            let (_, module) = CLIENT_MODULES.iter().find(|(p, _)| *p == path)?;
            (Bytes::from_static(module.as_bytes()), "text/javascript; charset=utf-8")
        }
    };
    let html = content_type.starts_with("text/html");
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if html {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = futures_util::FutureExt::now_or_never(r.into_body().collect())
            .expect("a Full body is ready at once")
            .expect("infallible")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    fn header(r: &Response<Full<Bytes>>, name: header::HeaderName) -> &str {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[test]
    fn serves_each_file_with_its_type_and_no_cache() {
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/demo/", "text/html; charset=utf-8"),
            ("/demo/app.js", "text/javascript; charset=utf-8"),
            ("/demo/style.css", "text/css; charset=utf-8"),
        ] {
            let r = response(path, true).expect(path);
            assert_eq!(r.status(), hyper::StatusCode::OK, "{path}");
            assert_eq!(header(&r, header::CONTENT_TYPE), ty, "{path}");
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache", "{path}");
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
        }
        assert_eq!(body(response("/demo/app.js", false).unwrap()), APP_JS);
        assert_eq!(body(response("/demo/style.css", false).unwrap()), STYLE_CSS);
        assert_eq!(header(&response("/", false).unwrap(), header::CONTENT_SECURITY_POLICY), CSP);
    }

    #[test]
    fn unknown_paths_are_not_served() {
        for path in [
            "/demo/x.js",
            "/demo/../Cargo.toml",
            "/index.html",
            "/demo/app.js/",
            "/v1/ws",
            "",
            "/demo/client/",
            "/demo/client/package.json",
            "/demo/client/src/",
        ] {
            assert!(response(path, true).is_none(), "{path}");
        }
    }

    #[test]
    fn the_page_says_whether_dev_tokens_exist() {
        let on = body(response("/", true).unwrap());
        let off = body(response("/", false).unwrap());
        assert!(on.contains(r#"<meta name="presence-dev-tokens" content="true">"#));
        assert!(off.contains(r#"<meta name="presence-dev-tokens" content="false">"#));
        assert!(!on.contains(DEV_TOKENS_MARK) && !off.contains(DEV_TOKENS_MARK));
    }

    #[test]
    fn every_asset_the_page_references_is_served() {
        let html = body(response("/", true).unwrap());
        let refs: Vec<&str> = ["href=\"", "src=\""]
            .iter()
            .flat_map(|attr| html.split(attr).skip(1).map(|rest| rest.split('"').next().unwrap_or("")))
            .filter(|r| r.starts_with('/'))
            .collect();
        assert_eq!(refs, ["/demo/style.css", "/demo/app.js"]);
        for r in refs {
            assert!(response(r, true).is_some(), "{r}");
        }
    }

    /// Every relative `import ... from './x.js'` of the page's modules resolves to a served module,
    /// so the page loads the whole library (a missing one would fail only in a browser).
    #[test]
    fn every_module_the_page_imports_is_served() {
        let mut pending = vec![("/demo/app.js".to_owned(), APP_JS.to_owned())];
        let mut seen = Vec::new();
        while let Some((path, source)) = pending.pop() {
            let dir = &path[..path.rfind('/').expect("absolute path") + 1];
            for spec in source.split("from '").skip(1).map(|rest| rest.split('\'').next().unwrap_or("")) {
                let mut parts: Vec<&str> = dir.trim_end_matches('/').split('/').collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                if seen.contains(&target) {
                    continue;
                }
                let r = response(&target, true)
                    .unwrap_or_else(|| panic!("{path} imports {spec}: {target} is not served"));
                assert_eq!(header(&r, header::CONTENT_TYPE), "text/javascript; charset=utf-8", "{target}");
                seen.push(target.clone());
                pending.push((target, body(r)));
            }
        }
        seen.sort();
        let mut all: Vec<String> = CLIENT_MODULES.iter().map(|(p, _)| (*p).to_owned()).collect();
        all.sort();
        assert_eq!(seen, all, "every served module is imported, and only those");
    }
}
