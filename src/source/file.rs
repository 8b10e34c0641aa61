//! Manifests on disk: the same YAML users would `kubectl apply`, read from one file or a
//! directory tree, turned into [`Objects`] for `translate`, and watched for changes.
//!
//! A document that does not parse is reported (file, document number, object, field)
//! and left out; the rest still loads, so one typo never takes down the other routes.
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use tokio::sync::mpsc;

use crate::api::AIRoute;
use crate::runtime::Runtime;
use crate::translate::{self, ObjectRef, Objects, Options, Severity, Translation};

/// Files larger than this are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Directory trees deeper than this are not walked (guards against symlink loops).
const MAX_DEPTH: usize = 16;
/// More manifest files than this is almost certainly the wrong directory.
const MAX_FILES: usize = 10_000;
/// How long to wait for more file events before reloading: editors and `kubectl`-style
/// tools write a file in several steps (truncate, write, rename).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why the manifests could not be read at all. Problems inside documents are
/// [`LoadProblem`]s instead, so everything else still loads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config path {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config path {0}: more than {MAX_FILES} manifest files; is this the right directory?")]
    TooManyFiles(PathBuf),
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem with one document of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based document number within the file.
    pub document: usize,
    /// `Kind namespace/name`, when the document got far enough to say.
    pub object: Option<String>,
    /// Field path reported by the parser (`spec.routes[0].backend`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: ")?;
        match &self.object {
            Some(object) => write!(f, "{object} ({}#{})", self.file.display(), self.document)?,
            None => write!(f, "{}#{}", self.file.display(), self.document)?,
        }
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything read from disk in one pass.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Objects,
    pub problems: Vec<LoadProblem>,
    /// Manifest files read, in load order.
    pub files: Vec<PathBuf>,
    /// Content of every file read, to skip reloads when nothing changed.
    fingerprint: Vec<(PathBuf, Vec<u8>)>,
}

impl Loaded {
    pub fn error_count(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }
}

/// Manifest files under `root`: `root` itself when it is a file, else every `*.yaml` and
/// `*.yml` below it, sorted so that load order (and so conflict resolution) is stable.
pub fn manifest_files(root: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(root).map_err(|source| Error::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    walk(root, root, 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Editors' swap files and Kubernetes ConfigMap mounts' `..data` dirs are hidden.
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks: ConfigMap volumes are symlink farms.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, depth + 1, out)?;
        } else if meta.is_file() && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            if out.len() >= MAX_FILES {
                return Err(Error::TooManyFiles(root.to_path_buf()));
            }
            out.push(path);
        }
    }
    Ok(())
}

/// Read and parse every manifest under `root`. Fails only when `root` cannot be read;
/// a bad file or document becomes a [`LoadProblem`].
pub fn load(root: &Path) -> Result<Loaded> {
    let files = manifest_files(root)?;
    let mut loaded = Loaded::default();
    for file in &files {
        let bytes = match read_bounded(file) {
            Ok(b) => b,
            Err(message) => {
                loaded.problems.push(LoadProblem {
                    severity: Severity::Error,
                    file: file.clone(),
                    document: 0,
                    object: None,
                    field: None,
                    message,
                });
                continue;
            }
        };
        match std::str::from_utf8(&bytes) {
            Ok(text) => parse_file(file, text, &mut loaded),
            Err(e) => loaded.problems.push(LoadProblem {
                severity: Severity::Error,
                file: file.clone(),
                document: 0,
                object: None,
                field: None,
                message: format!("not UTF-8 text: {e}"),
            }),
        }
        loaded.fingerprint.push((file.clone(), bytes));
    }
    loaded.files = files;
    Ok(loaded)
}

fn read_bounded(file: &Path) -> std::result::Result<Vec<u8>, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "file is {} bytes, more than the {MAX_FILE_BYTES} allowed",
            meta.len()
        ));
    }
    std::fs::read(file).map_err(|e| format!("cannot read: {e}"))
}

/// Parse every document of one file into `loaded`.
pub fn parse_file(file: &Path, text: &str, loaded: &mut Loaded) {
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                loaded.problems.push(LoadProblem {
                    severity: Severity::Error,
                    file: file.to_path_buf(),
                    document,
                    object: None,
                    field: None,
                    message: format!("invalid YAML: {e}"),
                });
                // After a syntax error the parser cannot find the next document reliably.
                break;
            }
        };
        let mut ctx = DocContext {
            file,
            document,
            loaded: &mut *loaded,
        };
        ctx.add_value(value, None);
    }
}

struct DocContext<'a> {
    file: &'a Path,
    document: usize,
    loaded: &'a mut Loaded,
}

impl DocContext<'_> {
    fn problem(
        &mut self,
        severity: Severity,
        object: Option<String>,
        field: Option<String>,
        message: String,
    ) {
        self.loaded.problems.push(LoadProblem {
            severity,
            file: self.file.to_path_buf(),
            document: self.document,
            object,
            field,
            message,
        });
    }

    /// `item` is the index within a `kind: List`, used to prefix field paths.
    fn add_value(&mut self, value: Value, item: Option<usize>) {
        let prefix = item.map(|i| format!("items[{i}]")).unwrap_or_default();
        let join = |field: &str| match (prefix.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => prefix.clone(),
            (false, false) => format!("{prefix}.{field}"),
        };
        let map = match &value {
            Value::Null => return, // empty document, e.g. a trailing `---`
            Value::Mapping(m) => m,
            _ => {
                self.problem(
                    Severity::Error,
                    None,
                    Some(join("")).filter(|f| !f.is_empty()),
                    "a manifest must be a mapping with apiVersion and kind".into(),
                );
                return;
            }
        };
        let str_field = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
        let api_version = str_field("apiVersion");
        let kind = str_field("kind");
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let namespace = map
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            self.problem(
                Severity::Error,
                None,
                Some(join("")).filter(|f| !f.is_empty()),
                "missing apiVersion or kind".into(),
            );
            return;
        };
        let cluster_scoped = kind == "IngressClass";
        let label = match &name {
            Some(n) if cluster_scoped => format!("{kind} {n}"),
            Some(n) => format!("{kind} {}/{n}", namespace.as_deref().unwrap_or("default")),
            None => kind.clone(),
        };
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "List") => {
                let items = match map.get("items") {
                    Some(Value::Sequence(items)) => items.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        self.problem(
                            Severity::Error,
                            Some(label),
                            Some(join("items")),
                            "items must be a list of manifests".into(),
                        );
                        return;
                    }
                };
                if item.is_some() {
                    self.problem(
                        Severity::Error,
                        Some(label),
                        Some(join("")),
                        "a List inside a List is not supported".into(),
                    );
                    return;
                }
                for (i, v) in items.into_iter().enumerate() {
                    self.add_value(v, Some(i));
                }
            }
            ("airgate.dev/v1alpha1", "AIRoute") => {
                if let Some(obj) = self.typed::<AIRoute>(&value, &label, &join) {
                    let mut obj: AIRoute = obj;
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, &obj.metadata, |o| o.airroutes.push(obj.clone()));
                }
            }
            ("networking.k8s.io/v1", "Ingress") => {
                if let Some(mut obj) = self.typed::<Ingress>(&value, &label, &join) {
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, &obj.metadata, |o| o.ingresses.push(obj.clone()));
                }
            }
            ("networking.k8s.io/v1", "IngressClass") => {
                if let Some(obj) = self.typed::<IngressClass>(&value, &label, &join) {
                    self.insert(&kind, &obj.metadata, |o| {
                        o.ingress_classes.push(obj.clone())
                    });
                }
            }
            ("v1", "Service") => {
                if let Some(mut obj) = self.typed::<Service>(&value, &label, &join) {
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, &obj.metadata, |o| o.services.push(obj.clone()));
                }
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                if let Some(mut obj) = self.typed::<EndpointSlice>(&value, &label, &join) {
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, &obj.metadata, |o| {
                        o.endpoint_slices.push(obj.clone())
                    });
                }
            }
            ("v1", "Secret") => {
                if let Some(mut obj) = self.typed::<Secret>(&value, &label, &join) {
                    if obj.type_.as_deref() != Some("kubernetes.io/tls") {
                        self.problem(
                            Severity::Warning,
                            Some(label),
                            Some(join("type")),
                            format!(
                                "Secret of type {:?} ignored; only kubernetes.io/tls Secrets are used",
                                obj.type_.as_deref().unwrap_or("Opaque")
                            ),
                        );
                        return;
                    }
                    default_namespace(&mut obj.metadata);
                    self.insert(&kind, &obj.metadata, |o| o.secrets.push(obj.clone()));
                }
            }
            ("airgate.dev" | "networking.k8s.io" | "discovery.k8s.io", _)
            | (
                _,
                "AIRoute" | "Ingress" | "IngressClass" | "Service" | "EndpointSlice" | "Secret",
            ) => {
                self.problem(
                    Severity::Error,
                    Some(label),
                    Some(join("apiVersion")),
                    format!(
                        "apiVersion {api_version:?} is not supported for {kind}; use {}",
                        supported_version(&kind)
                    ),
                );
            }
            _ => {
                self.problem(
                    Severity::Warning,
                    Some(label),
                    None,
                    format!("kind {kind} ({api_version}) is not used by airgate; ignored"),
                );
            }
        }
    }

    /// Deserialize `value` as `T`, reporting the field path on failure.
    ///
    /// The value is re-serialized and parsed from text because only serde_yaml's text
    /// deserializer tracks the path (`spec.routes[0].backend`) of an error.
    fn typed<T: DeserializeOwned>(
        &mut self,
        value: &Value,
        label: &str,
        join: &dyn Fn(&str) -> String,
    ) -> Option<T> {
        let text = match serde_yaml::to_string(value) {
            Ok(t) => t,
            Err(e) => {
                self.problem(Severity::Error, Some(label.into()), None, e.to_string());
                return None;
            }
        };
        match serde_yaml::from_str::<T>(&text) {
            Ok(obj) => Some(obj),
            Err(e) => {
                let (field, message) = split_serde_error(&e.to_string());
                let field = join(field.as_deref().unwrap_or(""));
                self.problem(
                    Severity::Error,
                    Some(label.into()),
                    Some(field).filter(|f| !f.is_empty()),
                    message,
                );
                None
            }
        }
    }

    fn insert(&mut self, kind: &str, meta: &ObjectMeta, push: impl FnOnce(&mut Objects)) {
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            self.problem(
                Severity::Error,
                Some(kind.to_string()),
                Some("metadata.name".into()),
                "every object needs a name".into(),
            );
            return;
        };
        let key = ObjectRef {
            kind: kind.to_string(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name,
        };
        let origin = format!("{}#{}", self.file.display(), self.document);
        if let Some(previous) = self.loaded.objects.origins.get(&key) {
            let message = format!("defined again; the definition in {previous} is kept");
            self.problem(Severity::Error, Some(key.to_string()), None, message);
            return;
        }
        self.loaded.objects.origins.insert(key, origin);
        push(&mut self.loaded.objects);
    }
}

fn supported_version(kind: &str) -> &'static str {
    match kind {
        "AIRoute" => "airgate.dev/v1alpha1",
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        _ => "v1",
    }
}

fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
}

/// serde_yaml renders errors as `path.to.field: message at line L column C`. The line
/// refers to the re-serialized document, so it is dropped; the path is kept apart.
fn split_serde_error(msg: &str) -> (Option<String>, String) {
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => &msg[..i],
        _ => msg,
    };
    // A path has no spaces; messages such as "missing field `x`" do.
    if let Some((path, rest)) = msg.split_once(": ")
        && !path.contains(' ')
        && !path.is_empty()
    {
        return (Some(path.to_string()), rest.to_string());
    }
    (None, msg.to_string())
}

/// Origin of `object` as `file#document`, for messages.
pub fn origin<'a>(objects: &'a Objects, object: &ObjectRef) -> Option<&'a str> {
    objects.origins.get(object).map(String::as_str)
}

/// One reload's result, for logging and `check`.
pub struct Outcome {
    pub loaded: Loaded,
    pub translation: Translation,
}

impl Outcome {
    pub fn errors(&self) -> usize {
        self.loaded.error_count()
            + self
                .translation
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count()
    }

    pub fn warnings(&self) -> usize {
        self.loaded.problems.len() - self.loaded.error_count()
            + self
                .translation
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
                .count()
    }

    /// Every problem as one line each: load problems first, then translation diagnostics
    /// with the file and document the object came from.
    pub fn lines(&self) -> Vec<(Severity, String)> {
        let mut out: Vec<(Severity, String)> = self
            .loaded
            .problems
            .iter()
            .map(|p| (p.severity, p.to_string()))
            .collect();
        for d in &self.translation.diagnostics {
            let sev = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let origin = origin(&self.loaded.objects, &d.object)
                .map(|o| format!(" ({o})"))
                .unwrap_or_default();
            let field = if d.field.is_empty() {
                String::new()
            } else {
                format!(" {}", d.field)
            };
            out.push((
                d.severity,
                format!("{sev}: {}{origin}{field}: {}", d.object, d.message),
            ));
        }
        out
    }
}

/// Load and translate without publishing (`airgate check`, and each reload).
pub fn load_and_translate(root: &Path, options: &Options) -> Result<Outcome> {
    let loaded = load(root)?;
    let translation = translate::translate(&loaded.objects, options);
    Ok(Outcome {
        loaded,
        translation,
    })
}

/// Serves the manifests under one path: loads, publishes, and reloads on change.
pub struct FileSource {
    root: PathBuf,
    options: Options,
    runtime: Arc<Runtime>,
    last: Option<Vec<(PathBuf, Vec<u8>)>>,
}

impl FileSource {
    pub fn new(root: PathBuf, options: Options, runtime: Arc<Runtime>) -> Self {
        FileSource {
            root,
            options,
            runtime,
            last: None,
        }
    }

    /// Read, translate and publish in one atomic swap. When the files cannot be read at
    /// all, the last good snapshot keeps serving and the error is returned.
    ///
    /// Returns `Ok(None)` when nothing changed on disk since the last reload.
    pub fn reload(&mut self) -> Result<Option<Outcome>> {
        let metrics = crate::telemetry::metrics();
        let started = Instant::now();
        let loaded = match load(&self.root) {
            Ok(l) => l,
            Err(e) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "cannot read configuration; still serving the last good one");
                return Err(e);
            }
        };
        if self.last.as_ref() == Some(&loaded.fingerprint) {
            return Ok(None);
        }
        if loaded.files.is_empty() {
            tracing::warn!(path = %self.root.display(), "no *.yaml or *.yml manifests found; serving no routes");
        }
        let translation = translate::translate(&loaded.objects, &self.options);
        let outcome = Outcome {
            loaded,
            translation,
        };
        for (severity, line) in outcome.lines() {
            match severity {
                Severity::Error => tracing::error!("{line}"),
                Severity::Warning => tracing::warn!("{line}"),
            }
        }
        Ok(Some(self.finish(outcome, started)))
    }

    fn finish(&mut self, mut outcome: Outcome, started: Instant) -> Outcome {
        let metrics = crate::telemetry::metrics();
        let config = std::mem::take(&mut outcome.translation.config);
        let generation = self.runtime.publish(config);
        let errors = outcome.errors();
        metrics.translation_errors.set(errors as i64);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        metrics
            .config_reload_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            generation,
            files = outcome.loaded.files.len(),
            objects = outcome.loaded.objects.origins.len(),
            errors,
            warnings = outcome.warnings(),
            "configuration loaded"
        );
        self.last = Some(std::mem::take(&mut outcome.loaded.fingerprint));
        outcome
    }

    /// Watch the path and reload on every change until `shutdown` resolves.
    ///
    /// The watch is on the directory (the file's parent in single-file mode) because
    /// editors save by writing a new file and renaming it over the old one, which
    /// removes the inode a file watch would follow.
    pub async fn watch(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        use notify::{RecursiveMode, Watcher};

        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(ev) => !matches!(ev.kind, notify::EventKind::Access(_)),
                    Err(_) => true,
                };
                // A full channel already holds a pending reload; dropping is fine.
                if relevant {
                    let _ = tx.try_send(());
                }
            })
            .map_err(|source| Error::Watch {
                path: self.root.clone(),
                source,
            })?;
        let is_file = std::fs::metadata(&self.root)
            .map(|m| m.is_file())
            .unwrap_or(false);
        let watch_path = if is_file {
            match self.root.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        } else {
            self.root.clone()
        };
        let mode = if is_file {
            RecursiveMode::NonRecursive
        } else {
            RecursiveMode::Recursive
        };
        watcher
            .watch(&watch_path, mode)
            .map_err(|source| Error::Watch {
                path: watch_path.clone(),
                source,
            })?;
        tracing::debug!(path = %watch_path.display(), "watching configuration");

        tokio::pin!(shutdown);
        // A slow periodic re-read catches changes the watcher misses (network
        // filesystems, ConfigMap symlink swaps on some kernels); unchanged files are
        // skipped cheaply by the fingerprint.
        let mut resync = tokio::time::interval(Duration::from_secs(30));
        // The first tick fires at once: it catches edits made between the initial load
        // and the watch being set up (unchanged files are skipped by the fingerprint).
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = resync.tick() => {}
                event = rx.recv() => {
                    if event.is_none() {
                        return Ok(());
                    }
                    // Debounce: one reload for a burst of events.
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
            }
            // Reading files blocks; keep it off the async workers.
            let mut source = self;
            let (back, _result) = tokio::task::spawn_blocking(move || {
                let r = source.reload().map(|_| ());
                (source, r)
            })
            .await
            .map_err(|e| Error::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })?;
            self = back;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Loaded {
        let mut loaded = Loaded::default();
        parse_file(Path::new("x.yaml"), text, &mut loaded);
        loaded
    }

    const ROUTE: &str = r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: good}
spec:
  routes:
    - path: /llm/
      backend: {url: "http://127.0.0.1:9"}
"#;

    #[test]
    fn parses_multi_document_and_defaults_namespace() {
        let text = format!(
            "{ROUTE}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: ai}}\nspec: {{ports: [{{port: 80}}]}}\n---\n"
        );
        let l = parse(&text);
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.objects.airroutes.len(), 1);
        assert_eq!(
            l.objects.airroutes[0].metadata.namespace.as_deref(),
            Some("default")
        );
        assert_eq!(l.objects.services.len(), 1);
        let key = ObjectRef {
            kind: "Service".into(),
            namespace: "ai".into(),
            name: "s".into(),
        };
        assert_eq!(
            l.objects.origins.get(&key).map(String::as_str),
            Some("x.yaml#2")
        );
    }

    #[test]
    fn bad_document_is_reported_with_field_and_others_load() {
        let bad = r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: bad, namespace: ai}
spec:
  routes:
    - path: /x/
      backend: {url: "http://127.0.0.1:9"}
      maxBodySize: [1, 2]
"#;
        let l = parse(&format!("{bad}---{ROUTE}"));
        assert_eq!(l.objects.airroutes.len(), 1, "the good route still loads");
        assert_eq!(l.problems.len(), 1);
        let p = &l.problems[0];
        assert_eq!(p.document, 1);
        assert_eq!(p.object.as_deref(), Some("AIRoute ai/bad"));
        assert_eq!(p.field.as_deref(), Some("spec.routes[0].maxBodySize"));
        let line = p.to_string();
        assert!(
            line.starts_with("error: AIRoute ai/bad (x.yaml#1) spec.routes[0].maxBodySize: "),
            "{line}"
        );
    }

    #[test]
    fn missing_required_field_names_its_parent() {
        let l = parse(
            "apiVersion: airgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: r}\nspec:\n  routes:\n    - path: /a/\n",
        );
        let p = &l.problems[0];
        assert_eq!(p.field.as_deref(), Some("spec.routes[0]"));
        assert!(p.message.contains("backend"), "{}", p.message);
    }

    #[test]
    fn list_items_unknown_kinds_and_non_tls_secrets() {
        let l = parse(
            r#"
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: cm}
  - apiVersion: v1
    kind: Secret
    metadata: {name: opaque}
    type: Opaque
  - apiVersion: v1
    kind: Secret
    metadata: {name: tls}
    type: kubernetes.io/tls
    data: {tls.crt: "", tls.key: ""}
  - apiVersion: networking.k8s.io/v1
    kind: IngressClass
    metadata: {name: airgate}
    spec: {controller: airgate.dev/ingress-controller}
"#,
        );
        assert_eq!(l.objects.secrets.len(), 1);
        assert_eq!(l.objects.ingress_classes.len(), 1);
        assert_eq!(
            l.objects.ingress_classes[0].metadata.namespace, None,
            "IngressClass is cluster scoped"
        );
        assert_eq!(l.error_count(), 0, "{:?}", l.problems);
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(l.problems[0].message.contains("ConfigMap"));
        assert_eq!(l.problems[1].field.as_deref(), Some("items[1].type"));
    }

    #[test]
    fn wrong_api_version_and_syntax_errors_are_errors() {
        let l =
            parse("apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: old}\n");
        assert_eq!(l.error_count(), 1);
        assert!(l.problems[0].message.contains("networking.k8s.io/v1"));

        let l = parse(&format!("{ROUTE}---\nkind: [unclosed\n"));
        assert_eq!(l.objects.airroutes.len(), 1);
        assert_eq!(l.error_count(), 1);
        assert_eq!(l.problems[0].document, 2);
    }

    #[test]
    fn duplicate_objects_keep_the_first() {
        let l = parse(&format!("{ROUTE}---{ROUTE}"));
        assert_eq!(l.objects.airroutes.len(), 1);
        assert_eq!(l.error_count(), 1);
        assert!(l.problems[0].message.contains("x.yaml#1"));
    }

    #[test]
    fn directory_walk_is_sorted_and_skips_hidden_and_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("b")).expect("mkdir");
        std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
        for f in [
            "b/z.yml",
            "a.yaml",
            "notes.txt",
            ".swp.yaml",
            "..data/x.yaml",
        ] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let files = manifest_files(dir.path()).expect("walk");
        let rel: Vec<_> = files
            .iter()
            .map(|f| {
                f.strip_prefix(dir.path())
                    .expect("under root")
                    .to_path_buf()
            })
            .collect();
        assert_eq!(rel, vec![PathBuf::from("a.yaml"), PathBuf::from("b/z.yml")]);
        assert!(matches!(
            manifest_files(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }
}
