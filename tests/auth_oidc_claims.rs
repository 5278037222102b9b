//! SECURITY.md §1 cases about what a validly signed token says, against an OIDC issuer served
//! by a real HTTP server on 127.0.0.1:0: audience (A16, A17, A22 ID tokens), issuer and tenant
//! (A18, A19), identity (A20) and groups (A21). Structural and signature attacks are in
//! `auth_oidc_attacks.rs`.

#[path = "common/jwt.rs"]
mod jwt;

use std::collections::BTreeSet;

use cadbroker::auth::{AuthError, Authenticator, Invalid};
use jwt::{
    OidcFixture as Fixture, RSA_A, TENANT_A, TENANT_B, TestIdp, TestKey, auth_config, base_of, claims, now,
};
use serde_json::json;

const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

#[tokio::test]
async fn a16_audience_must_be_present_and_ours() {
    let f = Fixture::new().await;
    let mut c = f.claims();
    c.as_object_mut().unwrap().remove("aud");
    f.rejects(&RSA_A.sign(&c), AuthError::Audience, "missing aud").await;
    for aud in
        [json!("api://other"), json!(["api://other", "api://third"]), json!(42), json!([]), json!(null)]
    {
        let mut c = f.claims();
        c["aud"] = aud.clone();
        f.rejects(&RSA_A.sign(&c), AuthError::Audience, &aud.to_string()).await;
    }
}

#[tokio::test]
async fn a16_our_audience_among_others_is_accepted_by_default_and_rejected_when_exclusive() {
    let shared = json!(["api://other", "api://cadbroker"]);
    let f = Fixture::new().await;
    let mut c = f.claims();
    c["aud"] = shared.clone();
    assert!(f.check(&RSA_A.sign(&c)).await.is_ok());

    let f = Fixture::with(|i| i.exclusive_audience = true).await;
    let mut c = f.claims();
    c["aud"] = shared;
    f.rejects(&RSA_A.sign(&c), AuthError::Audience, "shared audience under exclusiveAudience").await;
}

#[tokio::test]
async fn a17_entra_token_for_microsoft_graph_is_rejected() {
    let f = Fixture::new().await;
    for aud in [GRAPH_APP_ID, "https://graph.microsoft.com"] {
        let mut c = f.claims();
        c["aud"] = json!(aud);
        c["scp"] = json!("User.Read");
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": RSA_A.kid, "nonce": "graph-style-nonce"});
        f.rejects(&RSA_A.sign_with_header(&header, &c), AuthError::Audience, aud).await;
    }
}

#[tokio::test]
async fn a18_token_from_another_tenant_signed_with_the_shared_keys_is_rejected() {
    let f = Fixture::new().await;
    let mut c = f.claims();
    c["iss"] = json!(f.idp.issuer(TENANT_B));
    c["tid"] = json!(TENANT_B);
    f.rejects(&RSA_A.sign(&c), AuthError::Issuer, "tenant B on a tenant-A issuer").await;
}

#[tokio::test]
async fn a18_multi_tenant_issuer_accepts_only_allow_listed_tenants_whose_tid_matches_iss() {
    let f = Fixture::with(|i| {
        let base = base_of(&i.issuer);
        i.issuer = format!("{base}/{{tenantid}}/v2.0");
        i.discovery_url = Some(format!("{base}/common/v2.0/.well-known/openid-configuration"));
        i.allowed_tenants = Some(BTreeSet::from([TENANT_A.to_owned()]));
    })
    .await;
    assert!(f.check(&RSA_A.sign(&f.claims())).await.is_ok(), "allow-listed tenant A");

    let mut other = f.claims();
    other["iss"] = json!(f.idp.issuer(TENANT_B));
    other["tid"] = json!(TENANT_B);
    f.rejects(&RSA_A.sign(&other), AuthError::Issuer, "tenant B not allow-listed").await;

    let mut mismatch = f.claims();
    mismatch["tid"] = json!(TENANT_B);
    f.rejects(&RSA_A.sign(&mismatch), AuthError::Issuer, "iss says A, tid says B").await;

    let mut no_tid = f.claims();
    no_tid.as_object_mut().unwrap().remove("tid");
    f.rejects(&RSA_A.sign(&no_tid), AuthError::Issuer, "no tid").await;

    let mut path_trick = f.claims();
    path_trick["iss"] = json!(f.idp.issuer(&format!("{TENANT_A}/x")));
    f.rejects(&RSA_A.sign(&path_trick), AuthError::Issuer, "tenant segment with a slash").await;
}

#[tokio::test]
async fn a18_per_key_issuer_restricts_the_key_to_its_tenant() {
    let ec = TestKey::ec("unused");
    let idp = TestIdp::start(&[&ec]).await;
    let scoped = RSA_A.jwk_with(json!({"issuer": idp.issuer(TENANT_B)}));
    idp.set_jwks(json!({"keys": [scoped]}));
    let auth = Authenticator::new(&auth_config(vec![idp.issuer_config(TENANT_A)])).await.unwrap();
    let now = now();
    let mut c = claims(&idp.issuer(TENANT_A), "api://cadbroker", "s", now);
    c["tid"] = json!(TENANT_A);
    assert_eq!(auth.authenticate_at(&RSA_A.sign(&c), now).await.map(|p| p.subject), Err(AuthError::Issuer));
}

#[tokio::test]
async fn a19_v1_issuer_is_rejected_when_only_v2_is_configured() {
    let f = Fixture::new().await;
    let mut c = f.claims();
    c["iss"] = json!(format!("https://sts.windows.net/{TENANT_A}/"));
    c["ver"] = json!("1.0");
    f.rejects(&RSA_A.sign(&c), AuthError::Issuer, "v1 issuer").await;
    for near in [format!("{}/", f.iss), f.iss.to_uppercase(), format!("{} ", f.iss)] {
        let mut c = f.claims();
        c["iss"] = json!(near);
        f.rejects(&RSA_A.sign(&c), AuthError::Issuer, "iss must match exactly").await;
    }
}

#[tokio::test]
async fn a20_entra_user_key_is_tid_and_oid_never_email_or_upn() {
    let f = Fixture::with(|i| i.user_claims = vec!["tid".into(), "oid".into()]).await;
    let mut c = f.claims();
    c["email"] = json!("ceo@victim.example");
    c["preferred_username"] = json!("ceo@victim.example");
    c["upn"] = json!("ceo@victim.example");
    let p = f.check(&RSA_A.sign(&c)).await.unwrap();
    assert_eq!(p.user.as_str(), format!("tid:{TENANT_A}/oid:11111111-2222-3333-4444-555555555555"));

    let mut no_oid = f.claims();
    no_oid.as_object_mut().unwrap().remove("oid");
    f.rejects(&RSA_A.sign(&no_oid), Invalid::Claims, "no oid: no identity").await;
}

#[tokio::test]
async fn a21_group_overage_yields_unknown_groups_and_roles_still_grant_admin() {
    let f = Fixture::new().await;
    let mut c = f.claims();
    c["_claim_names"] = json!({"groups": "src1"});
    c["_claim_sources"] =
        json!({"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}});
    c["hasgroups"] = json!(true);
    let p = f.check(&RSA_A.sign(&c)).await.unwrap();
    assert_eq!(p.groups, None);
    assert!(!p.admin);

    c["roles"] = json!(["Broker.Admin"]);
    let p = f.check(&RSA_A.sign(&c)).await.unwrap();
    assert_eq!((p.groups, p.admin), (None, true));

    let mut listed = f.claims();
    listed["groups"] = json!(["cad-admins", "g2"]);
    let p = f.check(&RSA_A.sign(&listed)).await.unwrap();
    assert_eq!(p.groups.map(|g| g.len()), Some(2));
    assert!(p.admin);
}

#[tokio::test]
async fn a22_id_token_is_rejected_by_audience_and_by_required_scopes() {
    let client_id = "5f6e7d8c-aaaa-bbbb-cccc-ddddeeeeffff";
    let f = Fixture::new().await;
    let mut id_token = f.claims();
    id_token["aud"] = json!(client_id);
    id_token["nonce"] = json!("n-0S6_WzA2Mj");
    f.rejects(&RSA_A.sign(&id_token), AuthError::Audience, "ID token for the SPA").await;

    // Where API and client share one app registration, aud alone cannot tell them apart.
    let f = Fixture::with(|i| {
        i.audience = cadbroker::auth::Audiences::One(client_id.into());
        i.required_scopes = vec!["access_as_user".into()];
    })
    .await;
    let mut id_token = f.claims();
    id_token["aud"] = json!(client_id);
    f.rejects(&RSA_A.sign(&id_token), AuthError::Scope, "ID token carries no scp").await;
    let mut access = id_token.clone();
    access["scp"] = json!("access_as_user");
    assert!(f.check(&RSA_A.sign(&access)).await.is_ok());
}
