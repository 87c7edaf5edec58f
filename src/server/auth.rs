//! Bearer-token authentication: where the token comes from, when one is required (always
//! off loopback), and the constant-time check every API request goes through.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::error::{Error, ErrorCode, Result};
use crate::settings::env_vars;

/// The token every API request must present. Only its digest is kept, so comparing takes
/// the same time whatever the candidate's length or content.
pub(crate) struct Token {
    digest: [u8; 32],
}

impl Token {
    fn new(secret: &str) -> Token {
        Token {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    pub(crate) fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        self.digest.ct_eq(&digest).into()
    }
}

/// The token from `--token-file` (first), else from `OWRT_IMG_API_TOKEN`; surrounding
/// whitespace is not part of it. An empty token is an error, never "no token".
pub(crate) fn load_token(
    token_file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<Option<Token>> {
    let (secret, origin) = match token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| Error::io("reading the token file", path, error))?;
            (text, format!("`{}`", path.display()))
        }
        None => match env.get(env_vars::OWRT_IMG_API_TOKEN) {
            Some(text) => (text.clone(), format!("`{}`", env_vars::OWRT_IMG_API_TOKEN)),
            None => return Ok(None),
        },
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(Error::new(
            ErrorCode::Validation,
            format!("the API token in {origin} is empty"),
        )
        .with_help("put a long random string there, e.g. from `openssl rand -hex 32`"));
    }
    Ok(Some(Token::new(secret)))
}

/// Off loopback, a token is required: the API can write fleet files and start builds.
pub(crate) fn check_listen_policy(listen: &SocketAddr, token: Option<&Token>) -> Result<()> {
    if listen.ip().is_loopback() || token.is_some() {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::Precondition,
        format!("refusing to listen on `{listen}` without an API token"),
    )
    .with_help(format!(
        "set `{}` or pass `--token-file FILE`; without a token, listen on loopback only (e.g. `--listen 127.0.0.1:8080`)",
        env_vars::OWRT_IMG_API_TOKEN
    )))
}

/// Middleware: with a token configured, a request without `Authorization: Bearer <token>`
/// gets 401 `unauthorized`.
pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> std::result::Result<Response, ApiError> {
    let Some(token) = &state.token else {
        return Ok(next.run(request).await);
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(candidate) if token.matches(candidate) => Ok(next.run(request).await),
        Some(_) => Err(Error::new(ErrorCode::Unauthorized, "wrong API token").into()),
        None => Err(
            Error::new(ErrorCode::Unauthorized, "this server needs an API token")
                .with_help("send `Authorization: Bearer <token>`")
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_only() {
        let token = Token::new("s3cret");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches(""));
    }

    #[test]
    fn off_loopback_needs_a_token() {
        let open: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(
            check_listen_policy(&open, None).unwrap_err().code,
            ErrorCode::Precondition
        );
        assert!(check_listen_policy(&open, Some(&Token::new("x"))).is_ok());
        assert!(check_listen_policy(&local, None).is_ok());
    }

    #[test]
    fn an_empty_token_is_an_error() {
        let env = BTreeMap::from([(env_vars::OWRT_IMG_API_TOKEN.to_string(), " \n".into())]);
        assert!(load_token(None, &env).is_err());
        assert!(load_token(None, &BTreeMap::new()).unwrap().is_none());
    }
}
