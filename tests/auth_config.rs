//! The `[auth]` config section: parsing, defaults, and validation messages that name the field.

use std::time::Duration;

use cadbroker::auth::{Audiences, AuthConfig, AuthInitError, Authenticator, IssuerConfig, IssuerKind};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    auth: AuthConfig,
}

const EXAMPLE: &str = r#"
[auth]
adminGroups = ["cad-admins"]
adminRoles = ["Broker.Admin"]
leeway = "30s"
maxTokenAge = "12h"

[[auth.issuers]]
name = "dev"
kind = "development"
issuer = "https://cadbroker.invalid/dev"
audience = "cadbroker"
keyFile = ".cadbroker/dev-signing-key.pem"

[[auth.issuers]]
name = "entra"
kind = "oidc"
issuer = "https://login.microsoftonline.com/0b4d3c52-1111-2222-3333-444455556666/v2.0"
audience = ["api://cadbroker", "5f6e7d8c-aaaa-bbbb-cccc-ddddeeeeffff"]
algorithms = ["RS256"]
userClaims = ["tid", "oid"]
groupsClaim = "groups"
rolesClaim = "roles"
requiredScopes = ["access_as_user"]
allowedTenants = ["0b4d3c52-1111-2222-3333-444455556666"]
jwksRefreshMinInterval = "60s"
jwksCacheTtl = "1h"
httpTimeout = "5s"
"#;

fn parse(toml_text: &str) -> AuthConfig {
    toml::from_str::<File>(toml_text).expect("parses").auth
}

fn errors(cfg: &AuthConfig) -> Vec<String> {
    cfg.validate().expect_err("should be invalid")
}

fn assert_error(cfg: &AuthConfig, expected: &str) {
    let errors = errors(cfg);
    assert!(errors.iter().any(|e| e == expected), "expected {expected:?} in {errors:#?}");
}

fn entra() -> IssuerConfig {
    IssuerConfig::oidc("entra", "https://login.microsoftonline.com/t/v2.0", "api://cadbroker")
}

fn with_issuers(issuers: Vec<IssuerConfig>) -> AuthConfig {
    AuthConfig { issuers, ..AuthConfig::default() }
}

#[test]
fn documented_example_parses_and_validates() {
    let cfg = parse(EXAMPLE);
    assert_eq!(cfg.validate(), Ok(()));
    assert_eq!(cfg.leeway, Duration::from_secs(30));
    assert_eq!(cfg.max_token_age, Some(Duration::from_secs(12 * 3600)));
    let entra = cfg.issuer("entra").unwrap();
    assert_eq!(entra.kind, IssuerKind::Oidc);
    assert_eq!(entra.audience.as_slice().len(), 2);
    assert_eq!(entra.user_claims, ["tid", "oid"]);
    assert_eq!(entra.effective_jwks_refresh_min_interval(), Duration::from_secs(60));
    assert_eq!(cfg.development_issuer().unwrap().name, "dev");
}

#[test]
fn omitted_fields_take_documented_defaults() {
    let cfg = parse(
        r#"
        [auth]
        [[auth.issuers]]
        name = "entra"
        kind = "oidc"
        issuer = "https://login.microsoftonline.com/t/v2.0"
        audience = "api://cadbroker"
        "#,
    );
    assert_eq!(cfg.validate(), Ok(()));
    assert_eq!(cfg.leeway, Duration::from_secs(30));
    assert_eq!(cfg.max_token_age, None);
    assert_eq!(cfg.max_token_bytes, 16 * 1024);
    let issuer = &cfg.issuers[0];
    assert_eq!(issuer.audience, Audiences::One("api://cadbroker".into()));
    assert_eq!(issuer.effective_algorithms(), ["RS256"]);
    assert_eq!(issuer.user_claims, ["sub"]);
    assert_eq!((issuer.groups_claim.as_str(), issuer.roles_claim.as_str()), ("groups", "roles"));
    assert_eq!(
        issuer.effective_discovery_url(),
        "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration"
    );
    assert_eq!(issuer.effective_jwks_cache_ttl(), Duration::from_secs(3600));
    assert_eq!(issuer.effective_http_timeout(), Duration::from_secs(5));
    assert_eq!(IssuerConfig::development("dev").effective_algorithms(), ["EdDSA"]);
}

#[test]
fn unknown_fields_are_rejected_at_parse_time() {
    let text = "[auth]\nleeway = \"30s\"\nadminGroup = [\"typo\"]\n";
    assert!(toml::from_str::<File>(text).is_err());
    let text = "[auth]\n[[auth.issuers]]\nname = \"d\"\nkind = \"development\"\nissuer = \"x\"\naudience = \"a\"\njku = \"x\"\n";
    assert!(toml::from_str::<File>(text).is_err());
}

#[test]
fn hmac_and_none_algorithms_are_refused_for_an_oidc_issuer() {
    let mut issuer = entra();
    issuer.algorithms = vec!["RS256".into(), "HS256".into(), "none".into(), "XS999".into()];
    let cfg = with_issuers(vec![IssuerConfig::development("dev"), issuer]);
    assert_error(&cfg, "auth.issuers[1].algorithms: HS256 is not allowed for an oidc issuer");
    assert_error(&cfg, "auth.issuers[1].algorithms: none is never allowed");
    assert_error(&cfg, "auth.issuers[1].algorithms: XS999 is not a supported algorithm");
}

#[test]
fn development_issuer_signs_with_eddsa_only_and_keys_users_by_sub() {
    let mut dev = IssuerConfig::development("dev");
    dev.algorithms = vec!["RS256".into()];
    dev.user_claims = vec!["tid".into(), "oid".into()];
    dev.discovery_url = Some("https://example.invalid/.well-known/openid-configuration".into());
    let cfg = with_issuers(vec![dev]);
    assert_error(&cfg, "auth.issuers[0].algorithms: RS256: a development issuer signs with EdDSA only");
    assert!(errors(&cfg).iter().any(|e| e.starts_with("auth.issuers[0].userClaims: a development issuer")));
    assert_error(&cfg, "auth.issuers[0].discoveryUrl: only applies to an oidc issuer");
}

#[test]
fn mutable_claims_can_never_be_the_user_key() {
    for claim in ["email", "preferred_username", "upn", "unique_name", "name"] {
        let mut issuer = entra();
        issuer.user_claims = vec![claim.into()];
        let errors = errors(&with_issuers(vec![issuer]));
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("auth.issuers[0].userClaims: {claim} is mutable"))),
            "{claim}: {errors:?}"
        );
    }
}

#[test]
fn oidc_urls_must_be_https_except_on_loopback() {
    let mut issuer = entra();
    issuer.issuer = "http://idp.example.com/v2.0".into();
    let errors = errors(&with_issuers(vec![issuer]));
    assert!(errors.iter().any(|e| e.starts_with("auth.issuers[0].issuer:") && e.contains("must use https")));
    for ok in ["http://127.0.0.1:8080/t/v2.0", "http://localhost/t", "http://[::1]:9/t"] {
        let mut issuer = entra();
        issuer.issuer = ok.into();
        assert_eq!(with_issuers(vec![issuer]).validate(), Ok(()), "{ok}");
    }
}

#[test]
fn multi_tenant_issuer_requires_a_tenant_allow_list_and_a_discovery_url() {
    let mut issuer = entra();
    issuer.issuer = "https://login.microsoftonline.com/{tenantid}/v2.0".into();
    let cfg = with_issuers(vec![issuer.clone()]);
    assert!(errors(&cfg).iter().any(|e| e.starts_with("auth.issuers[0].allowedTenants: required")));
    assert!(errors(&cfg).iter().any(|e| e.starts_with("auth.issuers[0].discoveryUrl: required")));
    issuer.allowed_tenants = Some(["t1".to_owned()].into());
    issuer.discovery_url =
        Some("https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration".into());
    assert_eq!(with_issuers(vec![issuer]).validate(), Ok(()));
}

#[test]
fn issuer_names_and_issuers_must_be_unique() {
    let cfg = with_issuers(vec![entra(), entra()]);
    assert_error(&cfg, "auth.issuers[1].name: \"entra\" is used by another issuer");
    assert_error(
        &cfg,
        "auth.issuers[1].issuer: \"https://login.microsoftonline.com/t/v2.0\" is configured twice",
    );
}

#[test]
fn global_limits_are_checked() {
    let cfg = AuthConfig {
        issuers: vec![],
        leeway: Duration::from_secs(600),
        max_token_bytes: 100,
        max_token_age: Some(Duration::ZERO),
        ..AuthConfig::default()
    };
    assert_error(&cfg, "auth.issuers: at least one issuer is required");
    assert_error(&cfg, "auth.leeway: must be at most 5m");
    assert_error(&cfg, "auth.maxTokenBytes: must be between 1024 and 65536");
    assert_error(&cfg, "auth.maxTokenAge: must be positive (omit it for no limit)");
}

#[test]
fn kind_specific_fields_are_refused_on_the_other_kind() {
    let mut issuer = entra();
    issuer.key_file = Some("k.pem".into());
    issuer.jwks_refresh_min_interval = Some(Duration::from_secs(600));
    issuer.jwks_cache_ttl = Some(Duration::from_secs(60));
    issuer.http_timeout = Some(Duration::from_secs(120));
    let cfg = with_issuers(vec![issuer]);
    assert_error(&cfg, "auth.issuers[0].keyFile: only applies to a development issuer");
    assert_error(&cfg, "auth.issuers[0].jwksCacheTtl: must be at least jwksRefreshMinInterval");
    assert_error(&cfg, "auth.issuers[0].httpTimeout: must be between 100ms and 60s");
}

#[tokio::test]
async fn authenticator_refuses_an_invalid_config_with_every_message() {
    let mut issuer = entra();
    issuer.algorithms = vec!["HS256".into()];
    let err = Authenticator::new(&with_issuers(vec![issuer])).await.unwrap_err();
    match &err {
        AuthInitError::Config(messages) => {
            assert_eq!(messages, &["auth.issuers[0].algorithms: HS256 is not allowed for an oidc issuer"])
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("HS256 is not allowed"));
}
