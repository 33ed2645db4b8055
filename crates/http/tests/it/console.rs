//! The console's page and assets are served without any external reference.

use axum::http::StatusCode;

use crate::harness::App;

#[tokio::test]
async fn serves_the_page_for_every_view() {
    let app = App::start().await;
    for uri in [
        "/",
        "/ui",
        "/ui/topics",
        "/ui/topics/orders",
        "/ui/groups",
        "/ui/agents",
    ] {
        let page = app.get(uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert!(page.content_type.starts_with("text/html"), "{uri}");
        assert!(page.text().contains("/ui/assets/app.js"), "{uri}");
    }
    let js = app.get("/ui/assets/app.js").await;
    assert!(js.content_type.starts_with("text/javascript"));
    assert!(js.text().contains("/api/v1/stats"));
    let css = app.get("/ui/assets/app.css").await;
    assert!(css.content_type.starts_with("text/css"));
    for asset in [app.get("/").await, js, css] {
        let text = asset.text();
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "external reference"
        );
    }
}
