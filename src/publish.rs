//! publish-layer (issue 3).
