//! Where objects come from: manifests on disk (`file`) or the API server (`kube`).
pub mod file;
pub mod kube;
