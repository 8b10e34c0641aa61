//! TODO(owner): see module docs in DESIGN.md.
