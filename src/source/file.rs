//! Manifests on disk. OWNER: file mode.
