//! Reading `pipeline.yml` and `stages.d/` into a validated [`Pipeline`].
//!
//! `raw` mirrors the YAML with spans, `load` finds and parses the files, `validate` turns the
//! trees into a `Pipeline` while collecting every problem: `decode` reads typed values,
//! `settings` the pipeline's keys, `stage` a stage's keys, `params` an action's `with:`; the
//! graph checks are `plan::check`. Nothing outside this module sees YAML.

mod cloud;
mod decode;
mod environments;
mod load;
mod params;
pub mod raw;
pub mod schema;
mod settings;
mod stage;
mod validate;

use std::path::Path;

use crate::error::Invalid;
use crate::pipeline::Pipeline;

pub use cloud::{check_bucket, check_endpoint, is_region, topic_region};
pub(crate) use load::parse_yaml;
pub use load::{STAGES_DIR, find_upward};
pub(crate) use settings::{is_env_name, is_local_path};

/// Loads and checks the pipeline declared by `pipeline_file` and the `stages.d/` beside it.
pub fn load(pipeline_file: &Path) -> Result<Pipeline, Invalid> {
    let mut problems = Vec::new();
    let (main, stage_files) = load::read_all(pipeline_file, &mut problems);
    validate::validate(pipeline_file, main.as_ref(), &stage_files, problems)
        .map_err(|problems| Invalid { problems })
}
