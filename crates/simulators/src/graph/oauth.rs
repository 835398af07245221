//! Facebook Login: the dialog (as a page for browsers, or `approve` / `deny` for tests),
//! authorization codes, user and page tokens, and how a request's token is checked.

use std::collections::HashMap;

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::json;
use url::Url;

use super::api::{Caller, Req};
use super::errors::{graph_error, invalid_token, json_response, session_invalidated};
use super::{FakeGraph, FakeGraphConfig, State, LONG_LIVED_EXPIRES_IN, SHORT_LIVED_EXPIRES_IN};
use crate::http::{self, escape_html};
use crate::ids::random_alnum;
use crate::signing;

pub(super) struct Code {
    user: usize,
    redirect_uri: Option<String>,
    used: bool,
}

pub(super) struct UserToken {
    user: usize,
    revoked: bool,
}

pub(super) struct PageToken {
    page_id: String,
    revoked: bool,
}

impl FakeGraph {
    // --- Login dialog and codes ------------------------------------------------------------

    /// A fresh single-use authorization code for user 0 (any `redirect_uri` is accepted).
    pub fn issue_code(&self) -> String {
        self.issue_code_for(0)
    }

    /// A fresh single-use authorization code for user `user_index` (each user has its own
    /// pages); any absolute `redirect_uri` is accepted when it is exchanged.
    pub fn issue_code_for(&self, user_index: usize) -> String {
        self.st().issue_code(user_index, None)
    }

    /// What the browser gets when user `user_index` accepts the dialog at `dialog_url` (the
    /// service's redirect `Location`): `{redirect_uri}?code=…&state=…#_=_`. The code is bound to
    /// that `redirect_uri`. Err when the dialog URL is not one Facebook would accept.
    pub fn approve(&self, dialog_url: &str, user_index: usize) -> Result<String, String> {
        let (redirect, q) = self.check_dialog(dialog_url)?;
        let code = self.st().issue_code(user_index, Some(redirect.to_string()));
        let mut u = redirect;
        {
            let mut pairs = u.query_pairs_mut();
            pairs.append_pair("code", &code);
            if let Some(s) = q.get("state") {
                pairs.append_pair("state", s);
            }
        }
        u.set_fragment(Some("_=_"));
        Ok(u.to_string())
    }

    /// What the browser gets when the user cancels the dialog at `dialog_url`.
    pub fn deny(&self, dialog_url: &str) -> Result<String, String> {
        let (mut u, q) = self.check_dialog(dialog_url)?;
        {
            let mut pairs = u.query_pairs_mut();
            pairs
                .append_pair("error", "access_denied")
                .append_pair("error_code", "200")
                .append_pair("error_description", "Permissions error")
                .append_pair("error_reason", "user_denied");
            if let Some(s) = q.get("state") {
                pairs.append_pair("state", s);
            }
        }
        u.set_fragment(Some("_=_"));
        Ok(u.to_string())
    }

    fn check_dialog(&self, dialog_url: &str) -> Result<(Url, HashMap<String, String>), String> {
        check_dialog(&self.config(), dialog_url)
    }

    /// Queries of the dialog requests received over HTTP.
    pub fn dialog_requests(&self) -> Vec<HashMap<String, String>> {
        self.st().dialog_requests.clone()
    }

    /// `redirect_uri` of the last code exchange.
    pub fn last_redirect_uri(&self) -> Option<String> {
        self.st().last_redirect_uri.clone()
    }

    /// Successful code → token exchanges.
    pub fn code_grants(&self) -> usize {
        self.st().code_grants
    }

    /// Successful short → long-lived exchanges.
    pub fn exchanges(&self) -> usize {
        self.st().exchanges
    }

    /// Refuse Graph calls (not the token endpoint) without a valid `appsecret_proof`, like an
    /// app with "Require App Secret" on.
    pub fn require_appsecret_proof(&self, on: bool) {
        self.st().require_proof = on;
    }

    /// `hex(HMAC-SHA256(app_secret, token))`
    pub fn appsecret_proof(&self, token: &str) -> String {
        signing::meta_appsecret_proof(&self.config().app_secret, token)
    }

    // --- Tokens ----------------------------------------------------------------------------

    /// The page's current token (what `/me/accounts` answers).
    pub fn page_token(&self, page_id: &str) -> String {
        self.st().page(page_id).token.clone()
    }

    /// Every user token issued (short- and long-lived, live or not), in issue order.
    pub fn user_tokens(&self) -> Vec<String> {
        self.st().user_token_order.clone()
    }

    /// Every user and page token issued (live or not): for leak checks.
    pub fn all_tokens(&self) -> Vec<String> {
        let st = self.st();
        st.user_token_order
            .iter()
            .chain(st.page_token_order.iter())
            .cloned()
            .collect()
    }

    /// The page's current token stops working (Graph answers 190 / subcode 460); a new one is
    /// minted, which `/me/accounts` and `page_token` answer from now on.
    pub fn revoke_page_token(&self, page_id: &str) {
        let mut st = self.st();
        let old = st.page(page_id).token.clone();
        if let Some(t) = st.page_tokens.get_mut(&old) {
            t.revoked = true;
        }
        let new = st.mint_page_token(page_id);
        st.pages.get_mut(page_id).unwrap().token = new;
    }

    /// Every user token issued so far stops working (190 / 460). Page tokens are not affected.
    pub fn revoke_user_tokens(&self) {
        for t in self.st().user_tokens.values_mut() {
            t.revoked = true;
        }
    }
}

impl State {
    pub(super) fn issue_code(&mut self, user: usize, redirect_uri: Option<String>) -> String {
        self.ensure_user(user);
        let code = format!("AQ{}", random_alnum(62));
        self.codes.insert(
            code.clone(),
            Code {
                user,
                redirect_uri,
                used: false,
            },
        );
        code
    }

    fn mint_user_token(&mut self, user: usize, long: bool) -> String {
        let token = format!(
            "{}{}",
            if long { "EAAL" } else { "EAAB" },
            random_alnum(180)
        );
        self.user_tokens.insert(
            token.clone(),
            UserToken {
                user,
                revoked: false,
            },
        );
        self.user_token_order.push(token.clone());
        token
    }

    pub(super) fn mint_page_token(&mut self, page_id: &str) -> String {
        let token = format!("EAAP{}", random_alnum(180));
        self.page_tokens.insert(
            token.clone(),
            PageToken {
                page_id: page_id.to_string(),
                revoked: false,
            },
        );
        self.page_token_order.push(token.clone());
        token
    }

    /// The login dialog as a browser sees it: user 0 is signed in; "Continue" grants every
    /// one of their pages (a code bound to the dialog's `redirect_uri`), "Cancel" declines.
    pub(super) fn dialog_page(&mut self, uri: &Uri) -> Response {
        let url = format!("{}{}", self.base_url, uri);
        let body = match check_dialog(&self.config, &url) {
            Err(why) => format!("<p id=\"dialog-error\">{}</p>", escape_html(&why)),
            Ok((redirect, q)) => self.dialog_choices(redirect, &q),
        };
        http::html_page(
            "Log in with Facebook",
            "fake dialog (simulated Facebook, nothing leaves this machine)",
            &body,
        )
    }

    /// The dialog's question and its two links back to the app.
    fn dialog_choices(&mut self, redirect: Url, q: &HashMap<String, String>) -> String {
        let code = self.issue_code(0, Some(redirect.to_string()));
        let with = |pairs: &[(&str, &str)]| {
            let mut u = redirect.clone();
            {
                let mut p = u.query_pairs_mut();
                for (k, v) in pairs {
                    p.append_pair(k, v);
                }
                if let Some(s) = q.get("state") {
                    p.append_pair("state", s);
                }
            }
            u.set_fragment(Some("_=_"));
            escape_html(u.as_str())
        };
        let allow = with(&[("code", &code)]);
        let deny = with(&[
            ("error", "access_denied"),
            ("error_code", "200"),
            ("error_description", "Permissions error"),
            ("error_reason", "user_denied"),
        ]);
        let user = &self.users[0];
        let pages: String = user
            .page_ids
            .iter()
            .filter_map(|id| self.pages.get(id))
            .map(|p| format!("<li>{}</li>", escape_html(&p.name)))
            .collect();
        format!(
            "<h1>Continue as {}?</h1><p>The app asks to manage these Pages and their messages:</p><ul>{pages}</ul>\
             <p><a id=\"allow\" href=\"{allow}\">Continue</a> <a id=\"cancel\" href=\"{deny}\">Cancel</a></p>",
            escape_html(&user.name()),
        )
    }

    /// Who is calling: the token's user or page, checked as Graph checks it (revoked tokens,
    /// `appsecret_proof` when sent or required).
    pub(super) fn authenticate(&self, req: &Req, me: bool) -> Result<Caller, Response> {
        let Some(token) = req.token.as_deref() else {
            return Err(if me {
                graph_error(
                    "An active access token must be used to query information about the current user.",
                    "OAuthException",
                    2500,
                    None,
                )
            } else {
                graph_error(
                    "(#104) An access token is required to request this resource.",
                    "OAuthException",
                    104,
                    None,
                )
            });
        };
        let caller = if let Some(t) = self.user_tokens.get(token) {
            if t.revoked {
                return Err(session_invalidated());
            }
            Caller::User(t.user)
        } else if let Some(t) = self.page_tokens.get(token) {
            if t.revoked {
                return Err(session_invalidated());
            }
            Caller::Page(t.page_id.clone())
        } else {
            return Err(invalid_token());
        };
        match req.param("appsecret_proof") {
            Some(p) if p != signing::meta_appsecret_proof(&self.config.app_secret, token) => {
                return Err(graph_error(
                    "Invalid appsecret_proof provided in the API argument",
                    "GraphMethodException",
                    100,
                    None,
                ))
            }
            None if self.require_proof => {
                return Err(graph_error(
                    "API calls from the server require an appsecret_proof argument",
                    "GraphMethodException",
                    100,
                    None,
                ))
            }
            _ => {}
        }
        Ok(caller)
    }

    /// `/oauth/access_token`: code → short-lived user token (the code bound to the dialog's
    /// `redirect_uri`), or `fb_exchange_token` → long-lived user token.
    pub(super) fn handle_token(&mut self, req: &Req) -> Response {
        let oauth =
            |msg: &str, code: u32, sub: Option<u32>| graph_error(msg, "OAuthException", code, sub);
        match req.param("client_id") {
            None => return oauth("Missing client_id parameter.", 101, None),
            Some(id) if id != self.config.app_id => {
                return oauth(
                    "Error validating application. Invalid application ID.",
                    101,
                    None,
                )
            }
            _ => {}
        }
        if req.param("client_secret") != Some(self.config.app_secret.as_str()) {
            return oauth("Error validating client secret.", 1, None);
        }
        match req.param("grant_type") {
            Some("fb_exchange_token") => {
                let Some(short) = req.param("fb_exchange_token") else {
                    return oauth("Missing fb_exchange_token parameter.", 100, None);
                };
                let user = match self.user_tokens.get(short) {
                    None => return invalid_token(),
                    Some(t) if t.revoked => return session_invalidated(),
                    Some(t) => t.user,
                };
                self.exchanges += 1;
                let token = self.mint_user_token(user, true);
                json_response(
                    StatusCode::OK,
                    json!({"access_token": token, "token_type": "bearer", "expires_in": LONG_LIVED_EXPIRES_IN}),
                )
            }
            None | Some("authorization_code") => {
                let Some(redirect) = req.param("redirect_uri") else {
                    return oauth("Missing redirect_uri parameter.", 100, None);
                };
                if Url::parse(redirect).is_err() {
                    return oauth(
                        "redirect_uri isn't an absolute URI. Check RFC 3986.",
                        191,
                        None,
                    );
                }
                self.last_redirect_uri = Some(redirect.to_string());
                let Some(code) = req.param("code") else {
                    return oauth("Missing code parameter.", 100, None);
                };
                let Some(c) = self.codes.get_mut(code) else {
                    return oauth("Invalid verification code format.", 100, None);
                };
                if c.used {
                    return oauth("This authorization code has been used.", 100, Some(36009));
                }
                if c.redirect_uri.as_deref().is_some_and(|r| r != redirect) {
                    return oauth(
                        "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request",
                        100,
                        Some(36008),
                    );
                }
                c.used = true;
                let user = c.user;
                self.code_grants += 1;
                let token = self.mint_user_token(user, false);
                json_response(
                    StatusCode::OK,
                    json!({"access_token": token, "token_type": "bearer", "expires_in": SHORT_LIVED_EXPIRES_IN}),
                )
            }
            Some(other) => oauth(&format!("Unsupported grant_type: {other}"), 100, None),
        }
    }
}

/// The redirect and query of a dialog URL Facebook would accept, or why it would not.
fn check_dialog(
    c: &FakeGraphConfig,
    dialog_url: &str,
) -> Result<(Url, HashMap<String, String>), String> {
    let u = Url::parse(dialog_url).map_err(|e| format!("not a URL: {e}"))?;
    let want = format!("/{}/dialog/oauth", c.version);
    if u.path() != want {
        return Err(format!("dialog path is {}, expected {want}", u.path()));
    }
    let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
    if q.get("client_id") != Some(&c.app_id) {
        return Err("Invalid App ID: client_id does not match".into());
    }
    match q.get("response_type").map(String::as_str) {
        None | Some("code") => {}
        Some(other) => return Err(format!("unsupported response_type {other}")),
    }
    let redirect = q
        .get("redirect_uri")
        .ok_or("missing redirect_uri")?
        .to_string();
    let r = Url::parse(&redirect).map_err(|_| "redirect_uri isn't an absolute URI")?;
    Ok((r, q))
}
