//! The one integration-test binary: every test talks to moto's server over HTTP (see `helpers`).

mod builder;
mod cli;
mod helpers;
mod pipeline;
mod publish;
mod status;
mod submit;
mod template;
