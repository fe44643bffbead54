//! Zip central-directory checks (issue 3).
