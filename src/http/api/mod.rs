//! API v1 handlers and the OpenAPI document generated from their annotations.

pub mod pools;
pub mod sessions;

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

/// The OpenAPI document of API v1.
#[derive(OpenApi)]
#[openapi(
    info(title = "cadbroker API", version = "v1",
        description = "Request GPU workstations from capacity pools. Errors are `{\"error\": {\"code\", \"message\"}}`."),
    paths(sessions::create, sessions::list, sessions::get, sessions::end, sessions::keepalive,
        sessions::events, pools::list, pools::put, pools::delete, pools::decisions),
    components(schemas(crate::http::error::ErrorBody, sessions::CreateSessionBody)),
    modifiers(&BearerAuth),
    tags((name = "sessions", description = "Workstation sessions"), (name = "pools", description = "Capacity pools")),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
