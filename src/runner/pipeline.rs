//! Pipeline definitions: what a build runs, read once from `pipelines.toml`.
//!
//! A pipeline has up to four steps (prepare, install, build, test), each a shell
//! script, plus artifact globs, an optional working directory and a timeout. The
//! repository's `pipelines.toml` is also built into the binary, so a fresh
//! `cargo run` has the `demo` pipeline with no set-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::PipelinesSource;
use crate::job::Phase;

/// The definitions shipped with buildcast, used when no `pipelines.toml` is found.
pub const BUILT_IN: &str = include_str!("../../pipelines.toml");

/// Longest accepted pipeline name.
const MAX_NAME: usize = 64;

/// Every pipeline the server can run, by name.
#[derive(Debug, Clone, Default)]
pub struct Pipelines {
    by_name: BTreeMap<String, Pipeline>,
}

/// One build recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub description: String,
    /// The steps in the order they run.
    pub steps: Vec<Step>,
    /// Globs, relative to the working directory, of the files to keep.
    pub artifacts: Vec<String>,
    /// Where steps run; `None`: a fresh workspace per job.
    pub workdir: Option<PathBuf>,
    /// Longest the whole job may take.
    pub timeout: Duration,
}

/// One step of a pipeline and where it sits in the phase table.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: &'static str,
    pub phase: Phase,
    /// Progress announced when the step starts.
    pub progress: u8,
    /// What the step's progress event says.
    pub message: &'static str,
    /// The shell script (`sh -c`); `None` when the pipeline leaves the step out.
    pub script: Option<String>,
}

/// The fixed order of steps and their place in the phase table.
const STEP_TABLE: [(&str, Phase, u8, &str); 4] = [
    ("prepare", Phase::Preparing, 10, "Preparing the workspace"),
    ("install", Phase::Installing, 30, "Installing dependencies"),
    ("build", Phase::Building, 50, "Running the build"),
    ("test", Phase::Building, 70, "Running the tests"),
];

/// A pipelines file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    pipelines: BTreeMap<String, PipelineDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineDoc {
    #[serde(default)]
    description: String,
    #[serde(default)]
    steps: StepsDoc,
    #[serde(default)]
    artifacts: Vec<String>,
    workdir: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StepsDoc {
    prepare: Option<String>,
    install: Option<String>,
    build: Option<String>,
    test: Option<String>,
}

fn default_timeout() -> String {
    "30m".into()
}

impl Pipelines {
    /// Loads the pipelines `source` names.
    pub fn load(source: &PipelinesSource) -> Result<Self, PipelineError> {
        match source {
            PipelinesSource::File(path) => Self::read(path),
            PipelinesSource::Default(path) if path.is_file() => Self::read(path),
            PipelinesSource::Default(_) => Self::parse(BUILT_IN, "built-in pipelines", None),
        }
    }

    fn read(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), path.parent())
    }

    /// Parses a pipelines document; relative `workdir`s are taken from `base`.
    pub fn parse(text: &str, origin: &str, base: Option<&Path>) -> Result<Self, PipelineError> {
        let invalid = |message: String| PipelineError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let doc: FileDoc = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if doc.pipelines.is_empty() {
            return Err(invalid("no [pipelines.<name>] defined".into()));
        }
        let mut by_name = BTreeMap::new();
        for (name, p) in doc.pipelines {
            let valid_name = !name.is_empty()
                && name.len() <= MAX_NAME
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid_name {
                return Err(invalid(format!(
                    "pipeline name {name:?} must be 1-{MAX_NAME} letters, digits, '-', '_' or '.'"
                )));
            }
            let timeout = humantime::parse_duration(&p.timeout)
                .map_err(|e| invalid(format!("pipeline {name}: timeout {:?}: {e}", p.timeout)))?;
            for glob in &p.artifacts {
                glob::Pattern::new(glob).map_err(|e| {
                    invalid(format!("pipeline {name}: artifact glob {glob:?}: {e}"))
                })?;
                if Path::new(glob).is_absolute() || glob.split('/').any(|part| part == "..") {
                    return Err(invalid(format!(
                        "pipeline {name}: artifact glob {glob:?} must stay inside the working directory"
                    )));
                }
            }
            let scripts = [
                p.steps.prepare,
                p.steps.install,
                p.steps.build,
                p.steps.test,
            ];
            let steps = STEP_TABLE
                .iter()
                .zip(scripts)
                .map(|(&(step, phase, progress, message), script)| Step {
                    name: step,
                    phase,
                    progress,
                    message,
                    script: script.filter(|s| !s.trim().is_empty()),
                })
                .collect();
            let workdir = p.workdir.map(|dir| match base {
                Some(base) if dir.is_relative() => base.join(dir),
                _ => dir,
            });
            by_name.insert(
                name.clone(),
                Pipeline {
                    name,
                    description: p.description,
                    steps,
                    artifacts: p.artifacts,
                    workdir,
                    timeout,
                },
            );
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Pipeline> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pipeline> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_pipelines_parse_and_include_demo() {
        let p = Pipelines::parse(BUILT_IN, "built-in", None).unwrap();
        let demo = p.get("demo").expect("demo pipeline");
        assert_eq!(demo.steps.len(), 4);
        assert!(demo.steps.iter().all(|s| s.script.is_some()));
    }

    #[test]
    fn errors_say_which_pipeline_and_what() {
        let e =
            Pipelines::parse("[pipelines.x]\ntimeout = \"soon\"\n", "p.toml", None).unwrap_err();
        assert!(e.to_string().contains("pipeline x: timeout"), "{e}");
        let e = Pipelines::parse(
            "[pipelines.x]\nartifacts = [\"../secret\"]\n",
            "p.toml",
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("inside the working directory"),
            "{e}"
        );
        let e = Pipelines::parse("[pipelines.x]\nstep = {}\n", "p.toml", None).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
