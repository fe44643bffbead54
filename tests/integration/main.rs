//! The one integration-test binary: every test talks to moto's server over HTTP (see `helpers`).

mod builder;
mod bytecode;
mod cli;
mod containment;
mod docs;
mod examples;
mod fastpath;
mod fault_proxy;
mod faults;
mod grants;
mod helpers;
mod image;
mod import_check;
mod isolation;
mod latest;
mod layout;
mod lifecycle;
mod pipeline;
mod publish;
mod robustness;
mod size;
mod status;
mod submit;
mod template;
mod zipcraft;
mod zipstrict;
