//! `/resources`: create, read, list, update and delete resources, every version kept;
//! each create, update and delete dispatched to the drivers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::error::{parse, ApiError};
use super::store::Stored;
use super::{engine, ServerState};
use crate::client::types::Pipeline;
use crate::protocol::{Event, Resource};

impl Stored for Resource {
    /// Its type and its name.
    type Key = (String, String);
    const KIND: &'static str = "resource";

    fn key(&self) -> (String, String) {
        (self.resource.clone(), self.name.clone())
    }

    fn show((resource_type, name): &(String, String)) -> String {
        format!("{resource_type}/{name}")
    }

    /// A first version gets a new id, a later one keeps it; each carries its number in
    /// the metadata (`version`). What the server keeps in the metadata (the engine's
    /// keys) comes from the version before, never from the client.
    fn stamp(&mut self, number: u64, previous: Option<&Self>) {
        self.id = previous.map_or_else(|| uuid::Uuid::new_v4().to_string(), |p| p.id.clone());
        for key in engine::KEPT_BY_THE_SERVER {
            match previous.and_then(|p| p.metadata.get(key)) {
                Some(kept) => self.metadata.insert(key.into(), kept.clone()),
                None => self.metadata.remove(key),
            };
        }
        self.metadata.insert("version".into(), number.to_string().into());
    }
}

/// `POST /resources`: validates the spec, keeps the resource as version 1 (a name
/// created again starts over) and dispatches `create`, alone or as a run of its
/// pipeline.
pub(super) async fn create(State(state): State<Arc<ServerState>>, body: Bytes) -> Result<Response, ApiError> {
    let resource: Resource = parse(&body)?;
    if resource.name.is_empty() || resource.resource.is_empty() {
        return Err(ApiError::BadRequest("a resource needs a name and a resource type".into()));
    }
    let definition = state.definitions.get(&resource.resource)?;
    definition.validator.validate(&resource).map_err(ApiError::SpecOnCreate)?;
    let pipeline = pipeline_of(&state, &resource)?;
    let resource = state.resources.recreate(resource)?;
    let run_id = engine::dispatch(&state, resource.clone(), Event::Create, pipeline.as_ref()).await?;
    let body = json!({"name": resource.name, "runid": run_id, "message": "Resource created successfully", "version": "1"});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /resources`: the latest version of every resource.
pub(super) async fn list(State(state): State<Arc<ServerState>>) -> Result<Json<Vec<Resource>>, ApiError> {
    Ok(Json(state.resources.list(|_| true)?))
}

/// `GET /resources/{type}`: the latest version of every resource of that type.
pub(super) async fn list_of(
    State(state): State<Arc<ServerState>>,
    Path(resource_type): Path<String>,
) -> Result<Json<Vec<Resource>>, ApiError> {
    Ok(Json(state.resources.list(|(of, _)| *of == resource_type)?))
}

/// `GET /resources/{type}/{name}`: the latest version.
pub(super) async fn get(
    State(state): State<Arc<ServerState>>,
    Path(key): Path<(String, String)>,
) -> Result<Json<Resource>, ApiError> {
    Ok(Json(state.resources.get(&key)?))
}

/// `GET /resources/{type}/{name}/{version}`.
pub(super) async fn get_version(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name, version)): Path<(String, String, String)>,
) -> Result<Json<Resource>, ApiError> {
    Ok(Json(state.resources.version(&(resource_type, name), &version)?))
}

/// `PUT /resources/{type}/{name}`: keeps the body as the next version, named by the
/// path (its spec validated if the type has a definition), and dispatches `update`
/// with a new run id, alone or as a run of its pipeline. Answers as the create does,
/// with the resource beside the run id:
/// `{"message", "name", "runid", "version", "resource"}`. A resource being deleted
/// takes no new version (`409`).
pub(super) async fn update(
    State(state): State<Arc<ServerState>>,
    Path((resource_type, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let update = Resource { resource: resource_type, name, ..parse(&body)? };
    let key = update.key();
    // A missing resource is 404 before its new spec is looked at.
    state.resources.get(&key)?;
    if let Some(definition) = state.definitions.find(&key.0)? {
        definition.validator.validate(&update).map_err(ApiError::SpecOnUpdate)?;
    }
    let pipeline = pipeline_of(&state, &update)?;
    let stored = state.resources.update_if(update, engine::refuse_while_deleting)?;
    let run_id = engine::dispatch(&state, stored.clone(), Event::Update, pipeline.as_ref()).await?;
    // With what the engine keeps of the run it started.
    let resource = state.resources.find(&key)?.unwrap_or(stored);
    Ok(Json(json!({
        "message": "Resource updated successfully",
        "name": resource.name,
        "runid": run_id,
        "version": resource.metadata.get("version"),
        "resource": resource,
    })))
}

/// `DELETE /resources/{type}/{name}`: `204`. A resource outside any pipeline goes with
/// every version, and its type's drivers get `delete` with the resource as it was. A
/// resource in a pipeline is marked `deleting` and its run of `delete` goes through
/// every step's driver; it goes only once every step cleaned up, and stays with
/// `deletion_failed` when one did not (deleting it again retries, with a new run).
pub(super) async fn delete(
    State(state): State<Arc<ServerState>>,
    Path(key): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let current = state.resources.get(&key)?;
    match current.pipeline() {
        None => {
            engine::dispatch(&state, current, Event::Delete, None).await?;
            state.resources.delete(&key)?;
        }
        Some(name) => {
            let Some(pipeline) = state.pipelines.find(&name.to_owned())? else {
                return Err(ApiError::BadRequest(format!(
                    "resource {} is in pipeline {name:?}, which is not kept: its steps cannot clean up; \
                     create the pipeline again, or update the resource out of it, to delete it",
                    Resource::show(&key)
                )));
            };
            engine::first_step(&pipeline)?;
            engine::dispatch(&state, current, Event::Delete, Some(&pipeline)).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The pipeline `resource` names, if it names one; it must be kept, with steps.
fn pipeline_of(state: &ServerState, resource: &Resource) -> Result<Option<Pipeline>, ApiError> {
    let Some(name) = resource.pipeline() else {
        return Ok(None);
    };
    let pipeline = state.pipelines.get(&name.to_owned())?;
    engine::first_step(&pipeline)?;
    Ok(Some(pipeline))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::dev_server::store::Store;

    #[test]
    fn an_updated_resource_keeps_its_id_and_carries_its_version_in_its_metadata() {
        let store = Store::default();
        let created = store.recreate(Resource::new("build", "job", json!({"steps": []}))).unwrap();
        assert_eq!(created.metadata["version"], "1");
        assert!(!created.id.is_empty());
        let mut update = Resource::new("build", "job", json!({"steps": ["lint"]}));
        update.id = "ignored".into();
        update.metadata.insert("version".into(), "7".into());
        let updated = store.update(update).unwrap();
        assert_eq!(
            (updated.id.as_str(), updated.metadata_str("version").unwrap_or_default()),
            (created.id.as_str(), "2")
        );
    }

    #[test]
    fn what_the_engine_keeps_in_the_metadata_comes_from_the_version_before_never_from_the_client() {
        let store = Store::default();
        let mut forged = Resource::new("build", "job", json!({}));
        forged.metadata.insert("deleting".into(), true.into());
        forged.metadata.insert("owner".into(), "me".into());
        let created = store.recreate(forged).unwrap();
        assert_eq!(created.metadata.get("deleting"), None);
        assert_eq!(created.metadata["owner"], "me", "the client's own metadata stays");
        let key = created.key();
        store
            .change_latest(&key, |r| {
                r.metadata.insert("driverresults".into(), json!({"builder": {"success": true}}));
            })
            .unwrap();
        let mut update = Resource::new("build", "job", json!({"v": 2}));
        update.metadata.insert("driverresults".into(), json!({"builder": {"success": false}}));
        let updated = store.update(update).unwrap();
        assert_eq!(updated.metadata["driverresults"], json!({"builder": {"success": true}}));
    }

    #[test]
    fn a_resource_created_again_starts_over_at_version_1_with_a_new_id() {
        let store = Store::default();
        let first = store.recreate(Resource::new("build", "job", json!({}))).unwrap();
        store.update(Resource::new("build", "job", json!({"v": 2}))).unwrap();
        let again = store.recreate(Resource::new("build", "job", json!({"v": 3}))).unwrap();
        assert_eq!(again.metadata["version"], "1");
        assert_ne!(again.id, first.id);
        let key = ("job".to_owned(), "build".to_owned());
        assert!(store.version(&key, "2").is_err(), "the earlier versions are gone");
        let gone = ("job".to_owned(), "gone".to_owned());
        assert_eq!(store.get(&gone).unwrap_err().to_string(), "resource job/gone not found");
    }
}
