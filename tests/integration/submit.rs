//! Integration tests: submit-build.
