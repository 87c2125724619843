//! The dashboard's token: given once as `?token=…` (then kept in a cookie for the
//! pages and their live parts) or sent as `Authorization: Bearer …`; compared in
//! constant time; never logged or shown.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use super::App;

const COOKIE: &str = "sweeper_token";

/// A secret that prints as `Token(…)`.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// `None` for an empty text: an empty token would let anyone in.
    pub fn new(text: String) -> Option<Token> {
        (!text.is_empty()).then_some(Token(text))
    }

    fn matches(&self, given: &str) -> bool {
        self.0.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Lets a request through when no token is set or it carries the token; answers 401
/// otherwise. A token given in the query sets the cookie, so links need not carry it.
pub(super) async fn require_token(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &app.config.token else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find(|value| token.matches(value));
    let query = request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
    });
    let from_query = query.as_deref().is_some_and(|given| token.matches(given));
    if bearer.is_some_and(|given| token.matches(given)) || cookie.is_some() || from_query {
        let mut response = next.run(request).await;
        if from_query {
            let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", token.0);
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this dashboard needs its token: open it with ?token=… or send Authorization: Bearer …\n",
    )
        .into_response()
}
