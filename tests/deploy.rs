//! Placeholder: the deploy/ checks arrive with deploy/.
