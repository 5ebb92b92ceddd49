//! Checking a resource's spec before reconcile sees it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::driver::ResourceType;
use crate::protocol::Resource;

/// One way in which a spec breaks its schema.
///
/// ```
/// use conveyor_sdk::validate::Violation;
/// let v = Violation { path: "/spec/steps/0".into(), message: "\"command\" is a required property".into() };
/// assert_eq!(v.to_string(), "/spec/steps/0: \"command\" is a required property");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a JSON Pointer into the resource (`/spec/steps/0`).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a spec was refused.
///
/// ```
/// use conveyor_sdk::validate::{SpecError, SpecValidator};
/// use conveyor_sdk::{Resource, ResourceType};
///
/// let validator = SpecValidator::new(&[ResourceType::foreign("pipeline")])?;
/// let other = Resource::new("x", "deployment", serde_json::json!({}));
/// match validator.validate(&other) {
///     Err(SpecError::UnknownType(t)) => assert_eq!(t, "deployment"),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), conveyor_sdk::validate::SchemaError>(())
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The resource's type is not one the driver handles.
    #[error("resource type {0:?} is not handled by this driver")]
    UnknownType(String),
    /// The spec does not satisfy the type's JSON Schema; every violation is listed.
    #[error("invalid spec: {}", join(.0))]
    Invalid(Vec<Violation>),
    /// The spec satisfies the schema but does not decode into the driver's spec type.
    #[error("invalid spec: {0}")]
    Decode(Violation),
}

fn join(violations: &[Violation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// A definition's schema is not a usable JSON Schema.
///
/// ```
/// use conveyor_sdk::validate::SpecValidator;
/// use conveyor_sdk::{ResourceDefinition, ResourceType};
///
/// let broken = ResourceDefinition::new("pipeline", serde_json::json!({"type": "no-such-type"}));
/// let error = SpecValidator::new(&[ResourceType::owned(broken)]).unwrap_err();
/// assert_eq!(error.resource_type, "pipeline");
/// assert!(std::error::Error::source(&error).is_some(), "the compiler's error is the source");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("the schema of resource type {resource_type:?} is not a valid JSON Schema")]
pub struct SchemaError {
    /// The resource type.
    pub resource_type: String,
    /// What the schema compiler said (shared, so that the error stays cheap to clone).
    #[source]
    pub source: Arc<jsonschema::ValidationError<'static>>,
}

/// Validates specs against the schemas of a driver's resource types and decodes them.
///
/// ```
/// use conveyor_sdk::{Resource, ResourceDefinition, ResourceType, validate::SpecValidator};
/// use serde_json::json;
///
/// let schema = json!({"type": "object", "required": ["steps"],
///                     "properties": {"steps": {"type": "array"}}});
/// let types = [ResourceType::owned(ResourceDefinition::new("pipeline", schema))];
/// let validator = SpecValidator::new(&types)?;
///
/// let bad = Resource::new("x", "pipeline", json!({"steps": 3}));
/// let error = validator.decode::<serde_json::Value>(&bad).unwrap_err();
/// assert!(error.to_string().contains("/spec/steps"));
/// # Ok::<(), conveyor_sdk::validate::SchemaError>(())
/// ```
#[derive(Debug)]
pub struct SpecValidator {
    /// By type name; `None` for a type whose definition another driver owns.
    schemas: HashMap<String, Option<jsonschema::Validator>>,
}

impl SpecValidator {
    /// Compiles the schemas of `types`.
    ///
    /// ```
    /// use conveyor_sdk::{validate::SpecValidator, ResourceType};
    /// #[derive(schemars::JsonSchema)]
    /// struct Pipeline { steps: Vec<String> }
    ///
    /// let validator = SpecValidator::new(&[
    ///     ResourceType::owned_from::<Pipeline>("pipeline"),
    ///     ResourceType::foreign("deployment"),
    /// ])?;
    /// # Ok::<(), conveyor_sdk::validate::SchemaError>(())
    /// ```
    pub fn new(types: &[ResourceType]) -> Result<Self, SchemaError> {
        let mut schemas = HashMap::new();
        for t in types {
            let compiled =
                match t.definition() {
                    Some(def) => Some(jsonschema::validator_for(&def.schema).map_err(|e| SchemaError {
                        resource_type: t.name().to_owned(),
                        source: Arc::new(e),
                    })?),
                    None => None,
                };
            schemas.insert(t.name().to_owned(), compiled);
        }
        Ok(Self { schemas })
    }

    /// Checks the resource's spec against its type's schema, listing every violation.
    ///
    /// ```
    /// use conveyor_sdk::validate::{SpecError, SpecValidator};
    /// use conveyor_sdk::{Resource, ResourceDefinition, ResourceType};
    /// use serde_json::json;
    ///
    /// let schema = json!({"type": "object", "required": ["steps"],
    ///                     "properties": {"image": {"type": "string"}, "steps": {"type": "array"}}});
    /// let validator = SpecValidator::new(&[ResourceType::owned(ResourceDefinition::new("pipeline", schema))])?;
    ///
    /// assert!(validator.validate(&Resource::new("ok", "pipeline", json!({"steps": []}))).is_ok());
    /// let bad = Resource::new("bad", "pipeline", json!({"image": 5}));
    /// let Err(SpecError::Invalid(violations)) = validator.validate(&bad) else { panic!("accepted") };
    /// assert_eq!(violations.len(), 2); // `image` is not a string, `steps` is missing
    /// # Ok::<(), conveyor_sdk::validate::SchemaError>(())
    /// ```
    pub fn validate(&self, resource: &Resource) -> Result<(), SpecError> {
        let schema = self
            .schemas
            .get(&resource.resource)
            .ok_or_else(|| SpecError::UnknownType(resource.resource.clone()))?;
        let Some(schema) = schema else { return Ok(()) };
        let violations: Vec<Violation> = schema
            .iter_errors(&resource.spec)
            .map(|e| Violation { path: format!("/spec{}", e.instance_path()), message: e.to_string() })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(SpecError::Invalid(violations))
        }
    }

    /// Validates, then decodes the spec into `S`.
    ///
    /// ```
    /// use conveyor_sdk::{validate::SpecValidator, Resource, ResourceType};
    ///
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Greeting { who: String }
    ///
    /// let validator = SpecValidator::new(&[ResourceType::owned_from::<Greeting>("greeting")])?;
    /// let resource = Resource::new("hi", "greeting", serde_json::json!({"who": "you"}));
    /// let spec: Greeting = validator.decode(&resource)?;
    /// assert_eq!(spec.who, "you");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode<S: DeserializeOwned>(&self, resource: &Resource) -> Result<S, SpecError> {
        self.validate(resource)?;
        // The path of a field at fault is tracked only when there is one: the tracking
        // costs as much again as the decoding.
        if let Ok(spec) = S::deserialize(&resource.spec) {
            return Ok(spec);
        }
        serde_path_to_error::deserialize(&resource.spec).map_err(|e| {
            let mut path = String::from("/spec");
            for segment in e.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("/{index}")),
                    serde_path_to_error::Segment::Map { key } => {
                        path.push('/');
                        path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    }
                    serde_path_to_error::Segment::Enum { variant } => path.push_str(&format!("/{variant}")),
                    serde_path_to_error::Segment::Unknown => path.push_str("/?"),
                }
            }
            SpecError::Decode(Violation { path, message: e.into_inner().to_string() })
        })
    }
}
