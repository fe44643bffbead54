//! Layer builder (issue 4).
