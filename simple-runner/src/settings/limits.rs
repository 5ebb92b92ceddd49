//! A run's resource limits: what its spec asks for, capped by the operator's maxima.

use crate::settings::ContainerSettings;
use crate::spec::ByteSize;
use crate::spec::PipelineSpec;

impl ContainerSettings {
    /// The settings of one run's container: the spec's `cpus`, `memory`, `pids` and
    /// `platform` where it sets them (else these settings' own), each limit capped by
    /// its maximum; with a line for the run's log for every limit that was capped.
    ///
    /// ```
    /// use simple_runner::{ContainerSettings, PipelineSpec};
    ///
    /// let operator = ContainerSettings { max_memory_bytes: Some(1 << 30), ..ContainerSettings::default() };
    /// let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
    ///     "memory": "4g", "pids": 64, "steps": []
    /// }))?;
    /// let (run, notes) = operator.for_run(&spec);
    /// assert_eq!((run.memory_bytes, run.pids_limit), (Some(1 << 30), 64));
    /// assert_eq!(notes, ["memory 4g is over the runner's maximum: the run gets 1g"]);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn for_run(&self, spec: &PipelineSpec) -> (ContainerSettings, Vec<String>) {
        let mut notes = Vec::new();
        let mut run = self.clone();
        let asked_memory = spec.memory.map(|m| i64::try_from(m.bytes()).unwrap_or(i64::MAX));
        run.memory_bytes = match (asked_memory.or(self.memory_bytes), self.max_memory_bytes) {
            (Some(asked), Some(max)) if asked > max => {
                notes.push(format!(
                    "memory {} is over the runner's maximum: the run gets {}",
                    size(asked),
                    size(max)
                ));
                Some(max)
            }
            (None, Some(max)) => Some(max),
            (asked, _) => asked,
        };
        run.cpus = match (spec.cpus.or(self.cpus), self.max_cpus) {
            (Some(asked), Some(max)) if asked > max => {
                notes.push(format!("cpus {asked} is over the runner's maximum: the run gets {max}"));
                Some(max)
            }
            (None, Some(max)) => Some(max),
            (asked, _) => asked,
        };
        let asked_pids = spec.pids.map(i64::from).unwrap_or(self.pids_limit);
        run.pids_limit = match self.max_pids {
            Some(max) if asked_pids > max => {
                notes.push(format!("pids {asked_pids} is over the runner's maximum: the run gets {max}"));
                max
            }
            _ => asked_pids,
        };
        if spec.platform.is_some() {
            run.platform = spec.platform.clone();
        }
        (run, notes)
    }
}

fn size(bytes: i64) -> String {
    ByteSize::new(u64::try_from(bytes).unwrap_or(0)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PipelineSpec {
        let mut value = value;
        value["steps"] = json!([]);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_spec_without_limits_gets_the_operators_defaults() {
        let operator = ContainerSettings {
            memory_bytes: Some(256 << 20),
            cpus: Some(1.0),
            ..ContainerSettings::default()
        };
        let (run, notes) = operator.for_run(&spec(json!({})));
        assert_eq!((run.memory_bytes, run.cpus, run.pids_limit), (Some(256 << 20), Some(1.0), 1024));
        assert!(notes.is_empty());
    }

    #[test]
    fn what_a_spec_asks_for_is_capped_by_the_maxima_saying_so() {
        let operator = ContainerSettings {
            max_memory_bytes: Some(512 << 20),
            max_cpus: Some(2.0),
            max_pids: Some(100),
            ..ContainerSettings::default()
        };
        let (run, notes) = operator.for_run(&spec(json!({"memory": "1g", "cpus": 4, "pids": 5000})));
        assert_eq!((run.memory_bytes, run.cpus, run.pids_limit), (Some(512 << 20), Some(2.0), 100));
        assert_eq!(notes.len(), 3, "{notes:?}");
        let (run, notes) = operator.for_run(&spec(json!({"memory": "64m", "cpus": 0.5, "pids": 10})));
        assert_eq!((run.memory_bytes, run.cpus, run.pids_limit), (Some(64 << 20), Some(0.5), 10));
        assert!(notes.is_empty());
    }

    #[test]
    fn a_maximum_is_the_limit_of_a_spec_that_sets_none() {
        let operator = ContainerSettings { max_memory_bytes: Some(1 << 30), ..ContainerSettings::default() };
        assert_eq!(operator.for_run(&spec(json!({}))).0.memory_bytes, Some(1 << 30));
    }

    #[test]
    fn the_specs_platform_is_the_containers() {
        let (run, _) = ContainerSettings::default().for_run(&spec(json!({"platform": "linux/arm64"})));
        assert_eq!(run.platform.as_deref(), Some("linux/arm64"));
    }
}
