//! Integration tests: builder.
