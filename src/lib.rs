//! airgate: a Kubernetes ingress controller and reverse proxy for AI APIs.
//!
//! The crate is split along one seam: the control side (`source`, `translate`, `status`)
//! turns Kubernetes objects into a [`config::Config`] snapshot; the data side (`proxy`,
//! `policy`, `upstream`, `tls`) serves traffic from whatever snapshot is current. The two
//! meet only at [`config::Config`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod http1;
pub mod policy;
pub mod proxy;
pub mod runtime;
pub mod serve;
pub mod source;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod translate;
pub mod upstream;
