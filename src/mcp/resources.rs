//! The fleet's files as read-only MCP resources: `imagegen://fleet/manifest`,
//! `imagegen://fleet/lock` and `imagegen://fleet/profiles/{profile_id}`.
//!
//! URIs name files by role and profile id rather than by path, so they stay valid when a
//! profile file is renamed, and only files the fleet itself names can ever be read.

use rmcp::ErrorData;
use rmcp::model::{
    ListResourcesResult, ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
};
use serde_json::json;

use super::server::ImagegenServer;
use crate::error::{Error, ErrorCode};
use crate::ops::{self, FleetFile, FleetFileId, FleetNeed};

const MANIFEST_URI: &str = "imagegen://fleet/manifest";
const LOCK_URI: &str = "imagegen://fleet/lock";
const PROFILE_URI_PREFIX: &str = "imagegen://fleet/profiles/";

fn uri_of(id: &FleetFileId) -> String {
    match id {
        FleetFileId::Manifest => MANIFEST_URI.to_string(),
        FleetFileId::Lock => LOCK_URI.to_string(),
        FleetFileId::Profile { profile_id } => format!("{PROFILE_URI_PREFIX}{profile_id}"),
    }
}

fn id_of(uri: &str) -> Option<FleetFileId> {
    match uri {
        MANIFEST_URI => Some(FleetFileId::Manifest),
        LOCK_URI => Some(FleetFileId::Lock),
        _ => uri
            .strip_prefix(PROFILE_URI_PREFIX)
            .filter(|id| !id.is_empty())
            .map(|id| FleetFileId::Profile {
                profile_id: id.to_string(),
            }),
    }
}

fn mime_type(file: &FleetFile) -> String {
    match file.format.as_str() {
        "yaml" => "application/yaml",
        "json" => "application/json",
        _ => "application/toml",
    }
    .to_string()
}

fn resource(file: &FleetFile) -> Resource {
    let description = match &file.id {
        FleetFileId::Manifest => {
            "The fleet manifest: settings, profile locations and devices".to_string()
        }
        FleetFileId::Lock => {
            "Pinned Image Builders (archive, sha256, signing key, revision); written by imagegen"
                .to_string()
        }
        FleetFileId::Profile { profile_id } => format!("Build recipe of profile `{profile_id}`"),
    };
    Resource::new(uri_of(&file.id), file.file.clone())
        .with_description(description)
        .with_mime_type(mime_type(file))
}

/// The fleet's manifest, lock file and profile files.
pub(crate) async fn list(server: &ImagegenServer) -> Result<ListResourcesResult, ErrorData> {
    let files = server
        .run(FleetNeed::Required, ops::fleet_files)
        .await
        .map_err(protocol_error)?;
    Ok(ListResourcesResult::with_all_items(
        files.iter().map(resource).collect(),
    ))
}

/// One file's text.
pub(crate) async fn read(
    server: &ImagegenServer,
    uri: &str,
) -> Result<ReadResourceResponse, ErrorData> {
    let Some(id) = id_of(uri) else {
        return Err(ErrorData::resource_not_found(
            format!("no resource `{uri}`"),
            Some(
                json!({ "uri": uri, "known": [MANIFEST_URI, LOCK_URI, format!("{PROFILE_URI_PREFIX}{{profile_id}}")] }),
            ),
        ));
    };
    let read = server
        .run(FleetNeed::Required, move |workspace| {
            ops::read_fleet_file(workspace, &id)
        })
        .await
        .map_err(protocol_error)?;
    let contents =
        ResourceContents::text(read.text, uri.to_string()).with_mime_type(mime_type(&read.file));
    Ok(ReadResourceResult::new(vec![contents]).into())
}

/// Resource requests have no tool-error form: the error travels as JSON-RPC error data with
/// the same `code`, `message` and `problems` a tool error carries.
fn protocol_error(error: Error) -> ErrorData {
    let data = serde_json::to_value(&error).ok();
    match error.code {
        ErrorCode::ProfileNotFound | ErrorCode::Precondition => {
            ErrorData::resource_not_found(error.message.clone(), data)
        }
        _ => ErrorData::internal_error(error.message.clone(), data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_nothing_else_is_a_resource() {
        for id in [
            FleetFileId::Manifest,
            FleetFileId::Lock,
            FleetFileId::Profile {
                profile_id: "ap-livingroom".into(),
            },
        ] {
            assert_eq!(id_of(&uri_of(&id)), Some(id));
        }
        assert_eq!(id_of("imagegen://fleet/profiles/"), None);
        assert_eq!(id_of("file:///etc/passwd"), None);
    }
}
