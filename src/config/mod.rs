//! Reading `pipeline.yml` and `stages.d/` into a validated [`Pipeline`](crate::pipeline::Pipeline).

pub mod raw;
